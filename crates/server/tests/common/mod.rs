//! Test fixtures: a fresh database per test (an SQLite file, or a uniquely named PostgreSQL
//! database dropped afterwards), the service on 127.0.0.1:0 in-process, an HTTP client and a
//! raw SignalR (JSON protocol) WebSocket client.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod azure;
pub mod issuer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signalbox_server::auth::accounts::{NewUser, parse_claims};
use signalbox_server::config::Config;
use signalbox_server::server::{Service, build};
use signalbox_server::state::AppState;
use sqlx::Connection;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const SECRET: &str = "integration-test-secret-0123456789-abcdefghij";
pub const PASSWORD: &str = "correct horse battery";

/// Runs each named test function (`async fn name(backend: Backend)`) once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )*
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server-level PostgreSQL URL the test databases are created from.
pub fn postgres_admin_url() -> String {
    std::env::var("SIGNALBOX_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn with_database(url: &str, database: &str) -> String {
    match url.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{database}", &url[..i]),
        _ => format!("{url}/{database}"),
    }
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    sqlite_dir: Option<PathBuf>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("signalbox-test-{unique}"));
                std::fs::create_dir_all(&dir).unwrap();
                TestDb {
                    url: format!("sqlite://{}", dir.join("db.sqlite").display()),
                    backend,
                    sqlite_dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("signalbox_test_{unique}");
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is not reachable at {admin} ({e}); run scripts/services.sh \
                         or set SIGNALBOX_TEST_POSTGRES"
                        )
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                TestDb {
                    url: with_database(&admin, &name),
                    backend,
                    sqlite_dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl TestDb {
    /// Another handle on the same database that does not drop it: for a second node.
    pub fn share(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            backend: self.backend,
            sqlite_dir: None,
            pg_name: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.sqlite_dir.take() {
            // Best effort: a leftover temp dir is harmless.
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any async context we can block on: use a private runtime on
            // its own thread.
            let admin = postgres_admin_url();
            let handle = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        // Best effort: a leftover uniquely named database does not affect others.
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                        let _ = conn.close().await;
                    }
                });
            });
            // Best effort, see above.
            let _ = handle.join();
        }
    }
}

/// The configuration the tests start from.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: db.url.clone(),
        node: format!("test-{}", uuid::Uuid::now_v7().simple()),
        ..Config::default()
    };
    config.auth.jwt_secret = Some(SECRET.to_owned());
    config
}

