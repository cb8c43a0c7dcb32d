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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use signalbox_protocol::{Completion, Headers, Payload, Protocol};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::backplane::{Backplane, BackplaneState};
use super::{
    ClientResultError, ConnectionHandle, HubLifetimeManager, LocalLifetimeManager, RefreshError,
    SendError, SerializedMessage, Target,
};
use crate::auth::Principal;

const LOG: &str = "signalbox::backplane";

/// Settings of a [`ScaledLifetimeManager`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScaledOptions {
    /// This node's id (unique among the nodes of the hub). Defaults to `node-` and 16 random hex
    /// digits.
    pub node_id: Option<String>,
    /// How long adding or removing a group member on another node, and the first answer of a
    /// client-result invocation on another node, are awaited. Defaults to 10 seconds.
    pub ack_timeout: Duration,
}

impl Default for ScaledOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

impl ScaledOptions {
    /// Sets the node id.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Sets the ack timeout.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
}

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
    acks: DashMap<u64, oneshot::Sender<()>>,
    returns: DashMap<u64, mpsc::Sender<ReturnOutcome>>,
    /// Authentication refreshes forwarded to other nodes, waiting for the owner's answer.
    refreshes: DashMap<u64, oneshot::Sender<u8>>,
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
            acks: DashMap::new(),
            returns: DashMap::new(),
            refreshes: DashMap::new(),
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
        let mut tasks = vec![tokio::spawn(run_subscriptions(shared.clone(), sub_rx))];
        match messages {
            Some(stream) => tasks.push(tokio::spawn(receive_loop(shared.clone(), stream))),
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

// ---------------------------------------------------------------------------------------------
// Channels

#[derive(Debug)]
struct Channels {
    prefix: String,
}

/// Where an incoming send envelope is delivered, from the channel it arrived on.
enum Route<'a> {
    All,
    Group(&'a str),
    User(&'a str),
    Connection(&'a str),
    Internal,
}

impl Channels {
    fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
    fn group(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }
    fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }
    fn connection(&self, id: &str) -> String {
        format!("{}:connection:{id}", self.prefix)
    }
    fn internal_groups(&self) -> String {
        format!("{}:internal:groups", self.prefix)
    }
    fn ack(&self, node: &str) -> String {
        format!("{}:internal:ack:{node}", self.prefix)
    }
    fn ret(&self, node: &str) -> String {
        format!("{}:internal:return:{node}", self.prefix)
    }

    fn route<'a>(&self, channel: &'a str) -> Option<Route<'a>> {
        let rest = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?;
        if rest == "all" {
            Some(Route::All)
        } else if let Some(group) = rest.strip_prefix("group:") {
            Some(Route::Group(group))
        } else if let Some(user) = rest.strip_prefix("user:") {
            Some(Route::User(user))
        } else if let Some(id) = rest.strip_prefix("connection:") {
            Some(Route::Connection(id))
        } else if rest.starts_with("internal:") {
            Some(Route::Internal)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions: reference-counted, changed by one task in batches so that subscribe and
// unsubscribe calls for a channel reach the driver in order.

struct SubscriptionChange {
    channels: Vec<String>,
    delta: i64,
    done: Option<oneshot::Sender<()>>,
}

impl SubscriptionChange {
    fn new(channels: Vec<String>, delta: i64, done: Option<oneshot::Sender<()>>) -> Self {
        Self {
            channels,
            delta,
            done,
        }
    }
}

async fn run_subscriptions<B: Backplane>(
    shared: Arc<Shared<B>>,
    mut rx: mpsc::Receiver<SubscriptionChange>,
) {
    // Counts may go below zero for a moment when a leave overtakes its join; a channel is
    // subscribed while its count is positive.
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut subscribed: HashSet<String> = HashSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        let mut touched: HashSet<String> = HashSet::new();
        let mut waiters = Vec::new();
        for change in batch {
            for channel in change.channels {
                let count = counts.entry(channel.clone()).or_insert(0);
                *count += change.delta;
                if *count == 0 {
                    counts.remove(&channel);
                }
                touched.insert(channel);
            }
            waiters.extend(change.done);
        }
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for channel in touched {
            let wanted = counts.get(&channel).is_some_and(|c| *c > 0);
            if wanted && !subscribed.contains(&channel) {
                subscribed.insert(channel.clone());
                add.push(channel);
            } else if !wanted && subscribed.remove(&channel) {
                remove.push(channel);
            }
        }
        if !add.is_empty()
            && let Err(error) = shared.backplane.subscribe(&add).await
        {
            // The driver remembers the channels and subscribes again once reconnected.
            tracing::warn!(target: LOG, %error, channels = add.len(), "subscribe failed; retried on reconnect");
        }
        if !remove.is_empty()
            && let Err(error) = shared.backplane.unsubscribe(&remove).await
        {
            tracing::warn!(target: LOG, %error, channels = remove.len(), "unsubscribe failed");
        }
        for waiter in waiters {
            // The waiter may have given up (its future was dropped).
            let _ = waiter.send(());
        }
    }
}

impl<B: Backplane> Shared<B> {
    /// Changes subscriptions and waits until the driver has been asked.
    async fn change_subscriptions(&self, channels: Vec<String>, delta: i64) {
        if channels.is_empty() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .subscriptions
            .send(SubscriptionChange::new(channels, delta, Some(tx)))
            .await
            .is_ok()
        {
            // An error means the subscription task is gone (the manager is being dropped).
            let _ = rx.await;
        }
    }

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

    // -- local group membership with subscriptions --

    async fn add_local(&self, connection_id: &str, group: &str) {
        if self.local.is_in_group(connection_id, group)
            || !self.local.add_local_to_group(connection_id, group)
        {
            return;
        }
        let newly = match self.locals.get_mut(connection_id) {
            Some(mut info) => info.groups.insert(group.to_owned()),
            None => false,
        };
        if newly {
            self.change_subscriptions(vec![self.channels.group(group)], 1)
                .await;
        }
    }

    async fn remove_local(&self, connection_id: &str, group: &str) {
        self.local.remove_local_from_group(connection_id, group);
        let removed = match self.locals.get_mut(connection_id) {
            Some(mut info) => info.groups.remove(group),
            None => false,
        };
        if removed {
            self.change_subscriptions(vec![self.channels.group(group)], -1)
                .await;
        }
    }

    /// Forwards a group change for a connection of another node and waits for its ack.
    async fn remote_group(
        &self,
        action: GroupAction,
        connection_id: &str,
        group: &str,
    ) -> Result<(), SendError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks.insert(id, tx);
        let _guard = RemoveOnDrop(&self.acks, id);
        let envelope = Envelope::Group {
            origin: self.node_id.clone(),
            id,
            action,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        self.backplane
            .publish(&self.channels.internal_groups(), envelope.encode())
            .await
            .map_err(|e| SendError::Backplane(e.to_string()))?;
        crate::metrics::backplane_published();
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(SendError::Backplane(format!(
                "no node acknowledged the group change for connection '{connection_id}' within {:?}",
                self.ack_timeout
            ))),
        }
    }

    async fn invoke_remote(
        &self,
        connection_id: &str,
        target: String,
        arguments: &[Payload],
    ) -> Result<Payload, ClientResultError> {
        let mut args = Vec::with_capacity(arguments.len());
        for argument in arguments {
            let (mut json, mut msgpack) = (Vec::new(), Vec::new());
            argument
                .write_json(&mut json)
                .map_err(|e| ClientResultError::Send(e.to_string()))?;
            argument
                .write_msgpack(&mut msgpack)
                .map_err(|e| ClientResultError::Send(e.to_string()))?;
            args.push((Bytes::from(json), Bytes::from(msgpack)));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(2);
        self.returns.insert(id, tx);
        let _guard = RemoveOnDrop(&self.returns, id);
        let envelope = Envelope::Invoke {
            origin: self.node_id.clone(),
            id,
            connection_id: connection_id.to_owned(),
            target,
            args,
        };
        self.backplane
            .publish(&self.channels.connection(connection_id), envelope.encode())
            .await
            .map_err(|e| ClientResultError::Send(e.to_string()))?;
        crate::metrics::backplane_published();
        // The owning node answers `Accepted` at once; no answer means no node owns the connection.
        let first = tokio::time::timeout(self.ack_timeout, rx.recv()).await;
        let outcome = match first {
            Ok(Some(ReturnOutcome::Accepted)) => rx.recv().await,
            Ok(other) => other,
            Err(_) => return Err(ClientResultError::NotFound(connection_id.to_owned())),
        };
        match outcome {
            Some(ReturnOutcome::Done(result)) => result,
            Some(ReturnOutcome::Accepted) | None => Err(ClientResultError::Disconnected),
        }
    }
}

impl<B: Backplane> Shared<B> {
    /// Forwards an authentication refresh to the node owning the connection and waits for its
    /// answer; no answer within the ack timeout means no node has it.
    async fn refresh_remote(
        &self,
        connection_id: &str,
        principal: &Principal,
    ) -> Result<(), RefreshError> {
        let claims = serde_json::to_vec(principal.claims())
            .map_err(|e| RefreshError::Backplane(e.to_string()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.refreshes.insert(id, tx);
        let _guard = RemoveOnDrop(&self.refreshes, id);
        let envelope = Envelope::Refresh {
            origin: self.node_id.clone(),
            id,
            connection_id: connection_id.to_owned(),
            user_id: principal.user_id().map(str::to_owned),
            claims: Bytes::from(claims),
        };
        self.backplane
            .publish(&self.channels.connection(connection_id), envelope.encode())
            .await
            .map_err(|e| RefreshError::Backplane(e.to_string()))?;
        crate::metrics::backplane_published();
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(status)) => refresh_result(status),
            Ok(Err(_)) | Err(_) => Err(RefreshError::NotFound),
        }
    }
}

const REFRESH_OK: u8 = 0;
const REFRESH_NOT_FOUND: u8 = 1;
const REFRESH_REJECTED: u8 = 2;

fn refresh_status(result: &Result<(), RefreshError>) -> u8 {
    match result {
        Ok(()) => REFRESH_OK,
        Err(RefreshError::PermissionChangeRejected) => REFRESH_REJECTED,
        Err(_) => REFRESH_NOT_FOUND,
    }
}

fn refresh_result(status: u8) -> Result<(), RefreshError> {
    match status {
        REFRESH_OK => Ok(()),
        REFRESH_REJECTED => Err(RefreshError::PermissionChangeRejected),
        _ => Err(RefreshError::NotFound),
    }
}

/// The principal a refresh envelope describes: its claims, and its user id as the sending node
/// resolved it (which need not be a claim's value).
fn principal_from(claims: &[u8], user_id: Option<String>) -> Option<Principal> {
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(claims).ok()?;
    Some(match user_id {
        Some(user_id) => Principal::with_user_id(claims, user_id),
        None => {
            // No user id: name a claim type the claims do not have.
            let mut absent = String::from("\u{0}");
            while claims.contains_key(&absent) {
                absent.push('\u{0}');
            }
            Principal::new(claims, &absent)
        }
    })
}

struct RemoveOnDrop<'a, V>(&'a DashMap<u64, V>, u64);

impl<V> Drop for RemoveOnDrop<'_, V> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving

async fn receive_loop<B: Backplane>(
    shared: Arc<Shared<B>>,
    mut stream: super::backplane::BackplaneStream,
) {
    while let Some(message) = stream.next().await {
        crate::metrics::backplane_received();
        let envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(target: LOG, channel = %message.channel, %error, "malformed backplane message ignored");
                continue;
            }
        };
        handle(&shared, &message.channel, envelope);
    }
    tracing::debug!(target: LOG, "backplane message stream ended");
}

