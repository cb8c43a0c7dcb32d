//! Mounting hubs in an axum [`Router`] (SignalR's `MapHub<T>("/path")`).

use axum::Router;

use crate::connection::ConnectionEndpoint;
use crate::hub::{self, Hub};

/// Adds `map_hub` to axum routers.
pub trait HubRouterExt<S> {
    /// Serves `hub` at `path`: `POST {path}/negotiate` and the transports at `{path}`.
    fn map_hub(self, path: &str, hub: Hub) -> Self;

    /// Serves a raw connection endpoint (no hub protocol) at `path`, with negotiate and every
    /// transport (SignalR's `MapConnectionHandler`).
    fn map_connection(self, path: &str, endpoint: ConnectionEndpoint) -> Self;
}

impl<S> HubRouterExt<S> for Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn map_hub(self, path: &str, hub: Hub) -> Self {
        hub::endpoint::mount(self, path, hub)
    }

    fn map_connection(self, path: &str, endpoint: ConnectionEndpoint) -> Self {
        endpoint.mount(self, path)
    }
}
