//! Serving a hub over the connection layer: the hub's per-connection loop is the endpoint's
//! [`ConnectionHandler`], and its authentication, policy and connection options are the
//! endpoint's settings (SignalR's `MapHub<T>` on top of `MapConnectionHandler`).

use std::sync::Arc;

use axum::Router;
use futures_util::future::{BoxFuture, FutureExt};

use super::{Hub, HubInner, handler};
use crate::auth::Principal;
use crate::connection::endpoint::{self, ConnectionHandler, EndpointSettings};
use crate::connection::{Connection, RefreshError};

impl ConnectionHandler for HubInner {
    fn run(self: Arc<Self>, connection: Connection) -> BoxFuture<'static, ()> {
        handler::run(self, connection).boxed()
    }

    /// Forwarded through the hub's lifetime manager (a backplane reaches the other nodes).
    fn refresh_remote(
        &self,
        connection_id: String,
        principal: Principal,
    ) -> BoxFuture<'_, Result<(), RefreshError>> {
        self.context
            .lifetime_manager()
            .refresh_connection(connection_id, principal)
    }
}

/// Adds a hub's routes to `router`.
pub(crate) fn mount<S>(router: Router<S>, path: &str, hub: Hub) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let inner = hub.inner;
    let settings = EndpointSettings {
        auth: inner.auth.clone(),
        policy: inner.policy.clone(),
        options: inner.connection_options.clone(),
        queue_capacity: inner.options.outbound_queue_capacity,
        negotiate_redirect: inner.negotiate_redirect.clone(),
        shutdown: inner.context.shutdown_token().clone(),
    };
    endpoint::mount(router, path, settings, inner)
}
