//! Lifecycle webhooks, on SQLite and PostgreSQL: a receiver in the test checks every request's
//! signature; `user.online` is sent at once, a reload within the debounce sends nothing,
//! `user.offline` follows the debounce, a failing receiver gets the same delivery again until it
//! accepts it, events pending at a stop are delivered after a restart, and the admin API lists
//! the deliveries and retries failed ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Backend, TestApp, TestDb, test_config};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use signalbox_server::auth::accounts::NewUser;
use signalbox_server::config::{Config, Overrides, WebhooksConfig};
use tokio::sync::mpsc;

const HOOK_SECRET: &str = "webhook-test-secret-0123456789-abcdefghij";

/// Requests received and not yet read by the test (far more than any test causes).
const RECEIVED_QUEUE: usize = 1024;

/// How long a test waits for a request it expects.
const WAIT: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// Arrival order, from 0.
    index: usize,
    event: String,
    delivery: String,
    body: Value,
    /// What the receiver answered.
    answered: u16,
    /// What was wrong with the request (headers, signature, body).
    problems: Vec<String>,
}

impl Received {
    fn user(&self) -> &str {
        self.body["user"].as_str().unwrap_or_default()
    }

    fn is(&self, event: &str, user: &str) -> bool {
        self.event == event && self.user() == user
    }
}

/// What the receiver hands the test: the request, its answer, and whether another request of
/// the same delivery was under way at the same time.
type Got = (HeaderMap, Bytes, u16, bool);

#[derive(Clone)]
struct ReceiverState {
    answer: Arc<AtomicU16>,
    /// How long each answer takes, ms.
    delay_ms: Arc<AtomicU64>,
    in_flight: Arc<std::sync::Mutex<HashSet<String>>>,
    tx: mpsc::Sender<Got>,
}

