//! Operations: `/metrics` after known traffic, `/health/live` and `/health/ready` (flipping when
//! the database behind a TCP proxy goes away and when a registered check fails), request ids,
//! the admin API and the dashboard page.
//!
//! The Prometheus recorder is global to the process, so every test here holds [`SERIAL`] and
//! compares counters before and after its own traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Backend, TestApp, TestDb, postgres_admin_url, test_config};
use serde_json::{Map, Value, json};
use signalbox_server::auth::accounts::NewUser;
use signalbox_server::ops::health::{CheckFuture, ReadinessCheck};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const METRICS_TOKEN: &str = "scrape-token-0123456789abcdef";

async fn admin(app: &TestApp, name: &str) -> String {
    app.state
        .accounts
        .create(NewUser {
            name: name.to_owned(),
            password: Some(common::PASSWORD.to_owned()),
            roles: vec!["admin".to_owned()],
            claims: Default::default(),
        })
        .await
        .unwrap();
    app.token(name).await
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut request = app.http.get(format!("{}/metrics", app.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of one series, given its exact label set as rendered (`""` for none); 0 if absent.
fn series(text: &str, name: &str, labels: &str) -> f64 {
    let wanted = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(s, _)| *s == wanted)
        .map_or(0.0, |(_, v)| v.parse().unwrap())
}

/// The sum of every series of `name` whose labels contain all of `must`.
fn sum(text: &str, name: &str, must: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(s, _)| {
            let metric = s.split('{').next().unwrap_or_default();
            metric == name && must.iter().all(|m| s.contains(m))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

const WS_JSON: &str = "hub=\"notifications\",transport=\"WebSockets\",protocol=\"json\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let root = admin(&app, "root").await;
    app.user("alice", &[]).await;
    app.user("svc", &["permission=notify"]).await;
    let alice = app.token("alice").await;
    let svc = app.token("svc").await;

    let (status, before) = scrape(&app, Some(&root)).await;
    assert_eq!(status, 200, "{before}");

    // Two connections of alice, over WebSockets with JSON.
    let mut first = app.connect(&alice).await;
    let second = app.connect(&alice).await;
    app.wait_presence("alice", &alice, |p| {
        p["connections"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    // Invocations: two that succeed, one the policy denies, one unknown method.
    assert!(first.invoke("MarkRead", json!(["nope"])).await.is_ok());
    assert!(first.invoke("GetOnlineUsers", json!([])).await.is_ok());
    assert!(
        first
            .invoke("SendNotification", json!(["alice", "x"]))
            .await
            .is_err()
    );
    assert!(first.invoke("NoSuchMethod", json!([])).await.is_err());
    // Three notifications published to alice, delivered live.
    for i in 0..3 {
        let (status, body) = app
            .post(
                "/api/notifications",
                Some(&svc),
                json!({"user": "alice", "message": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        first.expect("Notification").await;
    }
    // One refused token at negotiate.
    let refused = app
        .negotiate_request(None, "not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    second.close().await;
    app.wait_presence("alice", &alice, |p| {
        p["connections"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;

    // Delivery is recorded right after the push: poll briefly.
    let baseline = &before;
    let after = common::eventually_some("3 deliveries and 1 disconnect in the metrics", || {
        let (app, root) = (&app, &root);
        async move {
            let after = scrape(app, Some(root)).await.1;
            let delivered = series(
                &after,
                "signalbox_notification_delivery_seconds_count",
                "path=\"live\"",
            ) - series(
                baseline,
                "signalbox_notification_delivery_seconds_count",
                "path=\"live\"",
            );
            let disconnects = sum(&after, "signalbox_disconnects_total", &[])
                - sum(baseline, "signalbox_disconnects_total", &[]);
            (delivered >= 3.0 && disconnects >= 1.0).then_some(after)
        }
    })
    .await;
    let delta =
        |name: &str, labels: &str| series(&after, name, labels) - series(&before, name, labels);

    assert_eq!(delta("signalbox_connects_total", WS_JSON), 2.0, "{after}");
    assert_eq!(delta("signalbox_connections", WS_JSON), 1.0, "{after}");
    assert_eq!(
        sum(
            &after,
            "signalbox_disconnects_total",
            &["hub=\"notifications\""]
        ) - sum(
            &before,
            "signalbox_disconnects_total",
            &["hub=\"notifications\""]
        ),
        1.0
    );
    assert_eq!(
        sum(&after, "signalbox_auth_failures_total", &[])
            - sum(&before, "signalbox_auth_failures_total", &[]),
        1.0,
        "{after}"
    );
    let invocations = |method: &str, outcome: &str| {
        delta(
            "signalbox_invocations_total",
            &format!("hub=\"notifications\",method=\"{method}\",outcome=\"{outcome}\""),
        )
    };
    assert_eq!(invocations("markread", "ok"), 1.0, "{after}");
    assert_eq!(invocations("getonlineusers", "ok"), 1.0);
    assert_eq!(invocations("sendnotification", "unauthorized"), 1.0);
    assert_eq!(invocations("*", "unknown_method"), 1.0);
    assert_eq!(delta("signalbox_notifications_published_total", ""), 3.0);
    assert_eq!(
        delta(
            "signalbox_notification_delivery_seconds_count",
            "path=\"live\""
        ),
        3.0
    );
    // Handshake + 4 invocations from the first client, at least.
    assert!(
        delta("signalbox_messages_received_total", "protocol=\"json\"") >= 4.0,
        "{after}"
    );
    assert!(
        sum(&after, "signalbox_bytes_received_total", &[])
            > sum(&before, "signalbox_bytes_received_total", &[])
    );
    // Three notifications plus presence changes and completions.
    assert!(delta("signalbox_messages_sent_total", "") >= 3.0);
    assert!(
        sum(
            &after,
            "signalbox_bytes_sent_total",
            &["transport=\"WebSockets\""]
        ) > sum(
            &before,
            "signalbox_bytes_sent_total",
            &["transport=\"WebSockets\""]
        )
    );
    // Histograms with the configured buckets.
    assert!(after.contains(
        "signalbox_invocation_duration_seconds_bucket{hub=\"notifications\",method=\"markread\",le=\"0.0005\"}"
    ), "{after}");
    assert!(
        after
            .contains("signalbox_notification_delivery_seconds_bucket{path=\"live\",le=\"86400\"}"),
        "{after}"
    );
    // Placeholders and types.
    assert!(after.contains("# TYPE signalbox_outbound_queue_drops_total counter"));
    assert!(after.contains("signalbox_backplane_messages_published_total 0"));
    assert!(after.contains("# TYPE signalbox_inbox_unread gauge"));
    // No per-user label anywhere.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("alice") && !line.contains("user="), "{line}");
    }
    first.close().await;
}

/// Whether a series (name plus rendered labels) is exported, whatever its value.
fn has(text: &str, series: &str) -> bool {
    let prefix = format!("{series} ");
    text.lines().any(|line| line.starts_with(&prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_exported_from_the_start() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let root = admin(&app, "root").await;
    let (status, text) = scrape(&app, Some(&root)).await;
    assert_eq!(status, 200, "{text}");
    // Never counted by these tests: registered at zero.
    for zero in [
        "signalbox_rate_limited_total{endpoint=\"login_account\"}",
        "signalbox_auth_failures_total{reason=\"not_yet_valid\"}",
        "signalbox_auth_failures_total{reason=\"email_unverified\"}",
        "signalbox_connects_total{hub=\"notifications\",transport=\"LongPolling\",protocol=\"messagepack\"}",
        "signalbox_connections{hub=\"notifications\",transport=\"LongPolling\",protocol=\"messagepack\"}",
        "signalbox_disconnects_total{hub=\"notifications\",reason=\"shutdown\"}",
        "signalbox_outbound_queue_drops_total",
        "signalbox_backplane_lost_messages_total",
        "signalbox_notification_delivery_seconds_count{path=\"replay\"}",
    ] {
        assert!(has(&text, zero), "{zero} missing:\n{text}");
        assert_eq!(series(&text, zero, ""), 0.0, "{zero}");
    }
    for present in [
        "signalbox_negotiations_total",
        "signalbox_messages_received_total{protocol=\"messagepack\"}",
        "signalbox_bytes_sent_total{transport=\"ServerSentEvents\"}",
        "signalbox_invocations_total{hub=\"notifications\",method=\"markread\",outcome=\"ok\"}",
        "signalbox_invocations_total{hub=\"notifications\",method=\"*\",outcome=\"unknown_method\"}",
        "signalbox_invocation_duration_seconds_count{hub=\"notifications\",method=\"markread\"}",
        "signalbox_notifications_published_total",
    ] {
        assert!(has(&text, present), "{present} missing:\n{text}");
    }
    assert!(
        text.contains("# TYPE signalbox_connections gauge"),
        "{text}"
    );
    // Server-Sent Events carry text only: no MessagePack series.
    assert!(
        !text.contains("transport=\"ServerSentEvents\",protocol=\"messagepack\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_by_route_template_and_connections_by_hub() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let root = admin(&app, "root").await;
    app.user("alice", &[]).await;
    let alice = app.token("alice").await;
    let (_, before) = scrape(&app, Some(&root)).await;

    let (status, body) = app.get("/api/users/alice/presence", Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app.get("/api/users/alice/presence", None).await;
    assert_eq!(status, 401);
    let (status, _) = app.get("/no/such/route/alice", None).await;
    assert_eq!(status, 404);
    let client = app.connect(&alice).await;
    app.wait_presence("alice", &alice, |p| {
        p["connections"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;

    let (_, after) = scrape(&app, Some(&root)).await;
    let delta =
        |name: &str, labels: &str| series(&after, name, labels) - series(&before, name, labels);
    const PRESENCE: &str = "route=\"/api/users/{id}/presence\",method=\"GET\"";
    assert!(
        delta(
            "signalbox_http_requests_total",
            &format!("{PRESENCE},status=\"2xx\"")
        ) >= 2.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "signalbox_http_requests_total",
            &format!("{PRESENCE},status=\"4xx\"")
        ),
        1.0,
        "{after}"
    );
    assert!(
        delta("signalbox_http_request_duration_seconds_count", PRESENCE) >= 3.0,
        "{after}"
    );
    assert!(
        after.contains(&format!(
            "signalbox_http_request_duration_seconds_bucket{{{PRESENCE},le=\"0.001\"}}"
        )),
        "{after}"
    );
    assert_eq!(
        delta(
            "signalbox_http_requests_total",
            "route=\"unmatched\",method=\"GET\",status=\"4xx\""
        ),
        1.0,
        "{after}"
    );
    // The hub's negotiate and the scrape itself are counted under their templates too.
    assert!(
        sum(
            &after,
            "signalbox_http_requests_total",
            &["route=\"/hubs/notifications/negotiate\"", "method=\"POST\""]
        ) >= 1.0,
        "{after}"
    );
    assert!(has(
        &after,
        "signalbox_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"2xx\"}"
    ));
    // Connections of the hub, whatever the transport and protocol.
    let connections = |text: &str| sum(text, "signalbox_connections", &["hub=\"notifications\""]);
    assert_eq!(connections(&after) - connections(&before), 1.0, "{after}");
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("alice"), "{line}");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_gauge_counts_unread() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let root = admin(&app, "root").await;
    app.user("bob", &[]).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    for _ in 0..4 {
        let (status, _) = app
            .post(
                "/api/notifications",
                Some(&svc),
                json!({"user": "bob", "message": "m"}),
            )
            .await;
        assert_eq!(status, 201);
    }
    signalbox_server::ops::metrics::refresh_inbox_gauge(&app.state.inbox).await;
    let (_, text) = scrape(&app, Some(&root)).await;
    assert_eq!(series(&text, "signalbox_inbox_unread", ""), 4.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.metrics.token = Some(METRICS_TOKEN.to_owned());
    })
    .await;
    app.user("plain", &[]).await;
    let plain = app.token("plain").await;
    let root = admin(&app, "root").await;
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("wrong-token")).await.0, 401);
    assert_eq!(scrape(&app, Some(&plain)).await.0, 403);
    let (status, text) = scrape(&app, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE signalbox_notifications_published_total counter"));
    assert_eq!(scrape(&app, Some(&root)).await.0, 200);

    let public = TestApp::start_with(Backend::Sqlite, |c| c.metrics.public = true).await;
    assert_eq!(scrape(&public, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_honoured_or_generated() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let response = app
        .http
        .get(format!("{}/health/live", app.url))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let generated = app
        .http
        .get(format!("{}/health/live", app.url))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

/// A TCP proxy to PostgreSQL that can be cut (closing every proxied connection and refusing
/// new ones) and restored.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            down,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn ready(app: &TestApp) -> (u16, Value) {
    app.get("/health/ready", None).await
}

async fn wait_ready(app: &TestApp, want: u16) -> Value {
    common::eventually_some_within(
        Duration::from_secs(15),
        &format!("/health/ready to answer {want}"),
        || async move {
            let (status, body) = ready(app).await;
            (status == want).then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_when_postgres_goes_away() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::new(Backend::Postgres).await;
    let admin_url = postgres_admin_url();
    let host_port = admin_url
        .split_once('@')
        .map_or("127.0.0.1:5432", |(_, rest)| {
            rest.split('/').next().unwrap()
        });
    let target: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let mut config = test_config(&db);
    config.database = db.url.replace(host_port, &proxy.addr.to_string());
    assert_ne!(config.database, db.url);
    let app = TestApp::start_on(db, config).await;

    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["database"]["backend"], "postgres");
    assert_eq!(body["checks"]["hub"]["status"], "ok");
    assert_eq!(body["checks"]["backplane"]["status"], "not_configured");

    proxy.cut();
    let body = wait_ready(&app, 503).await;
    assert_eq!(body["status"], "fail", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "fail", "{body}");
    assert!(body["checks"]["database"]["error"].is_string(), "{body}");
    assert_eq!(body["checks"]["hub"]["status"], "ok");
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health/live", None).await.0, 200);

    proxy.restore();
    let body = wait_ready(&app, 200).await;
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    app.stop().await;
}

/// A stand-in for the backplane's check, switched by the test.
struct Switch(Arc<AtomicBool>);

impl ReadinessCheck for Switch {
    fn name(&self) -> &str {
        "backplane"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Ok(Map::from_iter([("kind".into(), json!("test"))]))
            } else {
                Err("subscription lost".to_owned())
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_includes_registered_checks() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let up = Arc::new(AtomicBool::new(true));
    app.state.readiness.register(Switch(up.clone()));
    let (status, body) = ready(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["backplane"]["status"], "ok");
    assert_eq!(body["checks"]["backplane"]["kind"], "test");
    up.store(false, Ordering::SeqCst);
    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["backplane"]["status"], "fail");
    assert_eq!(body["checks"]["backplane"]["error"], "subscription lost");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    up.store(true, Ordering::SeqCst);
    assert_eq!(ready(&app).await.0, 200);
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> u16 {
    app.http
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    let root = admin(&app, "root").await;
    app.user("carol", &[]).await;
    let carol = app.token("carol").await;

    // Not for ordinary users.
    assert_eq!(app.get("/api/admin/stats", None).await.0, 401);
    assert_eq!(app.get("/api/admin/stats", Some(&carol)).await.0, 403);

    let client = app.connect(&carol).await;
    app.wait_presence("carol", &carol, |p| {
        p["connections"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    let (status, connections) = app
        .get("/api/admin/users/carol/connections", Some(&root))
        .await;
    assert_eq!(status, 200, "{connections}");
    assert_eq!(connections.as_array().unwrap().len(), 1, "{connections}");
    assert_eq!(
        connections[0]["connection_id"],
        client.connection_id.as_str()
    );
    assert_eq!(connections[0]["user_agent"], "signalbox-tests/1");
    assert_eq!(
        app.get("/api/admin/users/nobody/connections", Some(&root))
            .await
            .0,
        404
    );

    let (status, stats) = app.get("/api/admin/stats", Some(&root)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["connections_here"], 1);
    assert_eq!(stats["connections_total"], 1);
    assert_eq!(stats["online_users"], json!(["carol"]));
    assert!(stats["samples"].is_array());
    assert!(stats["recent_errors"].is_array());

    // Groups.
    let path = "/api/admin/groups/ops/members/carol";
    assert_eq!(send(&app, reqwest::Method::PUT, path, &carol).await, 403);
    assert_eq!(send(&app, reqwest::Method::PUT, path, &root).await, 204);
    assert_eq!(
        app.state.db.group_members("ops").await.unwrap(),
        vec!["carol".to_owned()]
    );
    let (_, stats) = app.get("/api/admin/stats", Some(&root)).await;
    assert_eq!(stats["groups"], json!([{"name": "ops", "members": 1}]));
    assert_eq!(send(&app, reqwest::Method::DELETE, path, &root).await, 204);
    assert_eq!(send(&app, reqwest::Method::DELETE, path, &root).await, 404);
    assert_eq!(
        send(
            &app,
            reqwest::Method::PUT,
            "/api/admin/groups/ops/members/nobody",
            &root
        )
        .await,
        404
    );

    // Disconnect.
    let id = client.connection_id.clone();
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/api/admin/connections/{id}"),
            &carol
        )
        .await,
        403
    );
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/api/admin/connections/{id}"),
            &root
        )
        .await,
        204
    );
    // The client is still open on its side: only the server can have ended the connection.
    app.wait_presence("carol", &carol, |p| {
        p["connections"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/api/admin/connections/{id}"),
            &root
        )
        .await,
        404
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_served() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(Backend::Sqlite).await;
    for (path, kind, needle) in [
        ("/admin", "text/html", "signalbox"),
        ("/admin/dashboard.js", "text/javascript", "/api/admin/stats"),
        ("/admin/dashboard.css", "text/css", ".tiles"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
}
