//! The servers under test: signalbox with an authenticated hub, and the bare tokio-tungstenite
//! broadcast server (no SignalR) that is the floor for any server on this machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use signalbox::{
    Caller, ConnectionOptions, Hub, HubContext, HubError, HubOptions, HubRouterExt, JwtAuth,
    Policy, TransportType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::wire::{HUB_PATH, MSG_TARGET, Publish};

/// WebSocket buffer sizes shared by both servers (signalbox's defaults), so that memory compares.
pub const READ_BUFFER_SIZE: usize = 1024;
/// See [`READ_BUFFER_SIZE`].
pub const WRITE_BUFFER_SIZE: usize = 4 * 1024;
/// Frames queued per connection before the bare server drops messages for it.
pub const QUEUE: usize = 1024;

type Msg = (u64, u64, u64, String);

fn msg(p: Publish) -> Msg {
    (p.t, p.phase, p.seq, p.pad)
}

/// The signalbox hub of the benchmark: authenticated (HS256) unless `auth` is `None` (an
/// experiment: what authentication costs per connection), `JoinGroup`, and hub-side sends.
pub fn bench_hub(auth: Option<JwtAuth>, options: HubOptions) -> Hub {
    let builder = Hub::builder("bench")
        .options(options)
        .connection_options(ConnectionOptions::default().transports([TransportType::WebSockets]));
    let builder = match auth {
        Some(auth) => builder
            .authentication(auth)
            .authorize(Policy::authenticated()),
        None => builder,
    };
    builder
        .method("JoinGroup", |c: Caller, (group,): (String,)| async move {
            c.groups().add(c.connection_id(), &group).await?;
            Ok::<_, HubError>(())
        })
        .method(
            "Broadcast",
            |c: Caller, (t, phase, seq, pad): Msg| async move {
                c.clients()
                    .all()
                    .send(MSG_TARGET, (t, phase, seq, pad))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroup",
            |c: Caller, (group, t, phase, seq, pad): (String, u64, u64, u64, String)| async move {
                c.clients()
                    .group(group)
                    .send(MSG_TARGET, (t, phase, seq, pad))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToUser",
            |c: Caller, (user, t, phase, seq, pad): (String, u64, u64, u64, String)| async move {
                c.clients()
                    .user(user)
                    .send(MSG_TARGET, (t, phase, seq, pad))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .build()
}

#[derive(Clone)]
struct SignalboxState {
    auth: JwtAuth,
    hub: HubContext,
}

async fn sb_send(state: &SignalboxState, headers: &HeaderMap, p: Publish) -> StatusCode {
    if state.auth.authenticate(headers, None, false).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let clients = state.hub.clients();
    let proxy = match (&p.user, &p.group) {
        (Some(user), _) => clients.user(user.clone()),
        (None, Some(group)) => clients.group(group.clone()),
        (None, None) => clients.all(),
    };
    match proxy.send(MSG_TARGET, msg(p)).await {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn sb_broadcast(
    State(s): State<SignalboxState>,
    headers: HeaderMap,
    Json(mut p): Json<Publish>,
) -> StatusCode {
    p.user = None;
    p.group = None;
    sb_send(&s, &headers, p).await
}

async fn sb_group(
    State(s): State<SignalboxState>,
    headers: HeaderMap,
    Json(mut p): Json<Publish>,
) -> StatusCode {
    if p.group.is_none() {
        return StatusCode::BAD_REQUEST;
    }
    p.user = None;
    sb_send(&s, &headers, p).await
}

async fn sb_publish(
    State(s): State<SignalboxState>,
    headers: HeaderMap,
    Json(p): Json<Publish>,
) -> StatusCode {
    if p.user.is_none() {
        return StatusCode::BAD_REQUEST;
    }
    sb_send(&s, &headers, p).await
}

/// The signalbox target's router: the hub at [`HUB_PATH`] and the authenticated publish API
/// (`POST /broadcast`, `/group`, `/publish`).
pub fn signalbox_app(secret: &str, anonymous_hub: bool) -> anyhow::Result<Router> {
    let auth = JwtAuth::hs256(secret).context("invalid JWT secret")?;
    let hub = bench_hub(
        (!anonymous_hub).then(|| auth.clone()),
        HubOptions::default(),
    );
    let state = SignalboxState {
        auth,
        hub: hub.context(),
    };
    Ok(Router::new()
        .route("/broadcast", post(sb_broadcast))
        .route("/group", post(sb_group))
        .route("/publish", post(sb_publish))
        .with_state(state)
        .map_hub(HUB_PATH, hub))
}

/// Serves the signalbox target on `listener`.
pub async fn serve_signalbox(
    listener: TcpListener,
    secret: &str,
    anonymous_hub: bool,
) -> anyhow::Result<()> {
    axum::serve(listener, signalbox_app(secret, anonymous_hub)?).await?;
    Ok(())
}

#[derive(Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, BareConn>,
    users: HashMap<String, Vec<u64>>,
    groups: HashMap<String, Vec<u64>>,
}

struct BareConn {
    tx: mpsc::Sender<Message>,
    user: Option<String>,
    group: Option<String>,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bare_send(registry: &Shared, p: &Publish) -> StatusCode {
    let text = Message::text(p.bare_text());
    let reg = lock(registry);
    let send = |id: &u64| {
        if let Some(conn) = reg.conns.get(id) {
            let _ = conn.tx.try_send(text.clone());
        }
    };
    match (&p.user, &p.group) {
        (Some(user), _) => reg.users.get(user).into_iter().flatten().for_each(send),
        (None, Some(group)) => reg.groups.get(group).into_iter().flatten().for_each(send),
        (None, None) => reg.conns.values().for_each(|conn| {
            let _ = conn.tx.try_send(text.clone());
        }),
    }
    StatusCode::ACCEPTED
}

async fn bare_http(State(r): State<Shared>, Json(p): Json<Publish>) -> StatusCode {
    bare_send(&r, &p)
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
async fn bare_connection(stream: TcpStream, registry: Shared) {
    let _ = stream.set_nodelay(true);
    let mut query = String::new();
    let callback = |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or_default().to_owned();
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_write_buffer_size(usize::MAX);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let id = {
        let mut reg = lock(&registry);
        reg.next += 1;
        let id = reg.next;
        let user = query_value(&query, "user");
        let group = query_value(&query, "group");
        if let Some(user) = &user {
            reg.users.entry(user.clone()).or_default().push(id);
        }
        if let Some(group) = &group {
            reg.groups.entry(group.clone()).or_default().push(id);
        }
        reg.conns.insert(id, BareConn { tx, user, group });
        id
    };
    drop(query);
    // One task per connection: reads are discarded, queued frames are fed and flushed together.
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => {
                let Some(first) = out else { break };
                let mut ok = ws.feed(first).await.is_ok();
                while ok {
                    match rx.try_recv() {
                        Ok(next) => ok = ws.feed(next).await.is_ok(),
                        Err(_) => break,
                    }
                }
                if !ok || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let mut reg = lock(&registry);
    let Some(conn) = reg.conns.remove(&id) else {
        return;
    };
    if let Some(ids) = conn.user.and_then(|u| reg.users.get_mut(&u)) {
        ids.retain(|x| *x != id);
    }
    if let Some(ids) = conn.group.and_then(|g| reg.groups.get_mut(&g)) {
        ids.retain(|x| *x != id);
    }
}

/// Serves the bare WebSocket broadcast server on `ws_listener` and its publish API (same JSON
/// bodies, no authentication) on `http_listener`.
pub async fn serve_bare(
    ws_listener: TcpListener,
    http_listener: TcpListener,
) -> anyhow::Result<()> {
    let registry: Shared = Arc::default();
    let app = Router::new()
        .route("/broadcast", post(bare_http))
        .route("/group", post(bare_http))
        .route("/publish", post(bare_http))
        .with_state(registry.clone());
    tokio::spawn(async move {
        let _ = axum::serve(http_listener, app).await;
    });
    loop {
        let (stream, _) = match ws_listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(bare_connection(stream, registry.clone()));
    }
}

/// Binds `addr` with a large accept backlog.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(4096)?)
}
