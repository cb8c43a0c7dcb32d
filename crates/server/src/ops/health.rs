//! Health endpoints for orchestrators and load balancers.
//!
//! * `GET /health/live`: 200 while the process serves HTTP.
//! * `GET /health/ready`: 200 when every check passes, 503 otherwise, with a JSON body naming
//!   each check: the database (a `SELECT 1` within [`CHECK_TIMEOUT`]), the hub (not shutting
//!   down), and whatever other modules registered with [`Readiness::register`] (the cluster
//!   backplane registers `backplane`; until it does, `backplane` reads `not_configured`).
//!
//! ```json
//! {"status":"ok","node":"web-1","checks":{"database":{"status":"ok","latency_ms":1},
//!  "hub":{"status":"ok"},"backplane":{"status":"not_configured"}}}
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use signalbox::HubContext;

use crate::cluster::backplane::ClusterBackplane;
use crate::config::Config;
use crate::db::Db;
use crate::state::AppState;

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The name the backplane's check is registered under.
pub const BACKPLANE: &str = "backplane";

/// The outcome of a check: `Ok` with optional details, or `Err` with what is wrong.
pub type CheckResult = Result<Map<String, Value>, String>;

/// A boxed future of a [`CheckResult`].
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// Something `/health/ready` asks. Implement it and call [`Readiness::register`].
pub trait ReadinessCheck: Send + Sync {
    /// The key of this check in the JSON body (`database`, `backplane`, …).
    fn name(&self) -> &str;
    /// Runs the check; it is given [`CHECK_TIMEOUT`] and counts as failed after that.
    fn check(&self) -> CheckFuture<'_>;
}

/// The registered checks; cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<Vec<Arc<dyn ReadinessCheck>>>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Readiness {
    /// The standard checks: the database and the hub.
    pub fn new(db: Db, hub: HubContext) -> Self {
        let readiness = Self::default();
        readiness.register(DatabaseCheck(db));
        readiness.register(HubCheck(hub));
        readiness
    }

    /// Adds a check (one with the same name is replaced).
    pub fn register(&self, check: impl ReadinessCheck + 'static) {
        let mut checks = self.checks.write().unwrap_or_else(PoisonError::into_inner);
        checks.retain(|c| c.name() != check.name());
        checks.push(Arc::new(check));
    }

    /// The names of the registered checks.
    pub fn names(&self) -> Vec<String> {
        self.checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    /// Runs every check concurrently; `(all passed, body)`.
    pub async fn evaluate(&self) -> (bool, Map<String, Value>) {
        let checks: Vec<Arc<dyn ReadinessCheck>> = self
            .checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let results = futures_util::future::join_all(checks.iter().map(|check| async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check()).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (ok, mut detail) = match outcome {
                Ok(Ok(detail)) => (true, detail),
                Ok(Err(error)) => (false, Map::from_iter([("error".into(), json!(error))])),
                Err(_) => (
                    false,
                    Map::from_iter([(
                        "error".into(),
                        json!(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
                    )]),
                ),
            };
            detail.insert("status".into(), json!(if ok { "ok" } else { "fail" }));
            detail
                .entry("latency_ms")
                .or_insert_with(|| json!(latency_ms));
            (check.name().to_owned(), ok, detail)
        }))
        .await;
        let mut all_ok = true;
        let mut body = Map::new();
        for (name, ok, detail) in results {
            all_ok &= ok;
            body.insert(name, Value::Object(detail));
        }
        body.entry(BACKPLANE)
            .or_insert_with(|| json!({"status": "not_configured"}));
        (all_ok, body)
    }
}

/// `SELECT 1` on the pool.
#[derive(Debug)]
struct DatabaseCheck(Db);

impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &str {
        "database"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            self.0.ping().await.map_err(|e| e.to_string())?;
            Ok(Map::from_iter([(
                "backend".into(),
                json!(self.0.backend().to_string()),
            )]))
        })
    }
}

/// Fails once the hub is shutting down, so load balancers stop sending new clients.
#[derive(Debug)]
struct HubCheck(HubContext);

impl ReadinessCheck for HubCheck {
    fn name(&self) -> &str {
        "hub"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.0.is_shutting_down() {
                return Err("shutting down".to_owned());
            }
            let connections = self.0.lifetime_manager().connection_count();
            Ok(Map::from_iter([("connections".into(), json!(connections))]))
        })
    }
}

/// The cluster backplane: connected with every subscription in place.
#[derive(Debug)]
pub struct BackplaneCheck(pub ClusterBackplane);

impl ReadinessCheck for BackplaneCheck {
    fn name(&self) -> &str {
        BACKPLANE
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let detail = Map::from_iter([
                ("kind".into(), json!(self.0.kind().to_string())),
                ("lost_messages".into(), json!(self.0.lost_messages())),
            ]);
            if self.0.is_healthy() {
                Ok(detail)
            } else {
                Err(format!("{} is not connected", self.0.describe()))
            }
        })
    }
}

/// `/health/live` and `/health/ready` (no authentication: they reveal no user data).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(readiness): State<Readiness>, State(config): State<Arc<Config>>) -> Response {
    let (ok, checks) = readiness.evaluate().await;
    if !ok {
        let detail = Value::Object(checks.clone());
        tracing::warn!(checks = %detail, "not ready");
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ok" } else { "fail" },
            "node": config.node,
            "checks": checks,
        })),
    )
        .into_response()
}