/// The service running in-process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Declared last: dropped after the server is stopped.
    pub db: TestDb,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::new(backend).await;
        let mut config = test_config(&db);
        tweak(&mut config);
        Self::start_on(db, config).await
    }

    /// Starts a service on an existing test database.
    pub async fn start_on(db: TestDb, config: Config) -> TestApp {
        let service: Service = build(config).await.expect("service builds");
        let state = service.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async move {
            // Either a send or the sender being dropped means stop.
            let _ = rx.await;
        }));
        TestApp {
            addr,
            url: format!("http://{addr}"),
            state,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            db,
        }
    }

    /// Stops the server gracefully and hands back the database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let placeholder = TestDb {
            url: String::new(),
            backend: self.db.backend,
            sqlite_dir: None,
            pg_name: None,
        };
        std::mem::replace(&mut self.db, placeholder)
    }

    /// Creates an account (`claims` as `K=V`).
    pub async fn user(&self, name: &str, claims: &[&str]) {
        let claims: Vec<String> = claims.iter().map(|c| (*c).to_owned()).collect();
        self.state
            .accounts
            .create(NewUser {
                name: name.to_owned(),
                password: Some(PASSWORD.to_owned()),
                roles: Vec::new(),
                claims: parse_claims(&claims).unwrap(),
            })
            .await
            .unwrap();
    }

    /// An access token for a user with their stored claims, without a login.
    pub async fn token(&self, name: &str) -> String {
        let user = self
            .state
            .db
            .user(name)
            .await
            .unwrap()
            .expect("user exists");
        self.state
            .tokens
            .issue(
                name,
                &signalbox_server::auth::accounts::token_claims(&user),
                None,
            )
            .unwrap()
            .token
    }

    /// A negotiate request (version 1) to the notification hub with `token`, sent by `client`
    /// (another source address, say) or by `self.http`.
    pub fn negotiate_request(
        &self,
        client: Option<&reqwest::Client>,
        token: &str,
    ) -> reqwest::RequestBuilder {
        client
            .unwrap_or(&self.http)
            .post(format!(
                "{}/hubs/notifications/negotiate?negotiateVersion=1",
                self.url
            ))
            .bearer_auth(token)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn login(&self, name: &str, password: &str) -> (u16, Value) {
        self.post(
            "/api/auth/login",
            None,
            json!({"username": name, "password": password}),
        )
        .await
    }

    pub async fn presence(&self, user: &str, token: &str) -> Value {
        let (status, body) = self
            .get(&format!("/api/users/{user}/presence"), Some(token))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls `check` on the presence of `user` until it holds (presence is recorded right after
    /// the handshake, asynchronously to the client).
    pub async fn wait_presence(
        &self,
        user: &str,
        token: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let check = &check;
        eventually_some(&format!("presence of {user} to match"), || async move {
            let body = self.presence(user, token).await;
            check(&body).then_some(body)
        })
        .await
    }

    pub async fn connect(&self, token: &str) -> HubClient {
        HubClient::connect(self.addr, "/hubs/notifications", token).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A raw SignalR client (JSON protocol over WebSockets).
pub struct HubClient {
    ws: Ws,
    buf: String,
    pending: VecDeque<Value>,
    next_id: u64,
    pub connection_id: String,
    /// The secret connection token (`?id=` of the transport and of `/refresh`).
    pub connection_token: String,
}

impl HubClient {
    pub async fn connect(addr: SocketAddr, hub: &str, token: &str) -> HubClient {
        Self::connect_via(addr, addr, hub, token).await
    }

    /// Negotiates with the server at `negotiate_at` and opens the WebSocket at `addr` (another
    /// node of a cluster sharing the connection token secret).
    pub async fn connect_via(
        negotiate_at: SocketAddr,
        addr: SocketAddr,
        hub: &str,
        token: &str,
    ) -> HubClient {
        let negotiate = reqwest::Client::new()
            .post(format!(
                "http://{negotiate_at}{hub}/negotiate?negotiateVersion=1"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(negotiate.status(), 200);
        let body: Value = negotiate.json().await.unwrap();
        let connection_token = body["connectionToken"].as_str().unwrap().to_owned();
        let connection_id = body["connectionId"].as_str().unwrap().to_owned();
        let mut request = format!("ws://{addr}{hub}?id={connection_token}")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
            .headers_mut()
            .insert("user-agent", "signalbox-tests/1".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = HubClient {
            ws,
            buf: String::new(),
            pending: VecDeque::new(),
            next_id: 0,
            connection_id,
            connection_token,
        };
        client
            .ws
            .send(Message::Text(
                "{\"protocol\":\"json\",\"version\":1}\u{1e}".into(),
            ))
            .await
            .unwrap();
        let handshake = client
            .next_record(Duration::from_secs(10))
            .await
            .expect("handshake");
        assert!(
            handshake.get("error").is_none(),
            "handshake refused: {handshake}"
        );
        client
    }

    async fn next_record(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.find('\u{1e}') {
                let record: String = self.buf.drain(..=i).collect();
                return Some(serde_json::from_str(&record[..record.len() - 1]).unwrap());
            }
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) => self.buf.push_str(text.as_str()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next message (not a ping) within `timeout`, from the pending queue first.
    async fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(message) = self.pending.pop_front() {
            return Some(message);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_record(left).await?;
            if message["type"] != 6 {
                return Some(message);
            }
        }
    }

    /// The arguments of the next invocation of client method `target`; other messages are kept.
    pub async fn expect(&mut self, target: &str) -> Vec<Value> {
        self.try_expect(target, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no '{target}' invocation arrived"))
    }

    /// The whole next invocation message of client method `target` (with its `headers`), or
    /// `None` after `timeout`; other messages are kept.
    pub async fn try_expect_message(&mut self, target: &str, timeout: Duration) -> Option<Value> {
        if let Some(i) = self
            .pending
            .iter()
            .position(|m| m["type"] == 1 && m["target"] == target)
        {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut other = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(message) = self.next_record(left).await else {
                break None;
            };
            if message["type"] == 1 && message["target"] == target {
                break Some(message);
            }
            if message["type"] != 6 {
                other.push(message);
            }
        };
        self.pending.extend(other);
        found
    }

    /// Sends a raw hub message (a JSON object) as is.
    pub async fn send_raw(&mut self, message: Value) {
        self.ws
            .send(Message::Text(format!("{message}\u{1e}").into()))
            .await
            .unwrap();
    }

    /// Like [`HubClient::expect`] but `None` after `timeout`.
    pub async fn try_expect(&mut self, target: &str, timeout: Duration) -> Option<Vec<Value>> {
        if let Some(i) = self
            .pending
            .iter()
            .position(|m| m["type"] == 1 && m["target"] == target)
        {
            let message = self.pending.remove(i).unwrap();
            return Some(message["arguments"].as_array().unwrap().clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut other = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(message) = self.next_record(left).await else {
                break None;
            };
            if message["type"] == 1 && message["target"] == target {
                break Some(message["arguments"].as_array().unwrap().clone());
            }
            if message["type"] != 6 {
                other.push(message);
            }
        };
        self.pending.extend(other);
        found
    }

    /// Every invocation of `target` that arrives within `window`.
    pub async fn collect(&mut self, target: &str, window: Duration) -> Vec<Vec<Value>> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.try_expect(target, left).await {
                Some(args) => all.push(args),
                None => break,
            }
        }
        all
    }

    /// Invokes a hub method and returns its completion (`result` or `error`).
    pub async fn invoke(&mut self, target: &str, arguments: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let message =
            json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments});
        self.ws
            .send(Message::Text(format!("{message}\u{1e}").into()))
            .await
            .unwrap();
        let mut other = Vec::new();
        let outcome = loop {
            let message = self
                .next_record(Duration::from_secs(10))
                .await
                .expect("completion");
            if message["type"] == 3 && message["invocationId"] == id.as_str() {
                break match message.get("error") {
                    Some(error) => Err(error.as_str().unwrap_or_default().to_owned()),
                    None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                };
            }
            if message["type"] != 6 {
                other.push(message);
            }
        };
        self.pending.extend(other);
        outcome
    }

    /// Waits for the server to end the connection: the Close message it sent (`None` when the
    /// socket ended without one), skipping other messages; panics after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "the server did not close the connection");
            let frame = match tokio::time::timeout(left, self.ws.next()).await {
                Ok(frame) => frame,
                Err(_) => panic!("the server did not close the connection"),
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    for record in text.as_str().split('\u{1e}').filter(|r| !r.is_empty()) {
                        let message: Value = serde_json::from_str(record).unwrap();
                        if message["type"] == 7 {
                            return Some(message);
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server closes its side.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// How long [`eventually`] waits before failing.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Polls `check` every few milliseconds until it holds; panics with `what` after [`EVENTUALLY`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(EVENTUALLY, what, check).await;
}

/// [`eventually`] with another deadline, for conditions that take long by design.
pub async fn eventually_within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some_within(deadline, what, || {
        let attempt = check();
        async move { attempt.await.then_some(()) }
    })
    .await;
}

/// Polls `probe` until it returns `Some`; panics with `what` after [`EVENTUALLY`].
pub async fn eventually_some<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_some_within(EVENTUALLY, what, probe).await
}

/// [`eventually_some`] with another deadline.
pub async fn eventually_some_within<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        // The poll interval: the one place these tests wait on the clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
