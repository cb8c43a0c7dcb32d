//! `HubContext`: send to clients from anywhere (HTTP handlers, background tasks).

use std::sync::Arc;

use crate::hub::{Groups, HubClients};
use crate::lifetime::HubLifetimeManager;

/// A cheap, cloneable handle to a hub's clients and groups, for code outside hub methods (SignalR's
/// `IHubContext<THub>`).
#[derive(Clone)]
pub struct HubContext {
    lifetime: Arc<dyn HubLifetimeManager>,
}

impl std::fmt::Debug for HubContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubContext").finish_non_exhaustive()
    }
}

impl HubContext {
    pub(crate) fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self { lifetime }
    }

    /// Selects recipients.
    pub fn clients(&self) -> HubClients {
        HubClients::new(self.lifetime.clone())
    }

    /// Group membership.
    pub fn groups(&self) -> Groups {
        Groups::new(self.lifetime.clone())
    }

    /// The lifetime manager behind this hub.
    pub fn lifetime_manager(&self) -> &Arc<dyn HubLifetimeManager> {
        &self.lifetime
    }

    /// Closes a connection by id, wherever it is.
    pub async fn abort_connection(&self, connection_id: &str) {
        self.lifetime.abort_connection(connection_id).await;
    }
}
