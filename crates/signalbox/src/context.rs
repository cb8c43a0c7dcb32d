//! `HubContext`: send to clients from anywhere (HTTP handlers, background tasks).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::{Groups, HubClients};
use crate::lifetime::HubLifetimeManager;

/// A cheap, cloneable handle to a hub's clients and groups, for code outside hub methods (SignalR's
/// `IHubContext<THub>`).
#[derive(Clone)]
pub struct HubContext {
    lifetime: Arc<dyn HubLifetimeManager>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for HubContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubContext").finish_non_exhaustive()
    }
}

impl HubContext {
    pub(crate) fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self {
            lifetime,
            shutdown: CancellationToken::new(),
        }
    }

    /// Cancelled when the hub shuts down.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Whether [`HubContext::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Shuts the hub down gracefully: negotiate answers 503, every connection of this node gets a
    /// Close message with `allowReconnect` (clients with automatic reconnect come back, to another
    /// node or after a restart), in-flight invocations finish or are dropped as connections end,
    /// and `on_disconnected` runs for each. Returns once no connection is left, or after
    /// `deadline`; returns the number still open then.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.shutdown.cancel();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let open = self.lifetime.connection_count();
            if open == 0 || tokio::time::Instant::now() >= until {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
