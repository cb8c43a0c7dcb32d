//! The backplane joining the nodes of a cluster: the notification hub's
//! [`ScaledLifetimeManager`] over Redis (`redis://…`) or NATS (`nats://…`). Without one the hub is
//! in-memory (a single node).
//!
//! The drivers reconnect and subscribe again by themselves. While the backplane is down,
//! `/health/ready` reports it (see [`ClusterBackplane::is_healthy`]), sends still reach this node's
//! connections, and every envelope that could not be published is counted in the
//! `signalbox_backplane_lost_messages_total` metric; the inbox holds back notifications for users
//! connected to other nodes and delivers them when the backplane is back (see [`crate::cluster`]).
//!
//! Each driver is a Cargo feature of the binary (`redis`, `nats`, both on by default); a backplane
//! whose driver is compiled out is refused when the configuration is loaded (see
//! [`Kind::is_compiled`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use signalbox::lifetime::{
    Backplane, BackplaneError, BackplaneState, HubLifetimeManager, ScaledLifetimeManager,
    ScaledOptions,
};
#[cfg(feature = "nats")]
use signalbox_nats::NatsBackplane;
#[cfg(feature = "redis")]
use signalbox_redis::RedisBackplane;
use tokio::sync::watch;

/// 1 while the backplane is connected, 0 while it is not.
pub const BACKPLANE_CONNECTED: &str = "signalbox_backplane_connected";
/// Envelopes that could not be published to the other nodes (the backplane was down).
pub const BACKPLANE_LOST_MESSAGES: &str = "signalbox_backplane_lost_messages_total";

/// How often the metrics above are refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a new driver connection is awaited before a lifetime manager starts on it.
pub const DRIVER_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The supported backplane servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Redis pub/sub (`redis://`, `rediss://`).
    Redis,
    /// Core NATS (`nats://`, `tls://`).
    Nats,
}

impl Kind {
    /// The kind of a backplane URL, if supported.
    pub fn of(url: &str) -> Option<Kind> {
        let scheme = url.trim().split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "redis" | "rediss" => Some(Kind::Redis),
            "nats" | "tls" => Some(Kind::Nats),
            _ => None,
        }
    }
}

impl Kind {
    /// Whether this binary has the driver of this kind (Cargo features `redis` and `nats`).
    pub fn is_compiled(self) -> bool {
        match self {
            Kind::Redis => cfg!(feature = "redis"),
            Kind::Nats => cfg!(feature = "nats"),
        }
    }

    /// Why a backplane of this kind cannot be used when its driver is compiled out.
    pub fn not_compiled(self) -> String {
        format!(
            "backplane '{self}' is not compiled into this binary; rebuild with --features {self}"
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        })
    }
}

/// The lifetime manager over the driver of one kind (no variant when no driver is compiled in).
#[derive(Debug)]
enum Manager {
    #[cfg(feature = "redis")]
    Redis(Arc<ScaledLifetimeManager<RedisBackplane>>),
    #[cfg(feature = "nats")]
    Nats(Arc<ScaledLifetimeManager<NatsBackplane>>),
}

impl Manager {
    /// Starts the driver of `kind` for `url` and a lifetime manager on it.
    async fn start(
        kind: Kind,
        url: &str,
        prefix: &str,
        options: ScaledOptions,
    ) -> Result<Self, BackplaneError> {
        #[cfg(not(any(feature = "redis", feature = "nats")))]
        let _ = (url, prefix, options);
        match kind {
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let driver = RedisBackplane::new(url)?;
                Ok(Manager::Redis(Arc::new(
                    ScaledLifetimeManager::with_options(driver, prefix, options),
                )))
            }
            #[cfg(feature = "nats")]
            Kind::Nats => {
                let driver = NatsBackplane::connect(url).await?;
                Ok(Manager::Nats(Arc::new(
                    ScaledLifetimeManager::with_options(driver, prefix, options),
                )))
            }
            #[cfg(not(feature = "redis"))]
            Kind::Redis => Err(not_compiled(kind)),
            #[cfg(not(feature = "nats"))]
            Kind::Nats => Err(not_compiled(kind)),
        }
    }
}

/// The error of a backplane whose driver is compiled out (the configuration check refuses it
/// first).
#[cfg_attr(
    all(feature = "redis", feature = "nats"),
    allow(dead_code, reason = "every driver is compiled in")
)]
fn not_compiled(kind: Kind) -> BackplaneError {
    BackplaneError::driver(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        kind.not_compiled(),
    ))
}

/// The hub's scaled lifetime manager over the configured backplane; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterBackplane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    manager: Manager,
    kind: Kind,
    url: String,
    /// The URL as configured (with any password), to open more connections.
    connect_url: String,
    node_id: String,
}

/// A backplane driver of either kind, type-erased.
pub type SharedBackplane = Arc<dyn Backplane>;

