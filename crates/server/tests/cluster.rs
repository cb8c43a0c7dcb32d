//! Scale-out: three `signalbox serve` processes on one PostgreSQL database (fresh per test)
//! joined by Redis, then NATS, with raw SignalR clients spread over them. Node heartbeats every
//! second and a 3 second node timeout keep the dead-node test short.
//!
//! Needs PostgreSQL, Redis on 6379 and NATS on 4222 (scripts/services.sh), and `redis-server` /
//! `nats-server` on the PATH for the backplane-restart tests, which run a private server on a free
//! port (the shared ones are never stopped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, HubClient, PASSWORD, SECRET, TestDb};
use serde_json::{Value, json};
use signalbox_server::auth::accounts::{Accounts, NewUser, parse_claims, token_claims};
use signalbox_server::auth::tokens::TokenService;
use signalbox_server::config::Config;
use signalbox_server::db::Db;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const HUB: &str = "/hubs/notifications";
const CONNECTION_TOKEN_SECRET: &str = "cluster-connection-token-secret-0123456789-xyz";
/// Quiet time after which no more messages are expected.
const QUIET: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy)]
enum Bp {
    Redis,
    Nats,
}

impl Bp {
    fn url(self, port: u16) -> String {
        match self {
            Bp::Redis => format!("redis://127.0.0.1:{port}"),
            Bp::Nats => format!("nats://127.0.0.1:{port}"),
        }
    }

    fn shared_port(self) -> u16 {
        match self {
            Bp::Redis => 6379,
            Bp::Nats => 4222,
        }
    }

