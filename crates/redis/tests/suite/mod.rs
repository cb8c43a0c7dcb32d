//! The backplane test suite, run against every driver (`backplane_tests!(Driver)` in
//! `crates/redis/tests/backplane.rs` and `crates/nats/tests/backplane.rs`): three in-process nodes
//! (axum servers on 127.0.0.1:0, each hub with a `ScaledLifetimeManager`) and raw WebSocket
//! SignalR clients spread over them.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signalbox::lifetime::{ClientResultError, ScaledOptions};
use signalbox::protocol::{
    Completion, HubMessage, Payload, Protocol, handshake_request, parse_handshake_response,
};
use signalbox::{
    Backplane, Caller, Hub, HubContext, HubError, HubRouterExt, JwtAuth, ScaledLifetimeManager,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &str = "backplane-test-secret-backplane-test-secret";

/// One backplane driver under test.
pub trait Driver: Send + Sync + 'static {
    type B: Backplane;
    /// The shared local server (started by scripts/services.sh).
    fn shared_port() -> u16;
    /// The driver's URL for a server on `port`.
    fn url(port: u16) -> String;
    /// Connects a driver (without waiting for the connection).
    fn connect(url: String) -> impl Future<Output = Self::B> + Send;
    /// Starts a private server on `port` as a child process.
    fn spawn_server(port: u16) -> tokio::process::Child;
}

