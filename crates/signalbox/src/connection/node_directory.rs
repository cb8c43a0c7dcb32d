//! Where the nodes of a cluster can be reached, so that a request for a connection held by another
//! node can be forwarded to it (see `forward.rs`).

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::Uri;

/// Maps a node id to the base URL other nodes reach it at (such as `http://10.0.0.7:8080`; the
/// request's path and query are appended). Implemented by the application from whatever knows
/// its nodes: a database table of heartbeats, a service registry, a static list.
///
/// ```
/// use std::collections::HashMap;
/// use futures_util::future::BoxFuture;
/// use signalbox::NodeDirectory;
///
/// #[derive(Debug)]
/// struct Static(HashMap<String, http::Uri>);
///
/// impl NodeDirectory for Static {
///     fn resolve<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Option<http::Uri>> {
///         Box::pin(async move { self.0.get(node).cloned() })
///     }
/// }
/// ```
pub trait NodeDirectory: fmt::Debug + Send + Sync + 'static {
    /// The base URL of `node`; `None` when the node is unknown (or known to be gone), which
    /// answers the request as for an unknown connection (404), so the client reconnects.
    fn resolve<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Option<Uri>>;
}

/// This node within a cluster: its id (named in the connection tokens it issues) and the
/// directory of the other nodes.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// This node's id, unique in the cluster.
    pub id: Arc<str>,
    /// Where the other nodes are.
    pub directory: Arc<dyn NodeDirectory>,
}

impl ClusterNode {
    /// This node, `id`, finding the others through `directory`.
    pub fn new(id: impl Into<Arc<str>>, directory: Arc<dyn NodeDirectory>) -> Self {
        Self {
            id: id.into(),
            directory,
        }
    }
}