    /// A private server on `port`.
    fn spawn_server(self, port: u16) -> Child {
        let mut command = match self {
            Bp::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port.to_string()]).args([
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                c
            }
            Bp::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                c
            }
        };
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server / nats-server must be installed (scripts/setup.sh)")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16, up: bool) {
    let what = format!("port {port} to be {}", if up { "open" } else { "closed" });
    common::eventually(&what, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            == up
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Nodes: `signalbox serve` child processes

struct Node {
    name: String,
    addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    async fn start(db: &TestDb, backplane: &str, prefix: &str, name: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_signalbox"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
            .args(["--backplane", backplane, "--node-id", name])
            .env("SIGNALBOX_JWT_SECRET", SECRET)
            .env("SIGNALBOX_CONNECTION_TOKEN_SECRET", CONNECTION_TOKEN_SECRET)
            .env("SIGNALBOX_HEARTBEAT_INTERVAL", "1s")
            .env("SIGNALBOX_NODE_TIMEOUT", "3s")
            .env("SIGNALBOX_CHANNEL_PREFIX", prefix)
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
            .env("NO_COLOR", "1")
            .env_remove("SIGNALBOX_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("target/debug/signalbox (cargo build -p signalbox-server)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("Now listening on: http://") {
                    return url.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("{name} exited: {}", log.lock().unwrap().join("\n"));
        })
        .await
        .unwrap_or_else(|_| panic!("{name} did not start"));
        // Keep reading stdout (the banner) so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Node {
            name: name.to_owned(),
            addr,
            child,
            log,
        }
    }

    fn log_count(&self, pattern: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// Waits until `pattern` has been logged at least `count` times.
    async fn wait_log(&self, pattern: &str, count: usize, timeout: Duration) {
        let what = format!("{}: {pattern:?} logged {count} times", self.name);
        common::eventually_within(timeout, &what, || async {
            self.log_count(pattern) >= count
        })
        .await;
    }
}

struct Cluster {
    nodes: Vec<Node>,
    tokens: TokenService,
    db_handle: Db,
    http: reqwest::Client,
    // Dropped last: the database outlives the processes.
    _db: TestDb,
}

impl Cluster {
    /// Creates the users (`(name, claims)`), then starts three nodes on `backplane`.
    async fn start(backplane: &str, test: &str, users: &[(&str, &[&str])]) -> Cluster {
        let db = TestDb::new(Backend::Postgres).await;
        let handle = Db::open(&db.url).await.unwrap();
        let accounts = Accounts::new(handle.clone());
        for (name, claims) in users {
            let claims: Vec<String> = claims.iter().map(|c| (*c).to_owned()).collect();
            accounts
                .create(NewUser {
                    name: (*name).to_owned(),
                    password: Some(PASSWORD.to_owned()),
                    roles: Vec::new(),
                    claims: parse_claims(&claims).unwrap(),
                })
                .await
                .unwrap();
        }
        let mut config = Config::default();
        config.auth.jwt_secret = Some(SECRET.to_owned());
        let tokens = TokenService::new(&config.auth).unwrap();
        let prefix = format!("sbtest-{test}-{}", uuid::Uuid::now_v7().simple());
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(Node::start(&db, backplane, &prefix, &format!("{test}-node{i}")).await);
        }
        for node in &nodes {
            node.wait_log("backplane connected", 1, Duration::from_secs(20))
                .await;
        }
        Cluster {
            nodes,
            tokens,
            db_handle: handle,
            http: reqwest::Client::new(),
            _db: db,
        }
    }

    async fn token(&self, user: &str) -> String {
        let row = self.db_handle.user(user).await.unwrap().unwrap();
        self.tokens
            .issue(user, &token_claims(&row), None)
            .unwrap()
            .token
    }

    /// Connects `user` (negotiating on node `negotiate_at`, WebSocket on node `at`) and waits
    /// until presence lists the connection.
    async fn connect(&self, user: &str, negotiate_at: usize, at: usize) -> HubClient {
        let token = self.token(user).await;
        let client = HubClient::connect_via(
            self.nodes[negotiate_at].addr,
            self.nodes[at].addr,
            HUB,
            &token,
        )
        .await;
        let id = client.connection_id.clone();
        let node = self.nodes[at].name.clone();
        self.wait_presence(user, |p| {
            p["connections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["connection_id"] == id.as_str() && c["node"] == node.as_str())
        })
        .await;
        client
    }

    async fn presence(&self, user: &str) -> Value {
        let token = self.token(user).await;
        let response = self
            .http
            .get(format!(
                "http://{}/api/users/{user}/presence",
                self.nodes[0].addr
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn wait_presence(&self, user: &str, check: impl Fn(&Value) -> bool) -> Value {
        let check = &check;
        common::eventually_some(&format!("presence of {user} to match"), || async move {
            let body = self.presence(user).await;
            check(&body).then_some(body)
        })
        .await
    }

    /// `POST /api/notifications` on node `at` as `sender`.
    async fn publish(&self, at: usize, sender: &str, body: Value) -> Value {
        let token = self.token(sender).await;
        let response = self
            .http
            .post(format!("http://{}/api/notifications", self.nodes[at].addr))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }
}

/// Kills the private backplane server on `port` and waits until every node saw it go.
async fn stop_backplane(server: &mut Child, port: u16, cluster: &Cluster) {
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    wait_port(port, false).await;
    for node in &cluster.nodes {
        node.wait_log("backplane down", 1, Duration::from_secs(20))
            .await;
    }
}

/// The messages of every `Notification` received until a quiet period, sorted.
async fn notifications(client: &mut HubClient) -> Vec<String> {
    let mut messages: Vec<String> = client
        .collect("Notification", QUIET)
        .await
        .into_iter()
        .map(|args| args[0]["message"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    messages
}

/// The `PresenceChanged` events about `user` received until a quiet period.
async fn presence_events(client: &mut HubClient, user: &str, window: Duration) -> Vec<bool> {
    client
        .collect("PresenceChanged", window)
        .await
        .into_iter()
        .filter(|args| args[0]["user"] == user)
        .map(|args| args[0]["online"].as_bool().unwrap())
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Every publish target (user, users, group, everyone, and the hub's `SendNotification`) reaches
/// exactly the recipients' connections, once each, whichever node they are on; a WebSocket opened
/// on a node other than the one that negotiated works; `PresenceChanged` arrives once per edge on
/// every node.
async fn every_target_exactly_once(bp: Bp) {
    let cluster = Cluster::start(
        &bp.url(bp.shared_port()),
        "targets",
        &[
            ("svc", &["permission=notify"]),
            ("alice", &[]),
            ("bob", &["permission=notify"]),
            ("carol", &[]),
            ("dave", &[]),
        ],
    )
    .await;
    // c0: alice on node1; c1: alice negotiated on node0, WebSocket on node2; c2: bob on node2;
    // c3: carol on node0.
    let mut c = vec![
        cluster.connect("alice", 1, 1).await,
        cluster.connect("alice", 0, 2).await,
        cluster.connect("bob", 2, 2).await,
        cluster.connect("carol", 0, 0).await,
    ];
    let svc = cluster.token("svc").await;
    for (group, user) in [("team", "alice"), ("team", "carol")] {
        let response = cluster
            .http
            .put(format!(
                "http://{}/api/groups/{group}/members/{user}",
                cluster.nodes[1].addr
            ))
            .bearer_auth(&svc)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    // Every client watches everyone's presence; drop the events of the connects above.
    for client in &mut c {
        client.invoke("WatchPresence", json!([null])).await.unwrap();
    }
    for client in &mut c {
        client.collect("PresenceChanged", QUIET).await;
    }

    cluster
        .publish(0, "svc", json!({"user": "alice", "message": "user"}))
        .await;
    cluster
        .publish(
            1,
            "svc",
            json!({"users": ["bob", "carol", "bob"], "message": "users"}),
        )
        .await;
    cluster
        .publish(2, "svc", json!({"group": "team", "message": "group"}))
        .await;
    cluster
        .publish(0, "svc", json!({"everyone": true, "message": "everyone"}))
        .await;
    let id = c[2]
        .invoke("SendNotification", json!(["alice", "hub"]))
        .await
        .unwrap();
    assert!(id.as_str().is_some_and(|s| !s.is_empty()), "{id}");

    let expected = [
        strings(&["user", "group", "everyone", "hub"]),
        strings(&["user", "group", "everyone", "hub"]),
        strings(&["users", "everyone"]),
        strings(&["users", "group", "everyone"]),
    ];
    for (i, client) in c.iter_mut().enumerate() {
        assert_eq!(notifications(client).await, expected[i], "client {i}");
    }

    // dave comes online on node1 and goes away: one event of each kind on every node.
    let dave = cluster.connect("dave", 1, 1).await;
    dave.close().await;
    cluster
        .wait_presence("dave", |p| p["online"] == false)
        .await;
    for (i, client) in c.iter_mut().enumerate() {
        assert_eq!(
            presence_events(client, "dave", QUIET).await,
            vec![true, false],
            "client {i}"
        );
    }
    // A second connection of an online user is no edge.
    let _alice3 = cluster.connect("alice", 0, 0).await;
    assert!(presence_events(&mut c[3], "alice", QUIET).await.is_empty());
}

/// A node killed with SIGKILL: the others remove its connections and push its users offline,
/// once, well within 30 seconds.
async fn killed_node_users_go_offline(bp: Bp) {
    let mut cluster = Cluster::start(
        &bp.url(bp.shared_port()),
        "sigkill",
        &[
            ("erin", &[]),
            ("frank", &["permission=notify"]),
            ("grace", &[]),
        ],
    )
    .await;
    let mut frank = cluster.connect("frank", 0, 0).await;
    let mut grace = cluster.connect("grace", 1, 1).await;
    // erin on node2 only.
    let _erin = cluster.connect("erin", 2, 2).await;
    for client in [&mut frank, &mut grace] {
        client.invoke("WatchPresence", json!([null])).await.unwrap();
    }
    frank.collect("PresenceChanged", QUIET).await;
    grace.collect("PresenceChanged", QUIET).await;

    let killed_at = tokio::time::Instant::now();
    cluster.nodes[2].child.start_kill().unwrap();
    cluster.nodes[2].child.wait().await.unwrap();
    let event = frank
        .try_expect("PresenceChanged", Duration::from_secs(30))
        .await
        .expect("erin goes offline within 30 s");
    assert_eq!(event[0]["user"], "erin");
    assert_eq!(event[0]["online"], false);
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    // Exactly once on every remaining node, though both reap.
    assert!(
        presence_events(&mut frank, "erin", Duration::from_secs(2))
            .await
            .is_empty()
    );
    assert_eq!(
        presence_events(&mut grace, "erin", QUIET).await,
        vec![false]
    );
    let presence = cluster.presence("erin").await;
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["connections"].as_array().unwrap().is_empty());
    assert!(presence["last_disconnected_at"].is_string(), "{presence}");
    // The survivors still deliver to each other.
    cluster
        .publish(
            0,
            "frank",
            json!({"user": "grace", "message": "still here"}),
        )
        .await;
    assert_eq!(notifications(&mut grace).await, strings(&["still here"]));
}

/// The backplane server restarts under a running cluster: nodes log it down and up again (the
/// readiness signal), a notification published meanwhile is held in the inbox and delivered
/// when the backplane is back, and live delivery resumes without restarting any node.
async fn backplane_restart(bp: Bp) {
    let port = free_port();
    let mut server = bp.spawn_server(port);
    wait_port(port, true).await;
    let cluster = Cluster::start(
        &bp.url(port),
        "restart",
        &[
            ("svc", &["permission=notify"]),
            ("alice", &[]),
            ("bob", &[]),
        ],
    )
    .await;
    let mut alice = cluster.connect("alice", 1, 1).await;
    let mut bob = cluster.connect("bob", 2, 2).await;
    cluster
        .publish(
            0,
            "svc",
            json!({"users": ["alice", "bob"], "message": "before"}),
        )
        .await;
    assert_eq!(notifications(&mut alice).await, strings(&["before"]));
    assert_eq!(notifications(&mut bob).await, strings(&["before"]));

    stop_backplane(&mut server, port, &cluster).await;
    // Published on node0 while no node can reach the others: kept in the inbox.
    cluster
        .publish(
            0,
            "svc",
            json!({"users": ["alice", "bob"], "message": "during"}),
        )
        .await;
    let inbox = cluster.token("alice").await;
    let listed: Value = cluster
        .http
        .get(format!(
            "http://{}/api/notifications",
            cluster.nodes[2].addr
        ))
        .bearer_auth(inbox)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["message"] == "during"),
        "{listed}"
    );

    let mut server = bp.spawn_server(port);
    wait_port(port, true).await;
    for node in &cluster.nodes {
        node.wait_log("backplane connected", 2, Duration::from_secs(30))
            .await;
    }
    // The held-back notification, once, without a reconnect.
    assert_eq!(notifications(&mut alice).await, strings(&["during"]));
    assert_eq!(notifications(&mut bob).await, strings(&["during"]));
    cluster
        .publish(
            0,
            "svc",
            json!({"users": ["alice", "bob"], "message": "after"}),
        )
        .await;
    assert_eq!(notifications(&mut alice).await, strings(&["after"]));
    assert_eq!(notifications(&mut bob).await, strings(&["after"]));
    drop(cluster);
    let _ = server.start_kill();
}

/// A connection lives on one node; its authentication is refreshed through another node (the
/// refresh is forwarded to the owner over the backplane), and signing out on a third closes it.
async fn authentication_across_nodes(bp: Bp) {
    let cluster = Cluster::start(
        &bp.url(bp.shared_port()),
        "auth",
        &[("alice", &[]), ("bob", &[])],
    )
    .await;
    let node = |i: usize| format!("http://{}", cluster.nodes[i].addr);
    let post = |url: String, token: Option<String>, body: Value| {
        let mut request = cluster.http.post(url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let login = |user: &'static str| {
        post(
            format!("{}/api/auth/login", node(0)),
            None,
            json!({"username": user, "password": PASSWORD}),
        )
    };
    let (status, session) = login("alice").await;
    assert_eq!(status, 200, "{session}");
    let access = session["access_token"].as_str().unwrap().to_owned();
    // Negotiated on node 0, connected to node 2.
    let mut alice =
        HubClient::connect_via(cluster.nodes[0].addr, cluster.nodes[2].addr, HUB, &access).await;
    let refresh_url = format!("{}{HUB}/refresh?id={}", node(1), alice.connection_token);

    // Node 1 holds nothing of the connection: it forwards the refresh to node 2.
    let (status, rotated) = post(
        format!("{}/api/auth/refresh", node(1)),
        None,
        json!({"refresh_token": session["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_access = rotated["access_token"].as_str().unwrap().to_owned();
    let (status, answer) = post(refresh_url.clone(), Some(new_access), json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["tokenLifetimeSeconds"].as_u64().unwrap() > 0,
        "{answer}"
    );

    // Another user's token cannot take the connection over, wherever it is sent.
    let (_, bob) = login("bob").await;
    let bob_access = bob["access_token"].as_str().unwrap().to_owned();
    let (status, answer) = post(refresh_url, Some(bob_access), json!({})).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "permission_change_rejected");
    assert!(alice.invoke("GetOnlineUsers", json!([])).await.is_ok());

    // Signing out on node 1 ends the connection on node 2 within seconds.
    let (status, _) = post(
        format!("{}/api/auth/logout", node(1)),
        None,
        json!({"refresh_token": rotated["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 204);
    alice.expect_closed(Duration::from_secs(15)).await;
}

/// A notification to everyone is stored once and reaches the connections of every node, once
/// each: live, or by the replay on whichever node the account connects to next (what another
/// node delivered is not replayed). While the backplane is down the nodes still find new
/// broadcasts in the database.
async fn broadcasts_across_nodes(bp: Bp) {
    let port = free_port();
    let mut server = bp.spawn_server(port);
    wait_port(port, true).await;
    let cluster = Cluster::start(
        &bp.url(port),
        "broadcasts",
        &[
            ("svc", &["permission=notify"]),
            ("alice", &[]),
            ("bob", &[]),
            ("carol", &[]),
        ],
    )
    .await;
    let mut alice = cluster.connect("alice", 1, 1).await;
    let mut bob = cluster.connect("bob", 2, 2).await;
    let one = cluster
        .publish(0, "svc", json!({"everyone": true, "message": "one"}))
        .await;
    assert_eq!(one["ids"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(notifications(&mut alice).await, strings(&["one"]));
    assert_eq!(notifications(&mut bob).await, strings(&["one"]));
    // carol was offline: replayed where she connects.
    let mut carol = cluster.connect("carol", 2, 2).await;
    assert_eq!(notifications(&mut carol).await, strings(&["one"]));

    // alice leaves node1 and comes back on node0 after the next one.
    alice.close().await;
    cluster
        .wait_presence("alice", |p| p["online"] == false)
        .await;
    cluster
        .publish(1, "svc", json!({"everyone": true, "message": "two"}))
        .await;
    let mut alice = cluster.connect("alice", 0, 0).await;
    assert_eq!(notifications(&mut alice).await, strings(&["two"]));
    assert_eq!(notifications(&mut bob).await, strings(&["two"]));
    assert_eq!(notifications(&mut carol).await, strings(&["two"]));

    stop_backplane(&mut server, port, &cluster).await;
    cluster
        .publish(2, "svc", json!({"everyone": true, "message": "three"}))
        .await;
    for client in [&mut alice, &mut bob, &mut carol] {
        let three = client
            .try_expect("Notification", Duration::from_secs(10))
            .await
            .expect("the broadcast, through the database");
        assert_eq!(three[0]["message"], "three");
        assert_eq!(notifications(client).await, Vec::<String>::new());
    }
    drop(cluster);
    let _ = server.start_kill();
}

macro_rules! cluster_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::Bp::Redis).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats() {
                    super::$name(super::Bp::Nats).await;
                }
            }
        )*
    };
}

cluster_tests!(
    authentication_across_nodes,
    broadcasts_across_nodes,
    every_target_exactly_once,
    killed_node_users_go_offline,
    backplane_restart
);
