//! Scale-out: several nodes share one logical hub over a [`Backplane`] (SignalR's
//! `RedisHubLifetimeManager`, signalr-protocol.md §9, without .NET wire interop).
//!
//! Every node delivers to its own connections through a [`LocalLifetimeManager`] and publishes one
//! envelope per send so the other nodes deliver to theirs. Channels, for a prefix `p`:
//!
//! | channel | subscribed by | carries |
//! |---|---|---|
//! | `p:all` | every node | sends to all / all-except |
//! | `p:group:{g}` | nodes with a local member of `g` | sends to a group (except some ids) |
//! | `p:user:{u}` | nodes with a local connection of `u` | sends to a user |
//! | `p:connection:{id}` | the node owning `id` | sends, client-result invocations, aborts, authentication refreshes |
//! | `p:internal:groups` | every node | group add/remove for a connection on another node |
//! | `p:internal:ack:{node}` | that node | acks of its group commands, answers to its refreshes |
//! | `p:internal:return:{node}` | that node | client results for invocations it made |
//!
//! A message is serialised once per protocol (the frames [`SerializedMessage::bytes`] caches) and
//! the envelope carries both frames plus the excluded connection ids; receivers queue the frame of
//! each recipient's protocol as is. Sends to a connection of this node skip the backplane, and a
//! node ignores its own envelopes (it has delivered locally already).
//!
//! Live delivery is at-most-once. While the backplane is down, local delivery goes on; failed
//! publishes are counted ([`ScaledLifetimeManager::lost_messages`]) and logged, and the driver
//! reconnects and subscribes again by itself.
//!
//! Received envelopes that need work on this node (a group change, a client-result invocation or
//! a refresh answer for one of its connections) are handled at most
//! [`ScaledOptions::max_envelopes_in_flight`] at a time; while all slots are busy the node does not
//! read from the backplane, whose driver then buffers or drops as its server does.
//!
//! The parts: `channels` (names and routing), `envelope` (the versioned binary format, documented
//! byte by byte there), `subscriptions` (the subscription task), `receive` (the receive loop),
//! `remote` (requests to other nodes that wait for answers) and `options`.

mod channels;
mod envelope;
mod options;
mod receive;
mod remote;
mod subscriptions;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};
use signalbox_protocol::{Completion, Payload, Protocol};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::backplane::{Backplane, BackplaneState};
use super::{
    ClientResultError, ConnectionHandle, HubLifetimeManager, LocalLifetimeManager, RefreshError,
    SendError, SerializedMessage, Target,
};
use crate::auth::Principal;
use channels::Channels;
use envelope::{Envelope, GroupAction, ReturnOutcome};
pub use envelope::{EnvelopeRoundTrip, fuzz_round_trip};
pub use options::ScaledOptions;
use receive::InFlight;
use remote::Pending;
use subscriptions::SubscriptionChange;

const LOG: &str = "signalbox::backplane";

/// A [`HubLifetimeManager`] for one hub spread over several nodes joined by a [`Backplane`].
///
/// ```no_run
/// use std::sync::Arc;
/// use signalbox::Hub;
/// use signalbox::lifetime::{MemoryBus, ScaledLifetimeManager};
///
/// # async fn run() {
/// let bus = MemoryBus::new(); // or a Redis / NATS driver
/// let manager = Arc::new(ScaledLifetimeManager::new(bus.backplane(), "chat"));
/// let hub = Hub::builder("chat").lifetime_manager(manager.clone()).build();
/// assert!(manager.is_healthy());
/// # }
/// ```
///
/// Create it inside a Tokio runtime: it starts two tasks (the receive loop and the subscription
/// manager), stopped when it is dropped.
pub struct ScaledLifetimeManager<B: Backplane> {
    shared: Arc<Shared<B>>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared<B> {
    backplane: B,
    local: LocalLifetimeManager,
    channels: Channels,
    node_id: String,
    ack_timeout: Duration,
    /// User and groups of each local connection, to leave their channels on disconnect.
    locals: DashMap<String, LocalInfo>,
    subscriptions: mpsc::Sender<SubscriptionChange>,
    next_id: AtomicU64,
    /// Group changes forwarded to other nodes, waiting for the owner's ack.
    acks: Pending<()>,
    /// Client-result invocations on other nodes, waiting for the owner's answers.
    returns: Pending<ReturnOutcome>,
    /// Authentication refreshes forwarded to other nodes, waiting for the owner's answer.
    refreshes: Pending<u8>,
    /// Slots for received envelopes being handled.
    in_flight: InFlight,
    lost: AtomicU64,
    state: watch::Receiver<BackplaneState>,
}

#[derive(Default)]
struct LocalInfo {
    user: Option<String>,
    groups: HashSet<String>,
}

impl<B: Backplane> fmt::Debug for ScaledLifetimeManager<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaledLifetimeManager")
            .field("node_id", &self.shared.node_id)
            .field("prefix", &self.shared.channels.prefix)
            .field("state", &*self.shared.state.borrow())
            .field("lost_messages", &self.lost_messages())
            .field("envelopes_in_flight", &self.envelopes_in_flight())
            .field("max_envelopes_in_flight", &self.shared.in_flight.cap())
            .finish_non_exhaustive()
    }
}

