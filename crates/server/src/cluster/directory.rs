//! Where the nodes of the cluster are: each node records the URL the others reach it at
//! (`cluster.advertise_url`) in its `nodes` row, and the hub asks here when a request of
//! Server-Sent Events or long polling reaches a node other than the one holding its connection
//! (the library forwards it there; see `signalbox`'s `NodeDirectory`).
//!
//! Only nodes with a recent heartbeat (within `cluster.node_timeout`) are found: a request for a
//! connection of a dead node is answered like one for an unknown connection, and its client
//! reconnects. Answers are cached for a heartbeat interval, so forwarding does not query the
//! database on every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::Uri;
use signalbox::NodeDirectory;

use crate::clock::{duration_ms, now_ms};
use crate::db::{Db, StoreError};

/// The URL this node advertises to the others: `configured`, else `http://{bound}` when `bound`
/// is a concrete address (not `0.0.0.0` or `[::]`, and not port 0).
pub fn advertised_url(configured: Option<&str>, bound: SocketAddr) -> Option<String> {
    match configured {
        Some(url) => Some(url.to_owned()),
        None => {
            (!bound.ip().is_unspecified() && bound.port() != 0).then(|| format!("http://{bound}"))
        }
    }
}

/// This node's advertised URL, once known (it may be known only after binding, for port 0).
#[derive(Debug, Clone, Default)]
pub struct AdvertisedUrl(Arc<RwLock<Option<String>>>);

impl AdvertisedUrl {
    /// A URL known from the start, or none yet.
    pub fn new(url: Option<String>) -> Self {
        Self(Arc::new(RwLock::new(url)))
    }

    /// The URL, if known.
    pub fn get(&self) -> Option<String> {
        match self.0.read() {
            Ok(url) => url.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets the URL if none is known yet; whether it was set.
    pub fn set_if_unknown(&self, url: String) -> bool {
        let mut current = match self.0.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.is_some() {
            return false;
        }
        *current = Some(url);
        true
    }
}

/// The nodes' URLs, from the `nodes` table.
#[derive(Debug)]
pub struct NodeAddresses {
    db: Db,
    node_timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Uri)>>,
}

impl NodeAddresses {
    /// Finds nodes whose heartbeat is younger than `node_timeout`; answers are kept for
    /// `cache_ttl`.
    pub fn new(db: Db, node_timeout: Duration, cache_ttl: Duration) -> Self {
        Self {
            db,
            node_timeout,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, node: &str) -> Option<Uri> {
        let cache = self.cache.lock().ok()?;
        let (at, url) = cache.get(node)?;
        (at.elapsed() < self.cache_ttl).then(|| url.clone())
    }

    async fn lookup(&self, node: &str) -> Option<Uri> {
        if let Some(url) = self.cached(node) {
            return Some(url);
        }
        let cutoff = now_ms() - duration_ms(self.node_timeout);
        let address = match self.db.node_address(node, cutoff).await {
            Ok(address) => address?,
            Err(error) => {
                tracing::warn!(node, %error, "cannot look up a node's address");
                return None;
            }
        };
        let url: Uri = match address.parse() {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(node, %error, "a node recorded an invalid address");
                return None;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(node.to_owned(), (Instant::now(), url.clone()));
        }
        Some(url)
    }
}

impl NodeDirectory for NodeAddresses {
    fn resolve<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Option<Uri>> {
        Box::pin(self.lookup(node))
    }
}

/// Records `url` as this node's address (once it is known).
pub async fn record(db: &Db, node: &str, url: &str) -> Result<(), StoreError> {
    db.set_node_address(node, url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn live_nodes_are_found_at_their_recorded_address() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        db.register_node("a", now_ms()).await.unwrap();
        record(&db, "a", "http://10.0.0.7:8080").await.unwrap();
        // Silent for a minute: dead.
        db.register_node("b", now_ms() - 60_000).await.unwrap();
        record(&db, "b", "http://10.0.0.8:8080").await.unwrap();
        // Alive, but reachable nowhere.
        db.register_node("c", now_ms()).await.unwrap();
        let directory =
            NodeAddresses::new(db.clone(), Duration::from_secs(15), Duration::from_secs(60));
        let a: Uri = "http://10.0.0.7:8080".parse().unwrap();
        assert_eq!(directory.resolve("a").await, Some(a.clone()));
        assert_eq!(directory.resolve("b").await, None);
        assert_eq!(directory.resolve("c").await, None);
        assert_eq!(directory.resolve("d").await, None);
        // Answers are cached: a node gone a moment ago is still found until the cache expires.
        db.remove_node("a").await.unwrap();
        assert_eq!(directory.resolve("a").await, Some(a));
    }

    #[test]
    fn the_default_is_the_concrete_listen_address() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            advertised_url(None, bound).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(advertised_url(None, any), None);
        let unbound: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(advertised_url(None, unbound), None);
        assert_eq!(
            advertised_url(Some("http://node-2:8080"), any).as_deref(),
            Some("http://node-2:8080")
        );
    }
}
