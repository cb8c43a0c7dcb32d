//! Operations: health endpoints for orchestrators ([`health`]) and Prometheus metrics with the
//! dashboard's samples ([`metrics`]).

pub mod health;
pub mod metrics;

use axum::Router;

use crate::state::AppState;

/// The routes of this feature: `/health/live`, `/health/ready` and `/metrics`.
pub fn routes() -> Router<AppState> {
    health::routes().merge(metrics::routes())
}