impl<B: Backplane> Drop for ScaledLifetimeManager<B> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<B: Backplane> ScaledLifetimeManager<B> {
    /// A manager publishing on channels named `{prefix}:…`, with default [`ScaledOptions`]. Every
    /// node of one hub uses the same prefix; different hubs need different prefixes.
    pub fn new(backplane: B, prefix: impl Into<String>) -> Self {
        Self::with_options(backplane, prefix, ScaledOptions::default())
    }

    /// A manager with explicit options.
    pub fn with_options(backplane: B, prefix: impl Into<String>, options: ScaledOptions) -> Self {
        let node_id = options.node_id.unwrap_or_else(generate_node_id);
        let channels = Channels {
            prefix: prefix.into(),
        };
        let (sub_tx, sub_rx) = mpsc::channel(1024);
        let messages = backplane.messages();
        let state = backplane.state();
        let shared = Arc::new(Shared {
            local: LocalLifetimeManager::new(),
            node_id,
            ack_timeout: options.ack_timeout,
            locals: DashMap::new(),
            subscriptions: sub_tx,
            next_id: AtomicU64::new(1),
            acks: Pending::new(),
            returns: Pending::new(),
            refreshes: Pending::new(),
            in_flight: InFlight::new(options.max_envelopes_in_flight),
            lost: AtomicU64::new(0),
            state,
            channels,
            backplane,
        });
        let permanent = vec![
            shared.channels.all(),
            shared.channels.internal_groups(),
            shared.channels.ack(&shared.node_id),
            shared.channels.ret(&shared.node_id),
        ];
        // The channel is new and empty, so this cannot fail for lack of room.
        let _ = shared
            .subscriptions
            .try_send(SubscriptionChange::new(permanent, 1, None));
        let mut tasks = vec![tokio::spawn(subscriptions::run_subscriptions(
            shared.clone(),
            sub_rx,
        ))];
        match messages {
            Some(stream) => tasks.push(tokio::spawn(receive::receive_loop(shared.clone(), stream))),
            None => tracing::error!(
                target: LOG,
                "the backplane's message stream was already taken (one driver per hub); \
                 this node will not receive messages from other nodes"
            ),
        }
        tracing::debug!(target: LOG, node_id = %shared.node_id, prefix = %shared.channels.prefix, "scaled lifetime manager started");
        Self { shared, tasks }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// The manager of this node's connections.
    pub fn local(&self) -> &LocalLifetimeManager {
        &self.shared.local
    }

    /// The backplane driver.
    pub fn backplane(&self) -> &B {
        &self.shared.backplane
    }

    /// How many envelopes could not be published (the backplane was down or failed). Their local
    /// recipients still got them; other nodes' recipients did not.
    pub fn lost_messages(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// How many received envelopes are being handled right now (group changes, client-result
    /// invocations and refresh answers for this node's connections); never more than
    /// [`ScaledOptions::max_envelopes_in_flight`]. Also exported as the gauge
    /// [`BACKPLANE_ENVELOPES_IN_FLIGHT`](crate::metrics::BACKPLANE_ENVELOPES_IN_FLIGHT) (summed over
    /// the managers of the process).
    pub fn envelopes_in_flight(&self) -> usize {
        self.shared.in_flight.count()
    }

    /// Whether the backplane is connected (for readiness probes).
    pub fn is_healthy(&self) -> bool {
        self.shared.state.borrow().is_connected()
    }

    /// Watches the backplane's connection state.
    pub fn health(&self) -> watch::Receiver<BackplaneState> {
        self.shared.state.clone()
    }
}

fn generate_node_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to something that still differs between processes.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_be_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("node-{hex}")
}

impl<B: Backplane> Shared<B> {
    /// Publishes an envelope; a failure is counted and logged (the message is lost for the other
    /// nodes). Returns whether it was published.
    async fn publish(&self, channel: &str, payload: Bytes) -> bool {
        match self.backplane.publish(channel, payload).await {
            Ok(()) => {
                crate::metrics::backplane_published();
                true
            }
            Err(error) => {
                let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(target: LOG, %error, channel, lost, "publish failed; message not delivered to other nodes");
                false
            }
        }
    }
}

fn check_groups(target: &Target) -> Result<(), SendError> {
    let empty = match target {
        Target::Group(g) | Target::GroupExcept(g, _) => g.is_empty(),
        Target::Groups(gs) => gs.iter().any(String::is_empty),
        _ => false,
    };
    if empty {
        Err(SendError::EmptyGroupName)
    } else {
        Ok(())
    }
}

impl<B: Backplane> ScaledLifetimeManager<B> {
    async fn send_scaled(
        &self,
        target: Target,
        message: Arc<SerializedMessage>,
    ) -> Result<(), SendError> {
        check_groups(&target)?;
        let shared = &*self.shared;
        let channels = &shared.channels;
        // Local recipients first: they get the message even when the backplane is down.
        let (remote, excluded): (Vec<String>, Vec<String>) = match &target {
            Target::Connection(id) => {
                if shared.local.connection(id).is_some() {
                    shared.local.send_local(&target, &message);
                    return Ok(());
                }
                (vec![channels.connection(id)], Vec::new())
            }
            Target::Connections(ids) => {
                shared.local.send_local(&target, &message);
                let remote = ids
                    .iter()
                    .filter(|id| shared.local.connection(id).is_none())
                    .map(|id| channels.connection(id))
                    .collect();
                (remote, Vec::new())
            }
            Target::All => {
                shared.local.send_local(&target, &message);
                (vec![channels.all()], Vec::new())
            }
            Target::AllExcept(excluded) => {
                shared.local.send_local(&target, &message);
                (vec![channels.all()], excluded.clone())
            }
            Target::Group(group) => {
                shared.local.send_local(&target, &message);
                (vec![channels.group(group)], Vec::new())
            }
            Target::Groups(groups) => {
                shared.local.send_local(&target, &message);
                (
                    groups.iter().map(|g| channels.group(g)).collect(),
                    Vec::new(),
                )
            }
            Target::GroupExcept(group, excluded) => {
                shared.local.send_local(&target, &message);
                (vec![channels.group(group)], excluded.clone())
            }
            Target::User(user) => {
                shared.local.send_local(&target, &message);
                (vec![channels.user(user)], Vec::new())
            }
            Target::Users(users) => {
                shared.local.send_local(&target, &message);
                (users.iter().map(|u| channels.user(u)).collect(), Vec::new())
            }
        };
        if remote.is_empty() {
            return Ok(());
        }
        // Traced: a `backplane publish` span whose context travels in the envelope.
        let span = if crate::trace::propagator().is_some() {
            tracing::info_span!(
                target: LOG,
                "backplane publish",
                otel.kind = "producer",
                messaging.operation.type = "publish",
                signalr.node = %shared.node_id,
                channels = remote.len(),
            )
        } else {
            tracing::Span::none()
        };
        // Serialised once per protocol: the same cached frames local recipients got.
        let envelope = Envelope::Send {
            origin: shared.node_id.clone(),
            excluded,
            json: message.bytes(Protocol::Json).unwrap_or_default(),
            msgpack: message.bytes(Protocol::MessagePack).unwrap_or_default(),
            trace: crate::trace::headers_of(&span),
        }
        .encode();
        async {
            for channel in remote {
                shared.publish(&channel, envelope.clone()).await;
            }
        }
        .instrument(span)
        .await;
        Ok(())
    }
}

impl<B: Backplane> HubLifetimeManager for ScaledLifetimeManager<B> {
    fn on_connected(&self, connection: ConnectionHandle) -> BoxFuture<'_, ()> {
        async move {
            let shared = &*self.shared;
            let id = connection.id().to_owned();
            let user = connection.user_id().map(str::to_owned);
            shared.locals.insert(
                id.clone(),
                LocalInfo {
                    user: user.clone(),
                    groups: HashSet::new(),
                },
            );
            shared.local.on_connected(connection).await;
            let mut channels = vec![shared.channels.connection(&id)];
            if let Some(user) = &user {
                channels.push(shared.channels.user(user));
            }
            shared.change_subscriptions(channels, 1).await;
        }
        .boxed()
    }

