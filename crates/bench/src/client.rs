//! The generator's worker process: opens its share of connections (raw SignalR over
//! tokio-tungstenite, or plain WebSockets for the bare target) from several source addresses,
//! records handshake and delivery latencies, and talks to the coordinator over stdin/stdout in
//! JSON lines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use signalbox_protocol::{
    CompletionOutcome, HubMessage, Invocation, Payload, Protocol, handshake_request,
    parse_handshake_response,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hist::{Histogram, SparseHistogram};
use crate::sys::now_us;
use crate::wire::{
    Kind, MSG_TARGET, NOTIFICATION_TARGET, Proto, REPLAY_MESSAGE, group_of, parse_bare,
    parse_bench_message, service_token, token, user_of,
};

/// What one worker process does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Server kind.
    pub kind: Kind,
    /// Hub protocol (ignored by the bare target).
    pub proto: Proto,
    /// WebSocket address of the server.
    pub addr: SocketAddr,
    /// Several servers (a cluster): connection `index` goes to `addrs[index % len]`; empty =
    /// `addr` only.
    #[serde(default)]
    pub addrs: Vec<SocketAddr>,
    /// Index of this worker's first connection (user `u<index>`).
    pub first: usize,
    /// Connections to open.
    pub count: usize,
    /// Source addresses to bind, round robin.
    pub sources: Vec<Ipv4Addr>,
    /// JWT secret (SignalR targets).
    pub secret: String,
    /// Groups to join (`g<index % groups>`); 0 = none.
    pub groups: usize,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// SignalR connects start with `POST {hub}/negotiate?negotiateVersion=1` and connect with
    /// the connection token it returns, as the official clients do.
    #[serde(default)]
    pub negotiate: bool,
}

/// Events a worker writes to stdout, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// During the ramp.
    Progress {
        /// Connections up.
        connected: u64,
        /// Connections that failed.
        failed: u64,
    },
    /// The ramp is over.
    Ramped {
        /// Connections up.
        connected: u64,
        /// Connections that failed.
        failed: u64,
        /// Time from the first attempt to the last completion.
        secs: f64,
        /// TCP connect + WebSocket upgrade + SignalR handshake, microseconds.
        handshake: SparseHistogram,
        /// The first few failure reasons.
        errors: Vec<String>,
    },
    /// Answer to `report`.
    Report {
        /// Current phase.
        phase: u64,
        /// Messages of this phase received.
        received: u64,
        /// Publish-to-receive latency, microseconds.
        latency: SparseHistogram,
        /// First receive of the phase, µs since the epoch.
        first_us: u64,
        /// Last receive of the phase, µs since the epoch.
        last_us: u64,
        /// Connections closed by the server or dropped since the ramp.
        closed: u64,
        /// Messages of this phase a connection received more than once (service target).
        #[serde(default)]
        duplicates: u64,
        /// Connections that received their inbox replay (service target; since the start).
        #[serde(default)]
        replays: u64,
        /// Time the last of those replays arrived, µs since the epoch.
        #[serde(default)]
        replay_last_us: u64,
    },
}

#[derive(Default)]
struct Stats {
    phase: u64,
    received: u64,
    latency: Histogram,
    first_us: u64,
    last_us: u64,
    duplicates: u64,
    replays: u64,
    replay_last_us: u64,
}

impl Stats {
    fn record(&mut self, t: u64, phase: u64) {
        if phase != self.phase {
            return;
        }
        let now = now_us();
        self.latency.record(now.saturating_sub(t));
        self.received += 1;
        if self.first_us == 0 {
            self.first_us = now;
        }
        self.last_us = now;
    }
}

/// What one connection to the service remembers: which messages of the current phase it got
/// (duplicate detection) and whether its replay arrived.
#[derive(Default)]
struct Seen {
    phase: u64,
    bits: Vec<u64>,
    replayed: bool,
}

