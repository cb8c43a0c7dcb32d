//! The metrics the library records, checked after known traffic with a debugging recorder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use axum::Router;
use common::{Client, SECRET, http, serve, token};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use signalbox::protocol::{Payload, Protocol};
use signalbox::{Caller, Hub, HubError, HubRouterExt, JwtAuth, Policy};

type Series = HashMap<(String, Vec<(String, String)>), f64>;

fn snapshot(snapshotter: &Snapshotter) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn get(series: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wanted.sort();
    series
        .get(&(name.to_owned(), wanted))
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_follow_known_traffic() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let hub = Hub::builder("metered")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .authorize(Policy::authenticated())
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .method("Fail", |_c: Caller, ()| async move {
            Err::<(), _>(HubError::new("no"))
        })
        .build();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let t = token(json!({"sub": "a"}));

    // Two refused negotiations: no token, expired token.
    http(addr, "POST", "/hub/negotiate", &[], b"").await;
    let expired = format!(
        "Bearer {}",
        token(json!({"sub": "a", "exp": common::now() - 3600}))
    );
    http(
        addr,
        "POST",
        "/hub/negotiate",
        &[("Authorization", &expired)],
        b"",
    )
    .await;

    let mut json_client = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    let mut msgpack_client = Client::connect(addr, "/hub", Some(&t), Protocol::MessagePack).await;
    for _ in 0..3 {
        json_client.invoke("Echo", vec![Payload::new(1)]).await;
    }
    json_client.invoke("Fail", vec![]).await;
    json_client.invoke("Nope", vec![]).await;
    msgpack_client.invoke("echo", vec![Payload::new(2)]).await;

    let series = snapshot(&snapshotter);
    let ws_json = [
        ("hub", "metered"),
        ("transport", "WebSockets"),
        ("protocol", "json"),
    ];
    let ws_msgpack = [
        ("hub", "metered"),
        ("transport", "WebSockets"),
        ("protocol", "messagepack"),
    ];
    assert_eq!(get(&series, "signalbox_connections", &ws_json), 1.0);
    assert_eq!(get(&series, "signalbox_connections", &ws_msgpack), 1.0);
    assert_eq!(get(&series, "signalbox_connects_total", &ws_json), 1.0);
    assert_eq!(get(&series, "signalbox_negotiations_total", &[]), 2.0);
    assert_eq!(
        get(
            &series,
            "signalbox_auth_failures_total",
            &[("reason", "missing")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &series,
            "signalbox_auth_failures_total",
            &[("reason", "expired")]
        ),
        1.0
    );
    let ok = [("hub", "metered"), ("method", "echo"), ("outcome", "ok")];
    assert_eq!(get(&series, "signalbox_invocations_total", &ok), 4.0);
    let failed = [("hub", "metered"), ("method", "fail"), ("outcome", "error")];
    assert_eq!(get(&series, "signalbox_invocations_total", &failed), 1.0);
    let unknown = [
        ("hub", "metered"),
        ("method", "*"),
        ("outcome", "unknown_method"),
    ];
    assert_eq!(get(&series, "signalbox_invocations_total", &unknown), 1.0);
    assert_eq!(
        get(
            &series,
            "signalbox_invocation_duration_seconds",
            &[("hub", "metered"), ("method", "echo")]
        ),
        4.0
    );
    // Handshake pings are not hub messages here; 5 invocations + pings from the clients' own traffic.
    assert!(
        get(
            &series,
            "signalbox_messages_received_total",
            &[("protocol", "json")]
        ) >= 5.0
    );
    assert!(get(&series, "signalbox_bytes_received_total", &[]) > 0.0);
    assert!(
        get(
            &series,
            "signalbox_bytes_sent_total",
            &[("transport", "WebSockets")]
        ) > 0.0
    );

    // Snapshots hand out what changed since the previous one, so sum them up.
    drop(json_client);
    let sums = std::cell::Cell::new((0.0, 0.0));
    common::eventually("the disconnect to be counted", || async {
        let series = snapshot(&snapshotter);
        let (closed, gauge) = sums.get();
        let closed = closed
            + get(
                &series,
                "signalbox_disconnects_total",
                &[("hub", "metered"), ("reason", "client_closed")],
            );
        sums.set((
            closed,
            gauge + get(&series, "signalbox_connections", &ws_json),
        ));
        closed >= 1.0
    })
    .await;
    let (closed, gauge) = sums.get();
    assert_eq!(closed, 1.0);
    assert_eq!(gauge, -1.0, "the connection gauge went down by one");
}