    fn on_disconnected<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let shared = &*self.shared;
            shared.local.on_disconnected(connection_id).await;
            let Some((_, info)) = shared.locals.remove(connection_id) else {
                return;
            };
            let mut channels = vec![shared.channels.connection(connection_id)];
            if let Some(user) = &info.user {
                channels.push(shared.channels.user(user));
            }
            channels.extend(info.groups.iter().map(|g| shared.channels.group(g)));
            shared.change_subscriptions(channels, -1).await;
        }
        .boxed()
    }

    fn send(
        &self,
        target: Target,
        message: Arc<SerializedMessage>,
    ) -> BoxFuture<'_, Result<(), SendError>> {
        self.send_scaled(target, message).boxed()
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        async move {
            if group.is_empty() {
                return Err(SendError::EmptyGroupName);
            }
            if self.shared.local.connection(connection_id).is_some() {
                self.shared.add_local(connection_id, group).await;
                return Ok(());
            }
            self.shared
                .remote_group(GroupAction::Add, connection_id, group)
                .await
        }
        .boxed()
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        async move {
            if group.is_empty() {
                return Err(SendError::EmptyGroupName);
            }
            if self.shared.local.connection(connection_id).is_some() {
                self.shared.remove_local(connection_id, group).await;
                return Ok(());
            }
            self.shared
                .remote_group(GroupAction::Remove, connection_id, group)
                .await
        }
        .boxed()
    }

    fn abort_connection<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        async move {
            if let Some(handle) = self.shared.local.connection(connection_id) {
                handle.abort();
                return;
            }
            let channel = self.shared.channels.connection(connection_id);
            self.shared
                .publish(&channel, Envelope::Abort.encode())
                .await;
        }
        .boxed()
    }

    fn invoke_client(
        &self,
        connection_id: String,
        target: String,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<Payload, ClientResultError>> {
        async move {
            if self.shared.local.connection(&connection_id).is_some() {
                return self
                    .shared
                    .local
                    .invoke_local(&connection_id, target, arguments)
                    .await;
            }
            self.shared
                .invoke_remote(&connection_id, target, &arguments)
                .await
        }
        .boxed()
    }

    fn on_client_completion(&self, connection_id: &str, completion: Completion) -> bool {
        self.shared
            .local
            .on_client_completion(connection_id, completion)
    }

    fn local_connection_ids(&self) -> Vec<String> {
        self.shared.local.local_connection_ids()
    }

    fn connection_count(&self) -> usize {
        self.shared.local.connection_count()
    }

    fn refresh_connection(
        &self,
        connection_id: String,
        principal: Principal,
    ) -> BoxFuture<'_, Result<(), RefreshError>> {
        async move {
            if let Some(handle) = self.shared.local.connection(&connection_id) {
                return handle.refresh_principal(principal);
            }
            self.shared.refresh_remote(&connection_id, &principal).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifetime::backplane::MemoryBus;
    use signalbox_protocol::{HubMessage, Invocation};
    use tokio_util::sync::CancellationToken;

    struct Conn {
        rx: crate::connection::outbound::OutboundReceiver,
    }

    async fn connect(
        m: &ScaledLifetimeManager<crate::lifetime::MemoryBackplane>,
        id: &str,
        user: Option<&str>,
        protocol: Protocol,
    ) -> Conn {
        let (tx, rx) = crate::connection::outbound::channel(64);
        m.on_connected(ConnectionHandle::new(
            Arc::from(id),
            user.map(Arc::from),
            protocol,
            tx,
            CancellationToken::new(),
        ))
        .await;
        Conn { rx }
    }

    fn msg(text: &str) -> Arc<SerializedMessage> {
        Arc::new(SerializedMessage::new(HubMessage::Invocation(
            Invocation::new("M", vec![Payload::new(text.to_owned())]),
        )))
    }

    /// Returns once the bus and both nodes have nothing left to do. The tests using it run on
    /// tokio's paused clock, which only moves on when every task is idle, so this virtual sleep
    /// ends exactly then.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn count(conn: &mut Conn) -> usize {
        settle().await;
        let mut n = 0;
        while conn.rx.try_recv().is_some() {
            n += 1;
        }
        n
    }

    fn principal(claims: serde_json::Value) -> Principal {
        let serde_json::Value::Object(map) = claims else {
            unreachable!()
        };
        Principal::new(map, "sub")
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_is_forwarded_to_the_owning_node() {
        let bus = MemoryBus::new();
        let options = ScaledOptions::default().ack_timeout(Duration::from_millis(300));
        let a = ScaledLifetimeManager::with_options(bus.backplane(), "t", options.clone());
        let b = ScaledLifetimeManager::with_options(bus.backplane(), "t", options);
        let cell = Arc::new(crate::connection::AuthCell::new(Some(principal(
            serde_json::json!({"sub": "alice", "v": 1}),
        ))));
        let (tx, _rx) = crate::connection::outbound::channel(8);
        b.on_connected(
            ConnectionHandle::new(
                Arc::from("b1"),
                Some(Arc::from("alice")),
                Protocol::Json,
                tx,
                CancellationToken::new(),
            )
            .with_auth(Some(cell.clone())),
        )
        .await;
        settle().await;

        let newer = principal(serde_json::json!({"sub": "alice", "v": 2}));
        a.refresh_connection("b1".into(), newer.clone())
            .await
            .unwrap();
        assert_eq!(cell.get(), Some(newer.clone()));
        // Locally too.
        let newest = principal(serde_json::json!({"sub": "alice", "v": 3}));
        b.refresh_connection("b1".into(), newest.clone())
            .await
            .unwrap();
        assert_eq!(cell.get(), Some(newest.clone()));
        assert_eq!(
            a.refresh_connection(
                "b1".into(),
                principal(serde_json::json!({"sub": "mallory"}))
            )
            .await,
            Err(RefreshError::PermissionChangeRejected)
        );
        assert_eq!(cell.get(), Some(newest));
        assert_eq!(
            a.refresh_connection("nobody".into(), newer).await,
            Err(RefreshError::NotFound)
        );
        assert!(a.shared.refreshes.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn two_nodes_over_a_memory_bus() {
        let bus = MemoryBus::new();
        let a = ScaledLifetimeManager::new(bus.backplane(), "t");
        let b = ScaledLifetimeManager::new(bus.backplane(), "t");
        let mut a1 = connect(&a, "a1", Some("u"), Protocol::Json).await;
        let mut b1 = connect(&b, "b1", Some("u"), Protocol::MessagePack).await;
        let mut b2 = connect(&b, "b2", None, Protocol::Json).await;
        settle().await;

        a.send(Target::All, msg("x")).await.unwrap();
        assert_eq!(
            [
                count(&mut a1).await,
                count(&mut b1).await,
                count(&mut b2).await
            ],
            [1, 1, 1]
        );
        a.add_to_group("b2", "g").await.unwrap();
        a.send(Target::Group("g".into()), msg("x")).await.unwrap();
        assert_eq!(
            [
                count(&mut a1).await,
                count(&mut b1).await,
                count(&mut b2).await
            ],
            [0, 0, 1]
        );
        b.send(Target::User("u".into()), msg("x")).await.unwrap();
        assert_eq!(
            [
                count(&mut a1).await,
                count(&mut b1).await,
                count(&mut b2).await
            ],
            [1, 1, 0]
        );

        bus.set_connected(false);
        assert!(!a.is_healthy());
        a.send(Target::All, msg("x")).await.unwrap();
        assert_eq!(
            [
                count(&mut a1).await,
                count(&mut b1).await,
                count(&mut b2).await
            ],
            [1, 0, 0]
        );
        assert_eq!(a.lost_messages(), 1);
        bus.set_connected(true);
        assert!(a.is_healthy());
    }
}