impl ClusterBackplane {
    /// Starts the driver for `url` (connecting in the background: a server that is down at
    /// start only makes the node unready) and a lifetime manager with channels `{prefix}:…`.
    pub async fn connect(url: &str, prefix: &str, node_id: &str) -> Result<Self, BackplaneError> {
        let kind = Kind::of(url).ok_or_else(|| {
            BackplaneError::driver(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "unsupported backplane URL",
            ))
        })?;
        let options = ScaledOptions::default().node_id(node_id);
        let manager = Manager::start(kind, url, prefix, options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                manager,
                kind,
                url: crate::db::redact_url(url),
                connect_url: url.to_owned(),
                node_id: node_id.to_owned(),
            }),
        })
    }

    /// The lifetime manager to build the hub with.
    pub fn lifetime_manager(&self) -> Arc<dyn HubLifetimeManager> {
        match self.inner.manager {
            #[cfg(feature = "redis")]
            Manager::Redis(ref m) => m.clone(),
            #[cfg(feature = "nats")]
            Manager::Nats(ref m) => m.clone(),
        }
    }

    /// Whether the backplane is connected (with every subscription in place).
    pub fn is_healthy(&self) -> bool {
        match self.inner.manager {
            #[cfg(feature = "redis")]
            Manager::Redis(ref m) => m.is_healthy(),
            #[cfg(feature = "nats")]
            Manager::Nats(ref m) => m.is_healthy(),
        }
    }

    /// Watches the connection state.
    pub fn health(&self) -> watch::Receiver<BackplaneState> {
        match self.inner.manager {
            #[cfg(feature = "redis")]
            Manager::Redis(ref m) => m.health(),
            #[cfg(feature = "nats")]
            Manager::Nats(ref m) => m.health(),
        }
    }

    /// Envelopes that could not be published since start.
    pub fn lost_messages(&self) -> u64 {
        match self.inner.manager {
            #[cfg(feature = "redis")]
            Manager::Redis(ref m) => m.lost_messages(),
            #[cfg(feature = "nats")]
            Manager::Nats(ref m) => m.lost_messages(),
        }
    }

    /// Waits until the backplane is connected, at most `timeout`; returns whether it is.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let mut health = self.health();
        tokio::time::timeout(timeout, health.wait_for(|s| s.is_connected()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Opens another connection to the backplane server: each [`ScaledLifetimeManager`] and each
    /// other consumer of messages needs its own (a driver hands out its message stream once).
    pub async fn open_driver(&self) -> Result<SharedBackplane, BackplaneError> {
        let url = &self.inner.connect_url;
        #[cfg(not(any(feature = "redis", feature = "nats")))]
        let _ = url;
        match self.inner.kind {
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let driver: SharedBackplane = Arc::new(RedisBackplane::new(url)?);
                Ok(driver)
            }
            #[cfg(feature = "nats")]
            Kind::Nats => {
                let driver: SharedBackplane = Arc::new(NatsBackplane::connect(url).await?);
                Ok(driver)
            }
            #[cfg(not(feature = "redis"))]
            Kind::Redis => Err(not_compiled(Kind::Redis)),
            #[cfg(not(feature = "nats"))]
            Kind::Nats => Err(not_compiled(Kind::Nats)),
        }
    }

    /// A lifetime manager for another hub over this backplane, on its own connection, with
    /// channels under `prefix` and this node's id.
    pub async fn hub_lifetime(
        &self,
        prefix: &str,
    ) -> Result<Arc<ScaledLifetimeManager<SharedBackplane>>, BackplaneError> {
        let driver = self.open_driver().await?;
        // Wait for the new connection, so that the hub's first sends and subscriptions (often a
        // REST call made right now) are not lost; past the wait, it catches up on reconnect.
        let mut state = driver.state();
        let _ =
            tokio::time::timeout(DRIVER_CONNECT_WAIT, state.wait_for(|s| s.is_connected())).await;
        let options = ScaledOptions::default().node_id(self.inner.node_id.clone());
        Ok(Arc::new(ScaledLifetimeManager::with_options(
            driver, prefix, options,
        )))
    }

    /// This node's id on the backplane.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The server kind.
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// `redis (redis://host:6379)`, without any password.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.inner.kind, self.inner.url)
    }

    /// Publishes the backplane metrics every second and logs state changes, until aborted.
    pub fn spawn_monitor(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut health = this.health();
            let mut ticker = tokio::time::interval(METRICS_INTERVAL);
            let mut last = *health.borrow_and_update();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    changed = health.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let state = *health.borrow_and_update();
                if state != last {
                    if state.is_connected() {
                        tracing::info!(backplane = %this.describe(), lost = this.lost_messages(), "backplane connected");
                    } else {
                        tracing::warn!(backplane = %this.describe(), %state, "backplane down; cross-node delivery paused");
                    }
                    last = state;
                }
                metrics::gauge!(BACKPLANE_CONNECTED).set(if state.is_connected() {
                    1.0
                } else {
                    0.0
                });
                metrics::counter!(BACKPLANE_LOST_MESSAGES).absolute(this.lost_messages());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("redis://127.0.0.1:6379"), Some(Kind::Redis));
        assert_eq!(Kind::of("rediss://h:1/0"), Some(Kind::Redis));
        assert_eq!(Kind::of("NATS://h:4222"), Some(Kind::Nats));
        assert_eq!(Kind::of("amqp://h"), None);
        assert_eq!(Kind::of("redis"), None);
    }

    #[test]
    fn a_compiled_out_driver_is_named_with_its_feature() {
        assert_eq!(Kind::Redis.is_compiled(), cfg!(feature = "redis"));
        assert_eq!(Kind::Nats.is_compiled(), cfg!(feature = "nats"));
        assert_eq!(
            Kind::Nats.not_compiled(),
            "backplane 'nats' is not compiled into this binary; rebuild with --features nats"
        );
        assert_eq!(
            Kind::Redis.not_compiled(),
            "backplane 'redis' is not compiled into this binary; rebuild with --features redis"
        );
    }

    #[cfg(not(feature = "nats"))]
    #[tokio::test]
    async fn connecting_to_a_compiled_out_driver_fails() {
        let error = ClusterBackplane::connect("nats://127.0.0.1:4222", "test", "node")
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("rebuild with --features nats"),
            "{error}"
        );
    }
}