/// Generates the suite's tests for a driver.
#[macro_export]
macro_rules! backplane_tests {
    ($driver:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_target_delivers_exactly_once() {
            suite::every_target_delivers_exactly_once::<$driver>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn remote_group_changes_are_acknowledged() {
            suite::remote_group_changes_are_acknowledged::<$driver>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn client_results_across_nodes() {
            suite::client_results_across_nodes::<$driver>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn recovers_after_server_restart() {
            suite::recovers_after_server_restart::<$driver>().await;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Nodes

pub struct Node<B: Backplane> {
    pub addr: SocketAddr,
    pub manager: Arc<ScaledLifetimeManager<B>>,
    pub context: HubContext,
}

pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sbtest-{test}-{}-{nanos}", std::process::id())
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub async fn start_node<B: Backplane>(backplane: B, prefix: &str, name: &str) -> Node<B> {
    let options = ScaledOptions::default()
        .node_id(name)
        .ack_timeout(Duration::from_secs(2));
    let manager = Arc::new(ScaledLifetimeManager::with_options(
        backplane, prefix, options,
    ));
    let hub = Hub::builder("test")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .lifetime_manager(manager.clone())
        // Runs once the lifetime manager has registered the connection (and subscribed to its
        // channels); the handshake response goes out before that, so clients wait for this.
        .on_connected(|caller: Caller| async move {
            caller.clients().caller().send("Welcome", ()).await?;
            Ok::<_, HubError>(())
        })
        .build();
    let context = hub.context();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    Node {
        addr,
        manager,
        context,
    }
}

pub async fn start_nodes<D: Driver>(url: &str, prefix: &str) -> Vec<Node<D::B>> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let backplane = D::connect(url.to_owned()).await;
        nodes.push(start_node(backplane, prefix, &format!("node{i}")).await);
    }
    for node in &nodes {
        wait_healthy(node, true).await;
    }
    nodes
}

pub async fn wait_healthy<B: Backplane>(node: &Node<B>, healthy: bool) {
    let mut health = node.manager.health();
    tokio::time::timeout(
        Duration::from_secs(20),
        health.wait_for(|s| s.is_connected() == healthy),
    )
    .await
    .unwrap_or_else(|_| panic!("backplane health did not become {healthy}"))
    .unwrap();
    assert_eq!(node.manager.is_healthy(), healthy);
}

pub async fn require_server(port: u16) {
    if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        panic!("no server on 127.0.0.1:{port}; run scripts/services.sh first");
    }
}

pub fn token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket SignalR client (the approach of crates/signalbox/tests/common/mod.rs)

async fn http_post(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "negotiate: {head}");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    serde_json::from_slice(&body).unwrap()
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub id: String,
    pub protocol: Protocol,
    ws: Ws,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr, user: Option<&str>, protocol: Protocol) -> Client {
        let mut headers = Vec::new();
        let mut query = String::new();
        if let Some(user) = user {
            let token = token(user);
            headers.push(("Authorization", format!("Bearer {token}")));
            query = format!("&access_token={token}");
        }
        let negotiate = http_post(addr, "/hub/negotiate?negotiateVersion=1", &headers).await;
        let id = negotiate["connectionId"].as_str().unwrap().to_owned();
        let conn_token = negotiate["connectionToken"].as_str().unwrap().to_owned();
        let url = format!("ws://{addr}/hub?id={conn_token}{query}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut client = Client {
            id,
            protocol,
            ws,
            buf: BytesMut::new(),
        };
        let request = handshake_request(protocol, 1);
        client
            .ws
            .send(Message::Text(
                String::from_utf8(request.to_vec()).unwrap().into(),
            ))
            .await
            .unwrap();
        loop {
            if let Some(result) = parse_handshake_response(&mut client.buf).unwrap() {
                result.unwrap();
                break;
            }
            let frame = client
                .next_frame(Duration::from_secs(10))
                .await
                .expect("no handshake response");
            client.buf.extend_from_slice(&frame);
        }
        match client.recv(Duration::from_secs(10)).await {
            Some(HubMessage::Invocation(invocation)) if invocation.target == "Welcome" => {}
            other => panic!("expected the Welcome message, got {other:?}"),
        }
        client
    }

    async fn next_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await.ok()? {
                Some(Ok(Message::Text(t))) => return Some(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next message other than a Ping, or `None` after `wait` of silence.
    pub async fn recv(&mut self, wait: Duration) -> Option<HubMessage> {
        loop {
            if let Some(message) = self.protocol.decode(&mut self.buf, None).unwrap() {
                if matches!(message, HubMessage::Ping) {
                    continue;
                }
                return Some(message);
            }
            let frame = self.next_frame(wait).await?;
            self.buf.extend_from_slice(&frame);
        }
    }

    /// The first argument of every `M` invocation received until `wait` of silence.
    pub async fn drain(&mut self, wait: Duration) -> Vec<String> {
        let mut tags = Vec::new();
        while let Some(message) = self.recv(wait).await {
            if let HubMessage::Invocation(invocation) = message {
                assert_eq!(invocation.target, "M");
                tags.push(invocation.arguments[0].deserialize::<String>().unwrap());
            }
        }
        tags.sort();
        tags
    }

    pub async fn send(&mut self, message: &HubMessage) {
        let bytes = self.protocol.encode_to_bytes(message).unwrap().to_vec();
        let frame = match self.protocol {
            Protocol::Json => Message::Text(String::from_utf8(bytes).unwrap().into()),
            Protocol::MessagePack => Message::Binary(bytes.into()),
        };
        self.ws.send(frame).await.unwrap();
    }

    /// Answers the next client-result invocation with `answer(target, arguments)`.
    pub async fn answer_invocation(
        &mut self,
        answer: impl FnOnce(&str, &[Payload]) -> Completion,
    ) -> String {
        loop {
            match self.recv(Duration::from_secs(10)).await {
                Some(HubMessage::Invocation(invocation)) => {
                    let id = invocation.invocation_id.clone().expect("an invocation id");
                    let mut completion = answer(&invocation.target, &invocation.arguments);
                    completion.invocation_id = id;
                    self.send(&HubMessage::Completion(completion)).await;
                    return invocation.target;
                }
                Some(_) => {}
                None => panic!("no client-result invocation arrived"),
            }
        }
    }
}

const QUIET: Duration = Duration::from_millis(400);

async fn send<B: Backplane>(node: &Node<B>, target: signalbox::Target, tag: &str) {
    let clients = node.context.clients();
    let proxy = match target {
        signalbox::Target::All => clients.all(),
        signalbox::Target::AllExcept(ids) => clients.all_except(ids),
        signalbox::Target::Connection(id) => clients.client(id),
        signalbox::Target::Connections(ids) => clients.clients(ids),
        signalbox::Target::Group(g) => clients.group(g),
        signalbox::Target::Groups(gs) => clients.groups(gs),
        signalbox::Target::GroupExcept(g, ids) => clients.group_except(g, ids),
        signalbox::Target::User(u) => clients.user(u),
        signalbox::Target::Users(us) => clients.users(us),
        other => panic!("unexpected target {other:?}"),
    };
    proxy.send("M", (tag.to_owned(),)).await.unwrap();
}

fn expect(pairs: &[(&str, &[usize])], clients: usize) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); clients];
    for (tag, recipients) in pairs {
        for &r in *recipients {
            out[r].push((*tag).to_owned());
        }
    }
    for tags in &mut out {
        tags.sort();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tests

pub async fn every_target_delivers_exactly_once<D: Driver>() {
    require_server(D::shared_port()).await;
    let prefix = unique_prefix("targets");
    let nodes = start_nodes::<D>(&D::url(D::shared_port()), &prefix).await;
    // c0 on node0 (alice, JSON); c1 (alice, MessagePack) and c2 (bob, JSON) on node1; c3
    // (anonymous, MessagePack) on node2.
    let mut c = vec![
        Client::connect(nodes[0].addr, Some("alice"), Protocol::Json).await,
        Client::connect(nodes[1].addr, Some("alice"), Protocol::MessagePack).await,
        Client::connect(nodes[1].addr, Some("bob"), Protocol::Json).await,
        Client::connect(nodes[2].addr, None, Protocol::MessagePack).await,
    ];
    let ids: Vec<String> = c.iter().map(|c| c.id.clone()).collect();
    let groups0 = nodes[0].context.groups();
    let groups2 = nodes[2].context.groups();
    // g1 = {c0, c2, c3}: c0 added from node2 (remote), c2 from node0 (remote), c3 locally.
    groups2.add(&ids[0], "g1").await.unwrap();
    groups0.add(&ids[2], "g1").await.unwrap();
    groups2.add(&ids[3], "g1").await.unwrap();
    // Idempotent, also across nodes.
    groups0.add(&ids[2], "g1").await.unwrap();
    // g.2 = {c1} (a name with a dot and a space: escaped for NATS).
    groups0.add(&ids[1], "g.2 x").await.unwrap();

    use signalbox::Target::*;
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    send(&nodes[0], All, "all").await;
    send(&nodes[0], AllExcept(s(&[&ids[1], &ids[3]])), "all-except").await;
    send(&nodes[0], Connection(ids[2].clone()), "conn-remote").await;
    send(&nodes[0], Connection(ids[0].clone()), "conn-local").await;
    send(
        &nodes[0],
        Connections(s(&[&ids[1], &ids[3], &ids[0]])),
        "conns",
    )
    .await;
    send(&nodes[0], Group("g1".into()), "group").await;
    send(&nodes[0], Groups(s(&["g1", "g.2 x"])), "groups").await;
    send(
        &nodes[0],
        GroupExcept("g1".into(), s(&[&ids[3]])),
        "group-except",
    )
    .await;
    send(&nodes[0], User("alice".into()), "user").await;
    send(&nodes[0], Users(s(&["alice", "bob"])), "users").await;
    send(&nodes[2], All, "all-from-2").await;
    send(&nodes[2], User("bob".into()), "bob-from-2").await;
    send(&nodes[1], Group("g1".into()), "group-from-1").await;
    send(&nodes[1], Group("nobody".into()), "empty-group").await;
    send(&nodes[1], User("carol".into()), "no-user").await;

    let expected = expect(
        &[
            ("all", &[0, 1, 2, 3]),
            ("all-except", &[0, 2]),
            ("conn-remote", &[2]),
            ("conn-local", &[0]),
            ("conns", &[0, 1, 3]),
            ("group", &[0, 2, 3]),
            ("groups", &[0, 1, 2, 3]),
            ("group-except", &[0, 2]),
            ("user", &[0, 1]),
            ("users", &[0, 1, 2]),
            ("all-from-2", &[0, 1, 2, 3]),
            ("bob-from-2", &[2]),
            ("group-from-1", &[0, 2, 3]),
        ],
        4,
    );
    for (i, client) in c.iter_mut().enumerate() {
        assert_eq!(client.drain(QUIET).await, expected[i], "client c{i}");
    }

    // Remote removal, then the group no longer reaches c2.
    groups0.remove(&ids[2], "g1").await.unwrap();
    send(&nodes[0], Group("g1".into()), "after-remove").await;
    let expected = expect(&[("after-remove", &[0, 3])], 4);
    for (i, client) in c.iter_mut().enumerate() {
        assert_eq!(client.drain(QUIET).await, expected[i], "client c{i}");
    }

    // A client that leaves takes its subscriptions with it.
    let gone = c.remove(2);
    drop(gone);
    eventually("the departed client to be unregistered", || async {
        nodes[1].manager.local().connection_count() == 1
    })
    .await;
    send(&nodes[0], User("bob".into()), "bob-gone").await;
    send(&nodes[0], All, "all-again").await;
    let expected = expect(&[("all-again", &[0, 1, 2])], 3);
    for (i, client) in c.iter_mut().enumerate() {
        assert_eq!(client.drain(QUIET).await, expected[i], "client #{i}");
    }
    for node in &nodes {
        assert_eq!(node.manager.lost_messages(), 0);
    }
}

pub async fn remote_group_changes_are_acknowledged<D: Driver>() {
    require_server(D::shared_port()).await;
    let prefix = unique_prefix("groups");
    let nodes = start_nodes::<D>(&D::url(D::shared_port()), &prefix).await;
    let mut a = Client::connect(nodes[1].addr, None, Protocol::Json).await;
    let mut b = Client::connect(nodes[2].addr, None, Protocol::MessagePack).await;

    // The ack means the owning node has joined the group and subscribed to its channel, so a
    // send right after it reaches the new member.
    for round in 0..5 {
        let group = format!("room-{round}");
        nodes[0].context.groups().add(&a.id, &group).await.unwrap();
        assert!(nodes[1].manager.local().is_in_group(&a.id, &group));
        nodes[0]
            .context
            .clients()
            .group(&group)
            .send("M", (group.clone(),))
            .await
            .unwrap();
        assert_eq!(a.drain(QUIET).await, vec![group.clone()]);
        nodes[2]
            .context
            .groups()
            .remove(&a.id, &group)
            .await
            .unwrap();
        assert!(!nodes[1].manager.local().is_in_group(&a.id, &group));
    }
    assert!(b.drain(QUIET).await.is_empty());

    // Nobody owns this connection: no ack, an error after the ack timeout.
    let started = std::time::Instant::now();
    let error = nodes[0]
        .context
        .groups()
        .add("no-such-connection", "room")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no node acknowledged"),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(nodes[0].context.groups().add(&a.id, "").await.is_err());
}

pub async fn client_results_across_nodes<D: Driver>() {
    require_server(D::shared_port()).await;
    let prefix = unique_prefix("results");
    let nodes = start_nodes::<D>(&D::url(D::shared_port()), &prefix).await;
    let mut json = Client::connect(nodes[1].addr, None, Protocol::Json).await;
    let mut msgpack = Client::connect(nodes[2].addr, None, Protocol::MessagePack).await;

    for client in [&mut json, &mut msgpack] {
        let proxy = nodes[0].context.clients().client(&client.id);
        let (result, target) = tokio::join!(
            proxy.invoke::<Value>("Add", (2, json!({"n": 40}))),
            client.answer_invocation(|target, args| {
                assert_eq!(target, "Add");
                let a: i64 = args[0].deserialize().unwrap();
                let b: Value = args[1].deserialize().unwrap();
                Completion::result(
                    "",
                    Payload::new(json!({"sum": a + b["n"].as_i64().unwrap()})),
                )
            }),
        );
        assert_eq!(target, "Add");
        assert_eq!(result.unwrap(), json!({"sum": 42}));

        let (result, _) = tokio::join!(
            proxy.invoke::<i32>("Fail", ()),
            client
                .answer_invocation(|_, _| Completion::error("", "Client didn't provide a result.")),
        );
        assert_eq!(
            result.unwrap_err(),
            ClientResultError::Client("Client didn't provide a result.".into())
        );
    }

    // A client that disconnects before answering.
    let id = json.id.clone();
    let proxy = nodes[0].context.clients().client(&id);
    let (result, ()) = tokio::join!(proxy.invoke::<i32>("Never", ()), async move {
        match json.recv(Duration::from_secs(10)).await {
            Some(HubMessage::Invocation(_)) => drop(json),
            other => panic!("expected an invocation, got {other:?}"),
        }
    });
    assert_eq!(result.unwrap_err(), ClientResultError::Disconnected);

    // Nobody owns the connection.
    let result = nodes[0]
        .context
        .clients()
        .client("no-such-connection")
        .invoke::<i32>("X", ())
        .await;
    assert_eq!(
        result.unwrap_err(),
        ClientResultError::NotFound("no-such-connection".into())
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_private<D: Driver>(port: u16) -> tokio::process::Child {
    let child = D::spawn_server(port);
    eventually(
        &format!("the private server on port {port} to start"),
        || async { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
    )
    .await;
    child
}

pub async fn recovers_after_server_restart<D: Driver>() {
    let port = free_port();
    let mut server = start_private::<D>(port).await;
    let prefix = unique_prefix("restart");
    let nodes = start_nodes::<D>(&D::url(port), &prefix).await;
    let mut c0 = Client::connect(nodes[0].addr, Some("u0"), Protocol::Json).await;
    let mut c1 = Client::connect(nodes[1].addr, Some("u1"), Protocol::MessagePack).await;
    let mut c2 = Client::connect(nodes[2].addr, None, Protocol::Json).await;
    nodes[0].context.groups().add(&c1.id, "g").await.unwrap();

    send(&nodes[0], signalbox::Target::All, "before").await;
    assert_eq!(c0.drain(QUIET).await, vec!["before"]);
    assert_eq!(c1.drain(QUIET).await, vec!["before"]);
    assert_eq!(c2.drain(QUIET).await, vec!["before"]);

    // The server goes away: health flips, local delivery goes on, remote sends are counted lost.
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    for node in &nodes {
        wait_healthy(node, false).await;
    }
    let lost_before = nodes[0].manager.lost_messages();
    send(&nodes[0], signalbox::Target::All, "during").await;
    send(
        &nodes[0],
        signalbox::Target::Group("g".into()),
        "group-during",
    )
    .await;
    assert_eq!(c0.drain(QUIET).await, vec!["during"]);
    assert!(c1.drain(QUIET).await.is_empty());
    assert!(c2.drain(QUIET).await.is_empty());
    assert_eq!(nodes[0].manager.lost_messages(), lost_before + 2);

    // The server comes back on the same port: the drivers reconnect and resubscribe by themselves.
    let mut server = start_private::<D>(port).await;
    for node in &nodes {
        wait_healthy(node, true).await;
    }
    send(&nodes[0], signalbox::Target::All, "after").await;
    send(
        &nodes[2],
        signalbox::Target::Group("g".into()),
        "group-after",
    )
    .await;
    send(
        &nodes[2],
        signalbox::Target::User("u1".into()),
        "user-after",
    )
    .await;
    send(
        &nodes[1],
        signalbox::Target::Connection(c2.id.clone()),
        "conn-after",
    )
    .await;
    assert_eq!(c0.drain(QUIET).await, vec!["after"]);
    assert_eq!(
        c1.drain(QUIET).await,
        vec!["after", "group-after", "user-after"]
    );
    assert_eq!(c2.drain(QUIET).await, vec!["after", "conn-after"]);
    // Group changes across nodes work again.
    nodes[2].context.groups().add(&c0.id, "g2").await.unwrap();
    let mut tags = BTreeMap::new();
    send(&nodes[1], signalbox::Target::Group("g2".into()), "g2").await;
    tags.insert("c0", c0.drain(QUIET).await);
    assert_eq!(tags["c0"], vec!["g2"]);
    assert_eq!(nodes[1].manager.lost_messages(), 0);

    server.kill().await.unwrap();
    server.wait().await.unwrap();
}

/// Polls `check` every few milliseconds until it holds; panics with `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Duration::from_secs(10);
    let until = tokio::time::Instant::now() + deadline;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        // The poll interval: the one place this suite waits on the clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
