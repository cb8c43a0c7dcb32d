//! The nodes of a cluster sharing one database: heartbeats, the reaper of dead nodes'
//! connections, and redelivery after a backplane outage.
//!
//! Every node records a heartbeat in the `nodes` table every `cluster.heartbeat_interval` and then
//! looks for dead nodes: those silent for `cluster.node_timeout`, and those holding connection
//! rows without a `nodes` row. Their connections are removed user by user, each in one
//! transaction that also decides the online→offline edge (`presence/store.rs`), so however many nodes
//! reap at once, each user that went offline gets exactly one `PresenceChanged`, pushed through
//! the hub to every node's clients. A node killed with SIGKILL thus has its users offline on the
//! others within `node_timeout + heartbeat_interval` (20 seconds by default).
//!
//! A node that finds its own row gone (it was taken for dead, say after a long pause) records its
//! live connections again.
//!
//! Node clocks are compared, so they must be roughly in sync (NTP); a skew counts against the
//! node timeout.

pub mod backplane;
pub mod directory;
pub mod store;

use std::time::Duration;

use signalbox::HubContext;

use crate::clock::{duration_ms, now_ms};
use crate::cluster::backplane::ClusterBackplane;
use crate::cluster::directory::AdvertisedUrl;
use crate::config::ClusterConfig;
use crate::db::{Db, StoreError};

use crate::notifications::inbox::Inbox;
use crate::presence::Presence;

/// The other nodes whose heartbeat is newer than `cutoff` (ms).
pub async fn live_nodes(db: &Db, me: &str, cutoff: i64) -> Result<Vec<String>, StoreError> {
    db.live_nodes(me, cutoff).await
}

/// The cluster tasks of this node.
#[derive(Debug)]
pub struct Cluster {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    db: Db,
    node: String,
}

/// What the cluster tasks work with.
#[derive(Debug, Clone)]
pub struct ClusterServices {
    /// Storage.
    pub db: Db,
    /// This node's presence.
    pub presence: Presence,
    /// The inbox.
    pub inbox: Inbox,
    /// The notification hub.
    pub hub: HubContext,
    /// The backplane, if any.
    pub backplane: Option<ClusterBackplane>,
    /// The URL at which the other nodes reach this one, once known.
    pub address: AdvertisedUrl,
}

impl Cluster {
    /// Records this node and starts the heartbeat/reaper task (and, with a backplane, the
    /// redelivery task and the backplane monitor).
    pub async fn start(
        services: ClusterServices,
        config: &ClusterConfig,
    ) -> Result<Self, StoreError> {
        let node = services.presence.node().to_owned();
        register(&services, &node, now_ms()).await?;
        let mut tasks = vec![tokio::spawn(heartbeats(
            services.clone(),
            config.heartbeat_interval,
            config.node_timeout,
        ))];
        if let Some(backplane) = &services.backplane {
            tasks.push(backplane.spawn_monitor());
            tasks.push(tokio::spawn(redeliver_on_recovery(
                services.clone(),
                backplane.clone(),
            )));
        }
        Ok(Self {
            tasks,
            db: services.db,
            node,
        })
    }

    /// Stops the tasks and removes this node's row (graceful shutdown; its connections have been
    /// removed by presence).
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(error) = self.db.remove_node(&self.node).await {
            tracing::warn!(%error, "cannot remove this node's heartbeat row");
        }
    }
}

async fn heartbeats(services: ClusterServices, interval: Duration, timeout: Duration) {
    let node = services.presence.node().to_owned();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = beat(&services, &node).await {
            tracing::warn!(%error, "node heartbeat failed");
        }
        if let Err(error) = reap(&services, &node, timeout).await {
            tracing::warn!(%error, "removing dead nodes' connections failed");
        }
    }
}

async fn beat(services: &ClusterServices, node: &str) -> Result<(), StoreError> {
    let now = now_ms();
    if services.db.heartbeat(node, now).await? {
        return Ok(());
    }
    tracing::warn!(
        node,
        "this node was taken for dead by the others; recording its connections again"
    );
    register(services, node, now).await?;
    let online = services.presence.reregister(&services.hub).await?;
    tracing::info!(online, "connections recorded again");
    Ok(())
}

/// Records this node's row, with its address when known.
async fn register(services: &ClusterServices, node: &str, now: i64) -> Result<(), StoreError> {
    services.db.register_node(node, now).await?;
    if let Some(address) = services.address.get() {
        directory::record(&services.db, node, &address).await?;
    }
    Ok(())
}

async fn reap(services: &ClusterServices, me: &str, timeout: Duration) -> Result<(), StoreError> {
    let cutoff = now_ms() - duration_ms(timeout);
    for dead in services.db.dead_nodes(me, cutoff).await? {
        let users = services.db.users_of_node(&dead).await?;
        let mut offline = 0usize;
        for user in &users {
            if services.presence.reap(&services.hub, &dead, user).await? {
                offline += 1;
            }
        }
        services.db.remove_dead_node(&dead, cutoff).await?;
        tracing::warn!(
            node = %dead,
            users = users.len(),
            offline,
            "node stopped sending heartbeats: its connections were removed"
        );
    }
    Ok(())
}

/// Each time the backplane comes (back) up, delivers what was held back for this node's users.
async fn redeliver_on_recovery(services: ClusterServices, backplane: ClusterBackplane) {
    let mut health = backplane.health();
    loop {
        if health.wait_for(|state| state.is_connected()).await.is_err() {
            return;
        }
        match services.inbox.redeliver_local(&services.hub).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                delivered = n,
                "notifications held back during the backplane outage delivered"
            ),
            Err(error) => tracing::warn!(%error, "cannot deliver held-back notifications"),
        }
        if health
            .wait_for(|state| !state.is_connected())
            .await
            .is_err()
        {
            return;
        }
    }
}