fn handle<B: Backplane>(shared: &Arc<Shared<B>>, channel: &str, envelope: Envelope) {
    match envelope {
        Envelope::Send {
            origin,
            excluded,
            json,
            msgpack,
            trace,
        } => {
            if origin == shared.node_id {
                return;
            }
            // Traced by the publisher: deliver in a child of its span.
            let span = if trace.is_empty() || crate::trace::propagator().is_none() {
                tracing::Span::none()
            } else {
                let span = tracing::info_span!(
                    target: LOG,
                    parent: None,
                    "backplane receive",
                    otel.kind = "consumer",
                    messaging.destination.name = channel,
                    messaging.operation.type = "receive",
                    signalr.node = %shared.node_id,
                );
                crate::trace::set_parent(&span, &trace);
                span
            };
            let _entered = span.enter();
            let target = match shared.channels.route(channel) {
                Some(Route::All) if excluded.is_empty() => Target::All,
                Some(Route::All) => Target::AllExcept(excluded),
                Some(Route::Group(group)) => Target::GroupExcept(group.to_owned(), excluded),
                Some(Route::User(user)) => Target::User(user.to_owned()),
                Some(Route::Connection(id)) => Target::Connection(id.to_owned()),
                Some(Route::Internal) | None => {
                    tracing::debug!(target: LOG, channel, "send envelope on an unexpected channel");
                    return;
                }
            };
            for handle in shared.local.recipients(&target) {
                let frame = match handle.protocol() {
                    Protocol::Json => &json,
                    Protocol::MessagePack => &msgpack,
                };
                if frame.is_empty() {
                    tracing::warn!(target: LOG, protocol = %handle.protocol(), "message from another node has no frame for this protocol");
                    continue;
                }
                handle.try_send(frame.clone());
            }
        }
        Envelope::Group {
            origin,
            id,
            action,
            group,
            connection_id,
        } => {
            if shared.local.connection(&connection_id).is_none() {
                return;
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                match action {
                    GroupAction::Add => shared.add_local(&connection_id, &group).await,
                    GroupAction::Remove => shared.remove_local(&connection_id, &group).await,
                }
                let ack = Envelope::Ack { id }.encode();
                shared.publish(&shared.channels.ack(&origin), ack).await;
            });
        }
        Envelope::Ack { id } => {
            if let Some((_, tx)) = shared.acks.remove(&id) {
                // The caller may have timed out already.
                let _ = tx.send(());
            }
        }
        Envelope::Invoke {
            origin,
            id,
            connection_id,
            target,
            args,
        } => {
            let Some(handle) = shared.local.connection(&connection_id) else {
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let reply = shared.channels.ret(&origin);
                let accepted = Envelope::Return {
                    id,
                    outcome: ReturnOutcome::Accepted,
                };
                if !shared.publish(&reply, accepted.encode()).await {
                    return;
                }
                let arguments = args_for(handle.protocol(), args);
                let result = match arguments {
                    Ok(arguments) => {
                        shared
                            .local
                            .invoke_local(&connection_id, target, arguments)
                            .await
                    }
                    Err(error) => Err(error),
                };
                let done = Envelope::Return {
                    id,
                    outcome: ReturnOutcome::Done(result),
                };
                shared.publish(&reply, done.encode()).await;
            });
        }
        Envelope::Return { id, outcome } => {
            if let Some(tx) = shared.returns.get(&id).map(|tx| tx.clone()) {
                // At most two answers arrive for a capacity of two; a full or closed queue means
                // the caller has stopped waiting.
                let _ = tx.try_send(outcome);
            }
        }
        Envelope::Refresh {
            origin,
            id,
            connection_id,
            user_id,
            claims,
        } => {
            // Only the node holding the connection answers; the others stay silent.
            let Some(handle) = shared.local.connection(&connection_id) else {
                return;
            };
            let result = match principal_from(&claims, user_id) {
                Some(principal) => handle.refresh_principal(principal),
                None => {
                    tracing::warn!(target: LOG, "malformed claims in a refresh from another node");
                    Err(RefreshError::NotFound)
                }
            };
            let reply = Envelope::Refreshed {
                id,
                status: refresh_status(&result),
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                shared
                    .publish(&shared.channels.ack(&origin), reply.encode())
                    .await;
            });
        }
        Envelope::Refreshed { id, status } => {
            if let Some((_, tx)) = shared.refreshes.remove(&id) {
                // The caller may have timed out already.
                let _ = tx.send(status);
            }
        }
        Envelope::Abort => {
            if let Some(Route::Connection(id)) = shared.channels.route(channel)
                && let Some(handle) = shared.local.connection(id)
            {
                handle.abort();
            }
        }
    }
}