/// An HTTP server that records what it receives and answers with a configurable status.
struct Receiver {
    url: String,
    answer: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    rx: mpsc::Receiver<Got>,
    seen: Vec<Received>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the docs tell receivers to do: HMAC-SHA256 over `timestamp.body`, compared with the
/// header, a timestamp within 5 minutes.
fn check(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut problems = Vec::new();
    let Some(timestamp) = header("x-signalbox-timestamp") else {
        return vec!["no timestamp".to_owned()];
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match timestamp.parse::<u64>() {
        Ok(t) if t.abs_diff(now) <= 300 => {}
        _ => problems.push(format!("stale timestamp {timestamp}")),
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("sha256={}", hex(&mac.finalize().into_bytes()));
    if header("x-signalbox-signature") != Some(expected.as_str()) {
        problems.push(format!(
            "bad signature {:?}, expected {expected}",
            header("x-signalbox-signature")
        ));
    }
    if header("content-type") != Some("application/json") {
        problems.push("not JSON".to_owned());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            if header("x-signalbox-event") != json["type"].as_str() {
                problems.push("X-Signalbox-Event differs from the body's type".to_owned());
            }
            if header("x-signalbox-delivery") != json["id"].as_str() {
                problems.push("X-Signalbox-Delivery differs from the body's id".to_owned());
            }
            for field in ["id", "type", "occurred_at", "user", "node"] {
                if !json[field].is_string() {
                    problems.push(format!("no {field}"));
                }
            }
        }
        Err(error) => problems.push(format!("body is not JSON: {error}")),
    }
    problems
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = state.answer.load(Ordering::SeqCst);
    let delivery = headers
        .get("x-signalbox-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let concurrent = !state.in_flight.lock().unwrap().insert(delivery.clone());
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        // A slow receiver is the behaviour under test (timeouts, no concurrent deliveries).
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.in_flight.lock().unwrap().remove(&delivery);
    let _ = state.tx.send((headers, body, answer, concurrent)).await;
    StatusCode::from_u16(answer).unwrap()
}

impl Receiver {
    async fn start() -> Receiver {
        let answer = Arc::new(AtomicU16::new(204));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(RECEIVED_QUEUE);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(ReceiverState {
                answer: answer.clone(),
                delay_ms: delay_ms.clone(),
                in_flight: Arc::default(),
                tx,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook?code=query-key"),
            answer,
            delay_ms,
            rx,
            seen: Vec::new(),
        }
    }

    /// Answers every following request with `status`.
    fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// The first request so far (or to come within [`WAIT`]) matching `pred`.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = self.seen.iter().find(|r| pred(r)) {
                return found.clone();
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((headers, body, answered, concurrent))) = next else {
                panic!("the receiver never got {what}; it got {:#?}", self.seen);
            };
            let mut problems = check(&headers, &body);
            if concurrent {
                problems.push("another attempt of this delivery was under way".to_owned());
            }
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let received = Received {
                index: self.seen.len(),
                event: header("x-signalbox-event"),
                delivery: header("x-signalbox-delivery"),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                answered,
                problems,
            };
            assert!(
                received.problems.is_empty(),
                "invalid webhook request: {received:#?}"
            );
            self.seen.push(received);
        }
    }

    /// Every request so far of `event` for `user`.
    fn all(&self, event: &str, user: &str) -> Vec<&Received> {
        self.seen.iter().filter(|r| r.is(event, user)).collect()
    }
}

/// Webhooks to `receiver` with a short debounce and quick retries.
fn hooks(config: &mut Config, receiver: &Receiver, debounce: Duration) {
    config.webhooks = WebhooksConfig {
        url: Some(receiver.url.clone()),
        secret: Some(HOOK_SECRET.to_owned()),
        debounce,
        timeout: Duration::from_secs(5),
        max_attempts: 100,
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_millis(300),
        ..WebhooksConfig::default()
    };
}

async fn admin_token(app: &TestApp) -> String {
    app.state
        .accounts
        .create(NewUser {
            name: "root".to_owned(),
            password: Some(common::PASSWORD.to_owned()),
            roles: vec!["admin".to_owned()],
            claims: Default::default(),
        })
        .await
        .unwrap();
    app.token("root").await
}

/// The delivery log as the admin API shows it.
async fn log(app: &TestApp, admin: &str, query: &str) -> Value {
    let (status, body) = app
        .get(&format!("/api/admin/webhooks{query}"), Some(admin))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The entry of event `id` in the delivery log.
async fn entry(app: &TestApp, admin: &str, id: &str) -> Value {
    let body = log(app, admin, "?limit=500").await;
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the delivery log: {body}"))
}

/// Polls the entry of event `id` until `check` holds.
async fn wait_entry(app: &TestApp, admin: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let check = &check;
    common::eventually_some_within(
        WAIT,
        &format!("the entry of {id} to match"),
        || async move {
            let entry = entry(app, admin, id).await;
            check(&entry).then_some(entry)
        },
    )
    .await
}

/// `user.online` at once with the connection's events; a second tab sends no second
/// `user.online`; `user.offline` only after the debounce; the admin API lists them all.
async fn online_at_once_offline_after_debounce(backend: Backend) {
    let mut receiver = Receiver::start().await;
    let debounce = Duration::from_secs(1);
    let app = TestApp::start_with(backend, |c| hooks(c, &receiver, debounce)).await;
    let admin = admin_token(&app).await;
    app.user("alice", &[]).await;
    let token = app.token("alice").await;

    let first = app.connect(&token).await;
    let online = receiver
        .wait_for("alice online", |r| r.is("user.online", "alice"))
        .await;
    assert_eq!(online.answered, 204);
    assert_eq!(online.body["node"], app.state.config.node.as_str());
    assert!(
        online.body.get("connection_id").is_none(),
        "{:?}",
        online.body
    );
    let connected = receiver
        .wait_for("alice's connection", |r| {
            r.is("connection.connected", "alice")
                && r.body["connection_id"] == first.connection_id.as_str()
        })
        .await;
    assert_ne!(connected.delivery, online.delivery);

    let second = app.connect(&token).await;
    receiver
        .wait_for("alice's second connection", |r| {
            r.is("connection.connected", "alice")
                && r.body["connection_id"] == second.connection_id.as_str()
        })
        .await;
    first.close().await;
    receiver
        .wait_for("the first tab closing", |r| {
            r.is("connection.disconnected", "alice")
        })
        .await;
    let closed = Instant::now();
    second.close().await;
    let offline = receiver
        .wait_for("alice offline", |r| r.is("user.offline", "alice"))
        .await;
    assert!(
        closed.elapsed() >= debounce,
        "user.offline came {:?} after the last tab closed",
        closed.elapsed()
    );
    assert_eq!(receiver.all("user.online", "alice").len(), 1);
    assert_eq!(receiver.all("user.offline", "alice").len(), 1);
    assert_eq!(receiver.all("connection.disconnected", "alice").len(), 2);

    let entry = wait_entry(&app, &admin, &offline.delivery, |e| {
        e["status"] == "delivered"
    })
    .await;
    assert_eq!(entry["event"], "user.offline");
    assert_eq!(entry["user"], "alice");
    assert_eq!(entry["attempts"], 1);
    assert_eq!(entry["last_status"], 204);
    let body = log(&app, &admin, "?status=delivered").await;
    assert_eq!(body["enabled"], true);
    // The receiver is shown without its query.
    assert!(
        !body["url"].as_str().unwrap().contains("query-key"),
        "{body}"
    );
    assert_eq!(body["events"].as_array().unwrap().len(), 4);

    // Metrics: by event type and outcome.
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let delivered =
        "signalbox_webhook_deliveries_total{event=\"user.offline\",outcome=\"delivered\"} ";
    let line = text.lines().find(|l| l.starts_with(delivered));
    assert!(
        line.is_some_and(|l| l[delivered.len()..].parse::<f64>().unwrap() >= 1.0),
        "{text}"
    );
    assert!(
        text.contains(
            "signalbox_webhook_deliveries_total{event=\"connection.connected\",outcome=\"failed\"}"
        ),
        "{text}"
    );
    assert!(text.contains("signalbox_webhook_pending"), "{text}");
}

/// A reload (the only tab closes, a new one opens within the debounce) sends neither
/// `user.offline` nor a second `user.online`.
async fn reload_within_debounce_sends_nothing(backend: Backend) {
    let mut receiver = Receiver::start().await;
    let app = TestApp::start_with(backend, |c| hooks(c, &receiver, Duration::from_secs(2))).await;
    let admin = admin_token(&app).await;
    app.user("alice", &[]).await;
    app.user("bob", &[]).await;
    let alice = app.token("alice").await;

    let tab = app.connect(&alice).await;
    receiver
        .wait_for("alice online", |r| r.is("user.online", "alice"))
        .await;
    let old = tab.connection_id.clone();
    tab.close().await;
    // Presence recorded the offline edge before this event was stored.
    receiver
        .wait_for("the tab closing", |r| {
            r.is("connection.disconnected", "alice") && r.body["connection_id"] == old.as_str()
        })
        .await;
    let tab = app.connect(&alice).await;
    receiver
        .wait_for("the new tab", |r| {
            r.is("connection.connected", "alice")
                && r.body["connection_id"] == tab.connection_id.as_str()
        })
        .await;
    // Nothing of alice's presence is waiting: the pending user.offline was withdrawn.
    let body = log(&app, &admin, "?limit=500").await;
    let alice_presence: Vec<&Value> = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["user"] == "alice" && d["event"].as_str().unwrap().starts_with("user."))
        .collect();
    assert_eq!(alice_presence.len(), 1, "{body}");
    assert_eq!(alice_presence[0]["event"], "user.online");

    // A later user's debounced offline: alice's would have been due before it.
    let bob = app.connect(&app.token("bob").await).await;
    bob.close().await;
    receiver
        .wait_for("bob offline", |r| r.is("user.offline", "bob"))
        .await;
    assert!(receiver.all("user.offline", "alice").is_empty());
    assert_eq!(receiver.all("user.online", "alice").len(), 1);
    drop(tab);
}

/// A failing receiver gets the same delivery (same id and body) until it accepts it; an event
/// the receiver refuses for good fails and can be retried from the admin API.
async fn failing_receiver_then_recovering(backend: Backend) {
    let mut receiver = Receiver::start().await;
    receiver.answer(503);
    let app = TestApp::start_with(backend, |c| hooks(c, &receiver, Duration::from_secs(1))).await;
    let admin = admin_token(&app).await;
    app.user("alice", &[]).await;
    app.user("bob", &[]).await;

    let _alice = app.connect(&app.token("alice").await).await;
    let first = receiver
        .wait_for("alice online", |r| r.is("user.online", "alice"))
        .await;
    assert_eq!(first.answered, 503);
    let retried = receiver
        .wait_for("a retry", |r| {
            r.delivery == first.delivery && r.index > first.index
        })
        .await;
    assert_eq!(retried.body, first.body);
    let pending = wait_entry(&app, &admin, &first.delivery, |e| {
        e["status"] == "pending" && e["last_status"] == 503
    })
    .await;
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    receiver.answer(200);
    let accepted = receiver
        .wait_for("the accepted retry", |r| {
            r.delivery == first.delivery && r.answered == 200
        })
        .await;
    assert_eq!(accepted.body, first.body);
    let entry = wait_entry(&app, &admin, &first.delivery, |e| {
        e["status"] == "delivered"
    })
    .await;
    assert!(entry["attempts"].as_i64().unwrap() >= 3, "{entry}");
    assert_eq!(entry["last_status"], 200);
    assert!(entry["delivered_at"].is_string(), "{entry}");

    // Refused for good (404 is not retried): failed, then retried by an admin.
    receiver.answer(404);
    let _bob = app.connect(&app.token("bob").await).await;
    let refused = receiver
        .wait_for("bob online", |r| r.is("user.online", "bob"))
        .await;
    let failed = wait_entry(&app, &admin, &refused.delivery, |e| e["status"] == "failed").await;
    assert_eq!(failed["last_status"], 404);
    assert_eq!(failed["attempts"], 1);
    let listed = log(&app, &admin, "?status=failed").await;
    assert!(
        listed["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "failed"),
        "{listed}"
    );
    receiver.answer(204);
    let path = format!("/api/admin/webhooks/{}/retry", refused.delivery);
    let (status, body) = app.post(&path, Some(&admin), Value::Null).await;
    assert_eq!(status, 202, "{body}");
    receiver
        .wait_for("bob online again", |r| {
            r.delivery == refused.delivery && r.answered == 204
        })
        .await;
    wait_entry(&app, &admin, &refused.delivery, |e| {
        e["status"] == "delivered"
    })
    .await;
    // Only failed events can be retried; unknown ones are not found.
    let (status, _) = app.post(&path, Some(&admin), Value::Null).await;
    assert_eq!(status, 409);
    let (status, _) = app
        .post("/api/admin/webhooks/nope/retry", Some(&admin), Value::Null)
        .await;
    assert_eq!(status, 404);
    // Admins only.
    let (status, _) = app.get("/api/admin/webhooks", None).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .get("/api/admin/webhooks", Some(&app.token("bob").await))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .get("/api/admin/webhooks?status=lost", Some(&admin))
        .await;
    assert_eq!(status, 400);
}

/// Events not yet delivered when the service stops are delivered after it starts again (by
/// another node id, on the same database), with the same ids.
async fn pending_events_survive_a_restart(backend: Backend) {
    let mut receiver = Receiver::start().await;
    receiver.answer(503);
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db);
    hooks(&mut config, &receiver, Duration::from_secs(1));
    let app = TestApp::start_on(db, config.clone()).await;
    app.user("alice", &[]).await;
    let tab = app.connect(&app.token("alice").await).await;
    let online = receiver
        .wait_for("alice online", |r| r.is("user.online", "alice"))
        .await;
    assert_eq!(online.answered, 503);
    let db = app.stop().await;
    drop(tab);

    receiver.answer(204);
    config.node = format!("test-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::start_on(db, config).await;
    let delivered = receiver
        .wait_for("alice online after the restart", |r| {
            r.delivery == online.delivery && r.answered == 204
        })
        .await;
    assert_eq!(delivered.body, online.body);
    // The stop closed alice's connection: she went offline.
    receiver
        .wait_for("alice offline after the restart", |r| {
            r.is("user.offline", "alice") && r.answered == 204
        })
        .await;
    let admin = admin_token(&app).await;
    let body = common::eventually_some_within(WAIT, "no event pending", || async {
        let body = log(&app, &admin, "").await;
        (body["pending"] == 0).then_some(body)
    })
    .await;
    let ids: HashMap<&str, &Value> = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), &d["status"]))
        .collect();
    assert_eq!(
        ids.get(online.delivery.as_str()).copied(),
        Some(&Value::from("delivered"))
    );
}