impl Seen {
    /// Marks `seq` of `phase`; false if it was seen before.
    fn mark(&mut self, phase: u64, seq: u64) -> bool {
        if phase != self.phase {
            self.phase = phase;
            self.bits.clear();
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
}

/// The `message` of a `Notification` argument.
#[derive(Deserialize)]
struct NotificationText {
    message: String,
}

type SharedStats = Arc<Mutex<Stats>>;

fn lock(stats: &SharedStats) -> std::sync::MutexGuard<'_, Stats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

fn frame(protocol: Protocol, bytes: Vec<u8>) -> anyhow::Result<Message> {
    Ok(match protocol {
        Protocol::Json => Message::text(String::from_utf8(bytes)?),
        Protocol::MessagePack => Message::binary(bytes),
    })
}

async fn next_data(ws: &mut Ws) -> anyhow::Result<Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Bytes::from(t)),
            Some(Ok(Message::Binary(b))) => return Ok(b),
            Some(Ok(Message::Close(c))) => bail!("closed by server: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// One open connection, after the handshake.
struct Open {
    ws: Ws,
    buf: BytesMut,
    handshake_us: u64,
}

/// `POST {hub}/negotiate?negotiateVersion=1` with a bearer token: the connection token.
async fn negotiate(
    http: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    access_token: &str,
) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Negotiated {
        connection_token: String,
    }
    let response = http
        .post(format!("http://{addr}{path}/negotiate?negotiateVersion=1"))
        .bearer_auth(access_token)
        .send()
        .await
        .context("negotiate")?
        .error_for_status()
        .context("negotiate")?;
    Ok(response.json::<Negotiated>().await?.connection_token)
}

async fn open(spec: &WorkerSpec, http: &reqwest::Client, index: usize) -> anyhow::Result<Open> {
    let started = Instant::now();
    let socket = TcpSocket::new_v4()?;
    if !spec.sources.is_empty() {
        let source = spec.sources[index % spec.sources.len()];
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .with_context(|| format!("bind {source}"))?;
    }
    let addr = if spec.addrs.is_empty() {
        spec.addr
    } else {
        spec.addrs[index % spec.addrs.len()]
    };
    let user = user_of(index);
    let access_token = match spec.kind {
        Kind::Service => service_token(&spec.secret, &user, &serde_json::Map::new())?,
        kind if kind.is_signalr() => token(&spec.secret, &user)?,
        _ => String::new(),
    };
    let connection = if spec.negotiate && spec.kind.is_signalr() {
        let id = negotiate(http, addr, spec.kind.hub_path(), &access_token).await?;
        format!("id={id}&")
    } else {
        String::new()
    };
    let stream = socket.connect(addr).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let url = if spec.kind.is_signalr() {
        format!(
            "ws://{addr}{}?{connection}access_token={access_token}",
            spec.kind.hub_path(),
        )
    } else {
        let mut url = format!("ws://{addr}/?user={user}");
        if spec.groups > 0 {
            url.push_str(&format!("&group={}", group_of(index, spec.groups)));
        }
        url
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .context("websocket upgrade")?;
    let mut buf = BytesMut::new();
    if spec.kind.is_signalr() {
        let protocol = spec.proto.protocol();
        let request = handshake_request(protocol, 1);
        ws.send(Message::text(String::from_utf8(request.to_vec())?))
            .await?;
        loop {
            buf.extend_from_slice(&next_data(&mut ws).await?);
            match parse_handshake_response(&mut buf).map_err(|e| anyhow!("{e}"))? {
                Some(Ok(())) => break,
                Some(Err(e)) => bail!("handshake refused: {e}"),
                None => {}
            }
        }
    }
    let handshake_us = started.elapsed().as_micros() as u64;
    if spec.kind.is_signalr() && spec.groups > 0 {
        join_group(
            &mut ws,
            &mut buf,
            spec.proto.protocol(),
            &group_of(index, spec.groups),
        )
        .await?;
    }
    Ok(Open {
        ws,
        buf,
        handshake_us,
    })
}

async fn join_group(
    ws: &mut Ws,
    buf: &mut BytesMut,
    protocol: Protocol,
    group: &str,
) -> anyhow::Result<()> {
    let mut invocation = Invocation::new("JoinGroup", vec![Payload::new(group.to_owned())]);
    invocation.invocation_id = Some("1".to_owned());
    let mut out = Vec::new();
    protocol.encode(&HubMessage::Invocation(invocation), &mut out)?;
    ws.send(frame(protocol, out)?).await?;
    loop {
        while let Some(message) = protocol.decode(buf, None)? {
            if let HubMessage::Completion(c) = message {
                if let CompletionOutcome::Error(e) = c.outcome {
                    bail!("JoinGroup failed: {e}");
                }
                return Ok(());
            }
        }
        buf.extend_from_slice(&next_data(ws).await?);
    }
}

fn handle_notification(inv: &Invocation, seen: &mut Seen, stats: &SharedStats) {
    let Some(text) = inv
        .arguments
        .first()
        .and_then(|a| a.deserialize::<NotificationText>().ok())
    else {
        return;
    };
    if text.message == REPLAY_MESSAGE {
        if !seen.replayed {
            seen.replayed = true;
            let mut s = lock(stats);
            s.replays += 1;
            s.replay_last_us = s.replay_last_us.max(now_us());
        }
        return;
    }
    let Some((t, phase, seq)) = parse_bench_message(&text.message) else {
        return;
    };
    let mut s = lock(stats);
    if phase != s.phase {
        return;
    }
    if seen.mark(phase, seq) {
        s.record(t, phase);
    } else {
        s.duplicates += 1;
    }
}

fn handle(
    kind: Kind,
    protocol: Protocol,
    buf: &mut BytesMut,
    data: &[u8],
    stats: &SharedStats,
    seen: &mut Seen,
) -> bool {
    if !kind.is_signalr() {
        if let Some((t, phase)) = parse_bare(data) {
            lock(stats).record(t, phase);
        }
        return true;
    }
    buf.extend_from_slice(data);
    loop {
        match protocol.decode(buf, None) {
            Ok(Some(HubMessage::Invocation(inv)))
                if kind == Kind::Service && inv.target == NOTIFICATION_TARGET =>
            {
                handle_notification(&inv, seen, stats);
            }
            Ok(Some(HubMessage::Invocation(inv))) if inv.target == MSG_TARGET => {
                let t = inv
                    .arguments
                    .first()
                    .and_then(|a| a.deserialize::<u64>().ok());
                let phase = inv
                    .arguments
                    .get(1)
                    .and_then(|a| a.deserialize::<u64>().ok());
                if let (Some(t), Some(phase)) = (t, phase) {
                    lock(stats).record(t, phase);
                }
            }
            Ok(Some(HubMessage::Close(_))) | Err(_) => return false,
            Ok(Some(_)) => {}
            Ok(None) => return true,
        }
    }
}

async fn run_connection(
    mut conn: Open,
    kind: Kind,
    protocol: Protocol,
    stats: SharedStats,
    closed: Arc<AtomicU64>,
    index: usize,
) {
    // SignalR servers close clients that send nothing for 30 s: ping every 10 s, staggered.
    let period = Duration::from_secs(10);
    let offset = Duration::from_millis((index as u64 * 7919) % 10_000);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    let mut ping_bytes = Vec::new();
    let _ = protocol.encode(&HubMessage::Ping, &mut ping_bytes);
    let mut seen = Seen::default();
    // The replay can arrive in the same read as the handshake response.
    if kind == Kind::Service && !conn.buf.is_empty() {
        handle(kind, protocol, &mut conn.buf, &[], &stats, &mut seen);
    }
    loop {
        tokio::select! {
            message = conn.ws.next() => {
                let ok = match message {
                    Some(Ok(Message::Text(t))) => handle(kind, protocol, &mut conn.buf, t.as_bytes(), &stats, &mut seen),
                    Some(Ok(Message::Binary(b))) => handle(kind, protocol, &mut conn.buf, &b, &stats, &mut seen),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => false,
                    Some(Ok(_)) => true,
                };
                if !ok {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            _ = ping.tick(), if kind.is_signalr() => {
                let Ok(message) = frame(protocol, ping_bytes.clone()) else { return };
                if conn.ws.send(message).await.is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

fn emit(out: &mut Vec<u8>, event: &WorkerEvent) {
    if let Ok(line) = serde_json::to_string(event) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

async fn write_event(stdout: &mut tokio::io::Stdout, event: &WorkerEvent) -> anyhow::Result<()> {
    let mut out = Vec::new();
    emit(&mut out, event);
    stdout.write_all(&out).await?;
    stdout.flush().await?;
    Ok(())
}

/// Runs a worker process until the coordinator says `quit` (or closes stdin).
pub async fn run_worker(spec: WorkerSpec) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    let spec = Arc::new(spec);
    let stats: SharedStats = Arc::default();
    let closed = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let handshakes = Arc::new(Mutex::new(Histogram::default()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let semaphore = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut stdout = tokio::io::stdout();
    let started = Instant::now();
    // Keep-alive connections for negotiate, as many as connects in flight.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.concurrency.max(1))
        .tcp_nodelay(true)
        .build()?;
    let mut ramp = tokio::task::JoinSet::new();
    for i in 0..spec.count {
        let index = spec.first + i;
        let http = http.clone();
        let (spec, stats, closed, connected, failed, handshakes, errors, semaphore) = (
            spec.clone(),
            stats.clone(),
            closed.clone(),
            connected.clone(),
            failed.clone(),
            handshakes.clone(),
            errors.clone(),
            semaphore.clone(),
        );
        ramp.spawn(async move {
            let Ok(permit) = semaphore.acquire_owned().await else {
                return;
            };
            let result =
                tokio::time::timeout(Duration::from_secs(30), open(&spec, &http, index)).await;
            drop(permit);
            match result.unwrap_or_else(|_| Err(anyhow!("timed out after 30 s"))) {
                Ok(conn) => {
                    handshakes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .record(conn.handshake_us);
                    connected.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(run_connection(
                        conn,
                        spec.kind,
                        spec.proto.protocol(),
                        stats,
                        closed,
                        index,
                    ));
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut errors = errors
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if errors.len() < 5 {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            done = ramp.join_next() => if done.is_none() { break },
            _ = tick.tick() => {
                write_event(&mut stdout, &WorkerEvent::Progress {
                    connected: connected.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                }).await?;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let handshake = handshakes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .sparse();
    let errors = errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    write_event(
        &mut stdout,
        &WorkerEvent::Ramped {
            connected: connected.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            secs,
            handshake,
            errors,
        },
    )
    .await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("phase") => {
                let phase = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let mut s = lock(&stats);
                // Replays count from the start, across phases.
                *s = Stats {
                    phase,
                    replays: s.replays,
                    replay_last_us: s.replay_last_us,
                    ..Stats::default()
                };
            }
            Some("report") => {
                let event = {
                    let s = lock(&stats);
                    WorkerEvent::Report {
                        phase: s.phase,
                        received: s.received,
                        latency: s.latency.sparse(),
                        first_us: s.first_us,
                        last_us: s.last_us,
                        closed: closed.load(Ordering::Relaxed),
                        duplicates: s.duplicates,
                        replays: s.replays,
                        replay_last_us: s.replay_last_us,
                    }
                };
                write_event(&mut stdout, &event).await?;
            }
            Some("quit") | None => break,
            Some(_) => {}
        }
    }
    Ok(())
}
