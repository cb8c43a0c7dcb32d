//! Mounting hubs in an axum [`Router`] (SignalR's `MapHub<T>("/path")`).

use axum::Router;

use crate::connection::endpoint;
use crate::hub::Hub;

/// Adds `map_hub` to axum routers.
pub trait HubRouterExt<S> {
    /// Serves `hub` at `path`: `POST {path}/negotiate` and the transports at `{path}`.
    fn map_hub(self, path: &str, hub: Hub) -> Self;
}

impl<S> HubRouterExt<S> for Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn map_hub(self, path: &str, hub: Hub) -> Self {
        endpoint::mount(self, path, hub)
    }
}
