//! The state every HTTP handler shares, and its substates: a handler takes `State<Inbox>`,
//! `State<Db>`, … for just the services it uses (axum's [`FromRef`]).

use std::sync::Arc;

use axum::extract::FromRef;
use signalbox::{HubContext, Policy};

use crate::auth::accounts::Accounts;
use crate::auth::identity::Authenticator;
use crate::auth::refresh::RefreshTokens;
use crate::auth::tokens::TokenService;
use crate::cluster::backplane::ClusterBackplane;
use crate::config::Config;
use crate::db::Db;
use crate::groups::Groups;
use crate::notifications::inbox::Inbox;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::presence::Presence;
use crate::rate_limit::RateLimits;

/// Shared services; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Storage.
    pub db: Db,
    /// Accounts.
    pub accounts: Accounts,
    /// Access tokens.
    pub tokens: Arc<TokenService>,
    /// Refresh tokens.
    pub refresh: RefreshTokens,
    /// Bearer authentication for REST routes.
    pub identity: Authenticator,
    /// Presence.
    pub presence: Presence,
    /// Group membership.
    pub groups: Groups,
    /// The inbox.
    pub inbox: Inbox,
    /// The notification hub's clients.
    pub hub: HubContext,
    /// Who may send notifications.
    pub notify: Policy,
    /// The backplane joining the nodes, if any.
    pub backplane: Option<ClusterBackplane>,
    /// Prometheus metrics and the dashboard's samples.
    pub metrics: Metrics,
    /// The checks of `/health/ready`; other modules register theirs.
    pub readiness: Readiness,
    /// Rate limits of the sign-in endpoints and of negotiate.
    pub limits: RateLimits,
    /// Azure SignalR Service compatibility; `None` unless access keys are configured.
    pub azure: Option<crate::azure::Azure>,
    /// Lifecycle webhooks (a no-op when off).
    pub webhooks: crate::webhooks::Webhooks,
}

impl AppState {
    /// Whether the backplane is connected (`true` without one): a readiness check.
    pub fn backplane_healthy(&self) -> bool {
        self.backplane
            .as_ref()
            .is_none_or(ClusterBackplane::is_healthy)
    }
}

/// `FromRef<AppState>` for each service, so handlers and extractors take only what they use.
macro_rules! substates {
    ($($field:ident: $service:ty),* $(,)?) => {
        $(
            impl FromRef<AppState> for $service {
                fn from_ref(state: &AppState) -> Self {
                    state.$field.clone()
                }
            }
        )*
    };
}

substates! {
    config: Arc<Config>,
    db: Db,
    accounts: Accounts,
    tokens: Arc<TokenService>,
    refresh: RefreshTokens,
    identity: Authenticator,
    presence: Presence,
    groups: Groups,
    inbox: Inbox,
    hub: HubContext,
    notify: Policy,
    metrics: Metrics,
    readiness: Readiness,
    limits: RateLimits,
    webhooks: crate::webhooks::Webhooks,
}
