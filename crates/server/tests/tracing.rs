//! OpenTelemetry traces end to end: an OTLP/HTTP receiver in this process, two nodes over a
//! private Redis backplane, a publish with a `traceparent`, and a hub invocation with one.
//!
//! One test function: the tracing subscriber and the tracer provider are process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use common::{Backend, HubClient, TestApp, test_config};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use signalbox_server::config::LogFormat;
use signalbox_server::server::build;
use signalbox_server::telemetry::{Telemetry, TelemetryConfig};

const HUB: &str = "/hubs/notifications";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const HUB_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HUB_CALLER_SPAN: &str = "b7ad6b7169203331";

#[derive(Debug, Clone)]
struct SpanRecord {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

type Received = Arc<Mutex<Vec<SpanRecord>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1.
async fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut spans = store.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            let attributes = span
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let value =
                                        match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                            Some(AnyValue::StringValue(s)) => s,
                                            Some(AnyValue::IntValue(i)) => i.to_string(),
                                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                                            other => format!("{other:?}"),
                                        };
                                    (kv.key.clone(), value)
                                })
                                .collect();
                            spans.push(SpanRecord {
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// Waits until a span named `name` in `trace` (any trace if empty) and satisfying `check` was
/// exported.
async fn wait_span(
    received: &Received,
    trace: &str,
    name: &str,
    check: impl Fn(&SpanRecord) -> bool,
) -> SpanRecord {
    let check = &check;
    common::eventually_some_within(
        Duration::from_secs(15),
        &format!("a span '{name}' in trace {trace:?}"),
        || async move {
            received
                .lock()
                .unwrap()
                .iter()
                .find(|s| (trace.is_empty() || s.trace_id == trace) && s.name == name && check(s))
                .cloned()
        },
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_a_notification_across_nodes_and_hub_invocations() {
    let (otlp, received) = receiver().await;
    let config = TelemetryConfig {
        endpoint: Some(format!("http://{otlp}/v1/traces")),
        service_name: Some("signalbox-test".to_owned()),
        schedule_delay: Some(Duration::from_millis(50)),
    };
    // Outside the runtime: the exporter's client is a blocking one.
    let telemetry = std::thread::spawn(move || Telemetry::start(&config))
        .join()
        .unwrap()
        .expect("telemetry starts");
    signalbox_server::logging::init_with(LogFormat::Json, Some(&telemetry));

    // A private Redis for the backplane.
    let port = free_port();
    let _redis = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed (scripts/setup.sh)");
    let redis = format!("redis://127.0.0.1:{port}");
    let prefix = format!("trace-{}", uuid::Uuid::now_v7().simple());

    // Node A (publishes) and node B (holds the recipient's connection), one database.
    let db = common::TestDb::new(Backend::Sqlite).await;
    let cluster = |config: &mut signalbox_server::config::Config, node: &str| {
        config.node = format!("{node}-{prefix}");
        config.backplane = Some(redis.clone());
        config.cluster.channel_prefix = prefix.clone();
        config.connection_token_secret =
            Some("tracing-connection-token-secret-0123456789-xyz".to_owned());
    };
    let mut config_b = test_config(&db);
    cluster(&mut config_b, "b");
    let mut config_a = test_config(&db);
    cluster(&mut config_a, "a");
    let node_b = build(config_b).await.expect("node b builds");
    let state_b = node_b.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr_b = listener.local_addr().unwrap();
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let task_b = tokio::spawn(node_b.serve(listener, async move {
        let _ = stopped_b.await;
    }));
    let app = TestApp::start_on(db, config_a).await;
    for state in [&app.state, &state_b] {
        let backplane = state.backplane.as_ref().expect("a backplane");
        assert!(backplane.wait_healthy(Duration::from_secs(10)).await);
    }
    app.user("alice", &[]).await;
    app.user("svc", &["permission=notify"]).await;
    let alice_token = app.token("alice").await;
    let svc = app.token("svc").await;
    let mut alice = HubClient::connect(addr_b, HUB, &alice_token).await;
    // A first invocation completes once `on_connected` has run, inbox replay included: a
    // notification stored before that would also be replayed, in the replay's own trace.
    alice.invoke("GetOnlineUsers", json!([])).await.unwrap();

    // 1. A publish on node A with the caller's trace context, delivered on node B. Published
    //    again until it arrives: node B's subscription may still be on its way to Redis.
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let notification = loop {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        let response = app
            .http
            .post(format!("{}/api/notifications", app.url))
            .bearer_auth(&svc)
            .header("traceparent", &traceparent)
            .json(&json!({"user": "alice", "message": "traced"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        if let Some(message) = alice
            .try_expect_message("Notification", Duration::from_millis(500))
            .await
        {
            break message;
        }
    };
    let delivered = notification["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent header: {notification}"));
    let parts: Vec<&str> = delivered.split('-').collect();
    assert_eq!(parts.len(), 4, "{delivered}");
    assert_eq!(parts[1], TRACE, "the client continues the caller's trace");
    let deliver_id = parts[2].to_owned();

    // The span tree: request → publish → (inbox write, deliver → backplane publish → receive).
    let request = wait_span(&received, TRACE, "POST /api/notifications", |s| {
        s.parent == CALLER_SPAN
    })
    .await;
    let deliver = wait_span(&received, TRACE, "deliver", |s| s.span_id == deliver_id).await;
    let publish = wait_span(&received, TRACE, "publish notification", |s| {
        s.span_id == deliver.parent
    })
    .await;
    assert_eq!(publish.parent, request.span_id);
    wait_span(&received, TRACE, "inbox write", |s| {
        s.parent == publish.span_id
    })
    .await;
    let out = wait_span(&received, TRACE, "backplane publish", |s| {
        s.parent == deliver.span_id
    })
    .await;
    let node_b_id = format!("b-{prefix}");
    let receive = wait_span(&received, TRACE, "backplane receive", |s| {
        s.parent == out.span_id
    })
    .await;
    assert_eq!(
        receive.attributes.get("signalr.node").map(String::as_str),
        Some(node_b_id.as_str())
    );

    // 2. A hub invocation with a traceparent header: `{Hub}/{Method}` is its child.
    alice
        .send_raw(json!({
            "type": 1,
            "invocationId": "t1",
            "target": "GetOnlineUsers",
            "arguments": [],
            "headers": {"traceparent": format!("00-{HUB_TRACE}-{HUB_CALLER_SPAN}-01")},
        }))
        .await;
    let invocation = wait_span(&received, HUB_TRACE, "notifications/GetOnlineUsers", |s| {
        s.parent == HUB_CALLER_SPAN
    })
    .await;
    let attribute = |key: &str| invocation.attributes.get(key).cloned().unwrap_or_default();
    assert_eq!(attribute("rpc.system"), "signalr");
    assert_eq!(attribute("rpc.service"), "notifications");
    assert_eq!(attribute("rpc.method"), "GetOnlineUsers");
    assert_eq!(attribute("signalr.connection.id"), alice.connection_id);
    assert_eq!(attribute("signalr.transport"), "web_sockets");

    // The connection (ended by the close) and negotiate spans, in traces of their own.
    let connection_id = alice.connection_id.clone();
    alice.close().await;
    wait_span(&received, "", "notifications/connection", |s| {
        s.attributes.get("signalr.connection.id") == Some(&connection_id)
    })
    .await;
    wait_span(&received, "", "/hubs/notifications negotiate", |_| true).await;

    let _ = stop_b.send(());
    let _ = task_b.await;
    app.stop().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
}