/// Two nodes on one PostgreSQL database: a user connected to both goes online and offline once
/// (each edge is seen by one node), and every event is delivered once, never by both nodes at
/// the same time (claims with a lease, `FOR UPDATE SKIP LOCKED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres() {
    let mut receiver = Receiver::start().await;
    receiver.delay_ms.store(50, Ordering::SeqCst);
    let db = TestDb::new(Backend::Postgres).await;
    let shared = db.share();
    let mut config = test_config(&db);
    hooks(&mut config, &receiver, Duration::from_secs(1));
    let a = TestApp::start_on(db, config.clone()).await;
    config.node = format!("test-{}", uuid::Uuid::now_v7().simple());
    let b = TestApp::start_on(shared, config).await;
    let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    for user in &users {
        a.user(user, &[]).await;
    }
    a.user("alice", &[]).await;
    let alice = a.token("alice").await;
    let on_a = a.connect(&alice).await;
    let on_b = b.connect(&alice).await;
    let mut tabs = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        tabs.push(app.connect(&app.token(user).await).await);
    }
    for user in &users {
        receiver
            .wait_for("online", |r| r.is("user.online", user))
            .await;
    }
    for tab in [&on_a, &on_b] {
        receiver
            .wait_for("alice's connections", |r| {
                r.is("connection.connected", "alice")
                    && r.body["connection_id"] == tab.connection_id.as_str()
            })
            .await;
    }
    on_a.close().await;
    receiver
        .wait_for("alice's tab on a closing", |r| {
            r.is("connection.disconnected", "alice")
        })
        .await;
    on_b.close().await;
    for tab in tabs {
        tab.close().await;
    }
    for user in users.iter().map(String::as_str).chain(["alice"]) {
        receiver
            .wait_for("offline", |r| r.is("user.offline", user))
            .await;
    }
    assert_eq!(receiver.all("user.online", "alice").len(), 1);
    assert_eq!(receiver.all("user.offline", "alice").len(), 1);
    let mut ids = HashSet::new();
    for received in &receiver.seen {
        assert!(
            ids.insert(&received.delivery),
            "delivered twice: {received:#?}"
        );
    }
    // Both nodes recorded events.
    let nodes: HashSet<&str> = receiver
        .seen
        .iter()
        .filter_map(|r| r.body["node"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

on_both_backends!(
    online_at_once_offline_after_debounce,
    reload_within_debounce_sends_nothing,
    failing_receiver_then_recovering,
    pending_events_survive_a_restart,
);

fn load(env: &[(&str, &str)]) -> Result<Config, signalbox_server::config::ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load_from(None, |k| env.get(k).cloned(), &Overrides::default())
}

#[test]
fn configuration() {
    let off = load(&[]).unwrap();
    assert!(!off.webhooks.is_enabled());
    assert_eq!(off.webhooks.debounce, Duration::from_secs(3));
    assert_eq!(off.webhooks.events.len(), 4);

    let url = (
        "SIGNALBOX_WEBHOOKS_URL",
        "https://hooks.example.com/signalbox",
    );
    let missing = load(&[url]).unwrap_err().to_string();
    assert!(missing.contains("SIGNALBOX_WEBHOOKS_SECRET"), "{missing}");
    let weak = load(&[url, ("SIGNALBOX_WEBHOOKS_SECRET", "short-one")])
        .unwrap_err()
        .to_string();
    assert!(weak.contains("webhooks.secret"), "{weak}");
    assert!(!weak.contains("short-one"), "{weak}");

    let on = load(&[
        url,
        ("SIGNALBOX_WEBHOOKS_SECRET", HOOK_SECRET),
        ("SIGNALBOX_WEBHOOKS_EVENTS", "user.offline, user.online"),
        ("SIGNALBOX_WEBHOOKS_DEBOUNCE", "5s"),
        ("SIGNALBOX_WEBHOOKS_MAX_ATTEMPTS", "3"),
    ])
    .unwrap();
    assert!(on.webhooks.is_enabled());
    assert_eq!(on.webhooks.events.len(), 2);
    assert_eq!(on.webhooks.debounce, Duration::from_secs(5));
    assert_eq!(on.webhooks.max_attempts, 3);
    assert!(!format!("{on:?}").contains(HOOK_SECRET));

    let bad = load(&[
        url,
        ("SIGNALBOX_WEBHOOKS_SECRET", HOOK_SECRET),
        ("SIGNALBOX_WEBHOOKS_EVENTS", "user.away"),
    ])
    .unwrap_err()
    .to_string();
    assert!(bad.contains("user.away"), "{bad}");
    let bad = load(&[("SIGNALBOX_WEBHOOKS_URL", "hooks.example.com")])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("SIGNALBOX_WEBHOOKS_URL"), "{bad}");
}