fn args_for(
    protocol: Protocol,
    args: Vec<(Bytes, Bytes)>,
) -> Result<Vec<Payload>, ClientResultError> {
    args.into_iter()
        .map(|(json, msgpack)| match protocol {
            Protocol::Json => String::from_utf8(json.to_vec())
                .map_err(|e| ClientResultError::Send(e.to_string()))
                .and_then(|text| {
                    Payload::from_json_text(text)
                        .map_err(|e| ClientResultError::Send(e.to_string()))
                }),
            Protocol::MessagePack => Ok(Payload::MessagePack(msgpack)),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The lifetime manager

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

// ---------------------------------------------------------------------------------------------
// Envelopes: a small versioned binary format (`u8` kind, then fields; strings and byte strings
// as a `u32` big-endian length and the bytes, ids as `u64` big-endian).

const VERSION: u8 = 1;

/// Marks the optional trace context trailing a `Send` envelope.
const TRACE_CONTEXT: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupAction {
    Add,
    Remove,
}

#[derive(Debug)]
enum ReturnOutcome {
    /// The owning node has the connection and sent it the invocation.
    Accepted,
    /// The client's answer.
    Done(Result<Payload, ClientResultError>),
}

#[derive(Debug)]
enum Envelope {
    Send {
        origin: String,
        excluded: Vec<String>,
        json: Bytes,
        msgpack: Bytes,
        /// The publisher's trace context (`traceparent`, `tracestate`); empty when untraced.
        /// Optional on the wire: a trailing field that older nodes ignore.
        trace: Headers,
    },
    Group {
        origin: String,
        id: u64,
        action: GroupAction,
        group: String,
        connection_id: String,
    },
    Ack {
        id: u64,
    },
    Invoke {
        origin: String,
        id: u64,
        connection_id: String,
        target: String,
        args: Vec<(Bytes, Bytes)>,
    },
    Return {
        id: u64,
        outcome: ReturnOutcome,
    },
    Abort,
    /// An authentication refresh for a connection of another node (JSON claims).
    Refresh {
        origin: String,
        id: u64,
        connection_id: String,
        user_id: Option<String>,
        claims: Bytes,
    },
    /// The owner's answer to a [`Envelope::Refresh`].
    Refreshed {
        id: u64,
        status: u8,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DecodeError(&'static str);

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&v[..len as usize]);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn count(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated envelope"));
        }
        Ok(self.buf.split_to(n))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError("invalid UTF-8"))
    }
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        // Every item takes at least four bytes; refuse counts the buffer cannot hold.
        if n > self.buf.len() / 4 {
            return Err(DecodeError("truncated envelope"));
        }
        Ok(n)
    }
}

const ERR_NOT_FOUND: u8 = 0;
const ERR_DISCONNECTED: u8 = 1;
const ERR_CLIENT: u8 = 2;
const ERR_INVALID_RESULT: u8 = 3;
const ERR_NOT_SINGLE: u8 = 4;
const ERR_SEND: u8 = 5;

impl Envelope {
    fn encode(&self) -> Bytes {
        let mut w = Writer(Vec::with_capacity(64));
        w.u8(VERSION);
        match self {
            Envelope::Send {
                origin,
                excluded,
                json,
                msgpack,
                trace,
            } => {
                w.u8(1);
                w.str(origin);
                w.count(excluded.len());
                for id in excluded.iter().take(u32::MAX as usize) {
                    w.str(id);
                }
                w.bytes(json);
                w.bytes(msgpack);
                if !trace.is_empty() {
                    w.u8(TRACE_CONTEXT);
                    w.count(trace.len());
                    for (key, value) in trace.iter().take(u32::MAX as usize) {
                        w.str(key);
                        w.str(value);
                    }
                }
            }
            Envelope::Group {
                origin,
                id,
                action,
                group,
                connection_id,
            } => {
                w.u8(2);
                w.str(origin);
                w.u64(*id);
                w.u8(match action {
                    GroupAction::Add => 1,
                    GroupAction::Remove => 2,
                });
                w.str(group);
                w.str(connection_id);
            }
            Envelope::Ack { id } => {
                w.u8(3);
                w.u64(*id);
            }
            Envelope::Invoke {
                origin,
                id,
                connection_id,
                target,
                args,
            } => {
                w.u8(4);
                w.str(origin);
                w.u64(*id);
                w.str(connection_id);
                w.str(target);
                w.count(args.len());
                for (json, msgpack) in args.iter().take(u32::MAX as usize) {
                    w.bytes(json);
                    w.bytes(msgpack);
                }
            }
            Envelope::Return { id, outcome } => {
                w.u8(5);
                w.u64(*id);
                match outcome {
                    ReturnOutcome::Accepted => w.u8(0),
                    ReturnOutcome::Done(Ok(payload)) => match payload {
                        Payload::MessagePack(bytes) => {
                            w.u8(2);
                            w.bytes(bytes);
                        }
                        other => {
                            let mut json = Vec::new();
                            match other.write_json(&mut json) {
                                Ok(()) => {
                                    w.u8(1);
                                    w.bytes(&json);
                                }
                                Err(error) => {
                                    w.u8(3);
                                    w.u8(ERR_INVALID_RESULT);
                                    w.str(&error.to_string());
                                }
                            }
                        }
                    },
                    ReturnOutcome::Done(Err(error)) => {
                        w.u8(3);
                        let (kind, text) = match error {
                            ClientResultError::NotFound(id) => (ERR_NOT_FOUND, id.as_str()),
                            ClientResultError::Disconnected => (ERR_DISCONNECTED, ""),
                            ClientResultError::Client(m) => (ERR_CLIENT, m.as_str()),
                            ClientResultError::InvalidResult(m) => (ERR_INVALID_RESULT, m.as_str()),
                            ClientResultError::NotSingleConnection => (ERR_NOT_SINGLE, ""),
                            ClientResultError::Send(m) => (ERR_SEND, m.as_str()),
                        };
                        w.u8(kind);
                        w.str(text);
                    }
                }
            }
            Envelope::Abort => w.u8(6),
            Envelope::Refresh {
                origin,
                id,
                connection_id,
                user_id,
                claims,
            } => {
                w.u8(7);
                w.str(origin);
                w.u64(*id);
                w.str(connection_id);
                match user_id {
                    Some(user_id) => {
                        w.u8(1);
                        w.str(user_id);
                    }
                    None => w.u8(0),
                }
                w.bytes(claims);
            }
            Envelope::Refreshed { id, status } => {
                w.u8(8);
                w.u64(*id);
                w.u8(*status);
            }
        }
        Bytes::from(w.0)
    }

    fn decode(payload: &Bytes) -> Result<Envelope, DecodeError> {
        let mut r = Reader {
            buf: payload.clone(),
        };
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown envelope version"));
        }
        let envelope = match r.u8()? {
            1 => {
                let origin = r.string()?;
                let n = r.count()?;
                let excluded = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
                let json = r.bytes()?;
                let msgpack = r.bytes()?;
                // Envelopes of older nodes end here.
                let trace = if r.buf.is_empty() {
                    Headers::new()
                } else {
                    if r.u8()? != TRACE_CONTEXT {
                        return Err(DecodeError("unknown trailing field"));
                    }
                    let n = r.count()?;
                    if n == 0 {
                        return Err(DecodeError("empty trace context"));
                    }
                    (0..n)
                        .map(|_| Ok((r.string()?, r.string()?)))
                        .collect::<Result<_, DecodeError>>()?
                };
                Envelope::Send {
                    origin,
                    excluded,
                    json,
                    msgpack,
                    trace,
                }
            }
            2 => Envelope::Group {
                origin: r.string()?,
                id: r.u64()?,
                action: match r.u8()? {
                    1 => GroupAction::Add,
                    2 => GroupAction::Remove,
                    _ => return Err(DecodeError("unknown group action")),
                },
                group: r.string()?,
                connection_id: r.string()?,
            },
            3 => Envelope::Ack { id: r.u64()? },
            4 => {
                let origin = r.string()?;
                let id = r.u64()?;
                let connection_id = r.string()?;
                let target = r.string()?;
                let n = r.count()?;
                let args = (0..n)
                    .map(|_| Ok((r.bytes()?, r.bytes()?)))
                    .collect::<Result<_, DecodeError>>()?;
                Envelope::Invoke {
                    origin,
                    id,
                    connection_id,
                    target,
                    args,
                }
            }
            5 => {
                let id = r.u64()?;
                let outcome = match r.u8()? {
                    0 => ReturnOutcome::Accepted,
                    1 => {
                        let text = r.string()?;
                        ReturnOutcome::Done(
                            Payload::from_json_text(text)
                                .map_err(|e| ClientResultError::InvalidResult(e.to_string())),
                        )
                    }
                    2 => ReturnOutcome::Done(Ok(Payload::MessagePack(r.bytes()?))),
                    3 => {
                        let kind = r.u8()?;
                        let text = r.string()?;
                        ReturnOutcome::Done(Err(match kind {
                            ERR_NOT_FOUND => ClientResultError::NotFound(text),
                            ERR_DISCONNECTED => ClientResultError::Disconnected,
                            ERR_CLIENT => ClientResultError::Client(text),
                            ERR_INVALID_RESULT => ClientResultError::InvalidResult(text),
                            ERR_NOT_SINGLE => ClientResultError::NotSingleConnection,
                            _ => ClientResultError::Send(text),
                        }))
                    }
                    _ => return Err(DecodeError("unknown return outcome")),
                };
                Envelope::Return { id, outcome }
            }
            6 => Envelope::Abort,
            7 => Envelope::Refresh {
                origin: r.string()?,
                id: r.u64()?,
                connection_id: r.string()?,
                user_id: match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return Err(DecodeError("invalid user id flag")),
                },
                claims: r.bytes()?,
            },
            8 => Envelope::Refreshed {
                id: r.u64()?,
                status: r.u8()?,
            },
            _ => return Err(DecodeError("unknown envelope kind")),
        };
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifetime::backplane::MemoryBus;
    use signalbox_protocol::{HubMessage, Invocation};
    use tokio_util::sync::CancellationToken;

    struct Conn {
        rx: mpsc::Receiver<Bytes>,
    }

    async fn connect(
        m: &ScaledLifetimeManager<crate::lifetime::MemoryBackplane>,
        id: &str,
        user: Option<&str>,
        protocol: Protocol,
    ) -> Conn {
        let (tx, rx) = mpsc::channel(64);
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
        while conn.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn envelopes_round_trip() {
        let cases = vec![
            Envelope::Send {
                origin: "n1".into(),
                excluded: vec!["a".into(), "b".into()],
                json: Bytes::from_static(b"{}\x1e"),
                msgpack: Bytes::from_static(&[1, 2, 3]),
                trace: Headers::new(),
            },
            Envelope::Group {
                origin: "n1".into(),
                id: 7,
                action: GroupAction::Remove,
                group: "g:1".into(),
                connection_id: "c".into(),
            },
            Envelope::Ack { id: u64::MAX },
            Envelope::Invoke {
                origin: "n".into(),
                id: 3,
                connection_id: "c".into(),
                target: "T".into(),
                args: vec![(Bytes::from_static(b"1"), Bytes::from_static(&[1]))],
            },
            Envelope::Return {
                id: 3,
                outcome: ReturnOutcome::Done(Err(ClientResultError::Client("no".into()))),
            },
            Envelope::Abort,
            Envelope::Refresh {
                origin: "n".into(),
                id: 9,
                connection_id: "c".into(),
                user_id: Some("alice".into()),
                claims: Bytes::from_static(br#"{"sub":"alice"}"#),
            },
            Envelope::Refresh {
                origin: "n".into(),
                id: 10,
                connection_id: "c".into(),
                user_id: None,
                claims: Bytes::from_static(b"{}"),
            },
            Envelope::Refreshed { id: 9, status: 2 },
        ];
        for envelope in cases {
            let bytes = envelope.encode();
            let back = Envelope::decode(&bytes).unwrap();
            assert_eq!(format!("{envelope:?}"), format!("{back:?}"));
            for cut in 0..bytes.len() {
                assert!(
                    Envelope::decode(&bytes.slice(..cut)).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    fn send_envelope(trace: Headers) -> Envelope {
        Envelope::Send {
            origin: "n1".into(),
            excluded: vec!["a".into()],
            json: Bytes::from_static(b"{}\x1e"),
            msgpack: Bytes::from_static(&[1, 2, 3]),
            trace,
        }
    }

    #[test]
    fn traced_send_envelopes() {
        let trace: Headers = [
            (
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            ),
            ("tracestate".to_owned(), "congo=t61rcWkgMzE".to_owned()),
        ]
        .into();
        let traced = send_envelope(trace).encode();
        let untraced = send_envelope(Headers::new()).encode();
        assert!(traced.starts_with(&untraced), "the trace context trails");
        let back = Envelope::decode(&traced).unwrap();
        assert_eq!(
            format!("{back:?}"),
            format!("{:?}", send_envelope(trace_of(&back)))
        );
        assert_eq!(trace_of(&back).len(), 2);
        // An envelope of an older node (no trailing field) still decodes, untraced.
        let old = Envelope::decode(&untraced).unwrap();
        assert!(trace_of(&old).is_empty());
        // Any other cut of the trailing field is an error, as are unknown trailing fields.
        for cut in untraced.len() + 1..traced.len() {
            assert!(
                Envelope::decode(&traced.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut unknown = untraced.to_vec();
        unknown.push(9);
        assert!(Envelope::decode(&Bytes::from(unknown)).is_err());
        let mut empty = untraced.to_vec();
        empty.extend_from_slice(&[TRACE_CONTEXT, 0, 0, 0, 0]);
        assert!(Envelope::decode(&Bytes::from(empty)).is_err());
    }

    fn trace_of(envelope: &Envelope) -> Headers {
        match envelope {
            Envelope::Send { trace, .. } => trace.clone(),
            _ => Headers::new(),
        }
    }

    fn principal(claims: serde_json::Value) -> Principal {
        let serde_json::Value::Object(map) = claims else {
            unreachable!()
        };
        Principal::new(map, "sub")
    }

    #[test]
    fn refresh_principals_cross_intact() {
        let p = principal(serde_json::json!({"sub": "alice", "exp": 5, "r": ["a", "b"]}));
        let claims = serde_json::to_vec(p.claims()).unwrap();
        let back = principal_from(&claims, p.user_id().map(str::to_owned)).unwrap();
        assert_eq!(back, p);
        let anonymous = principal(serde_json::json!({"x": 1, "\u{0}": "y"}));
        let claims = serde_json::to_vec(anonymous.claims()).unwrap();
        let back = principal_from(&claims, None).unwrap();
        assert_eq!(back, anonymous);
        assert_eq!(back.user_id(), None);
        assert!(principal_from(b"[1]", None).is_none());
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
        let (tx, _rx) = mpsc::channel(8);
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
