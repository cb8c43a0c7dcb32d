//! The backplane counters of a scaled lifetime manager, after known cross-node traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::sync::Arc;

use axum::Router;
use common::{Client, SECRET, serve, token};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use signalbox::lifetime::MemoryBus;
use signalbox::metrics::{BACKPLANE_PUBLISHED, BACKPLANE_RECEIVED};
use signalbox::protocol::{HubMessage, Protocol};
use signalbox::{Hub, HubRouterExt, JwtAuth, ScaledLifetimeManager};

/// (published, received) since the last call: a snapshot drains the debugging recorder.
fn drain(snapshotter: &Snapshotter) -> (u64, u64) {
    let mut counts = (0, 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        match key.key().name() {
            BACKPLANE_PUBLISHED => counts.0 += n,
            BACKPLANE_RECEIVED => counts.1 += n,
            _ => {}
        }
    }
    counts
}

fn node(bus: &MemoryBus) -> Hub {
    Hub::builder("scaled")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .lifetime_manager(Arc::new(ScaledLifetimeManager::new(bus.backplane(), "t")))
        .build()
}

#[tokio::test]
async fn published_and_received_envelopes_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let bus = MemoryBus::new();
    let (a, b) = (node(&bus), node(&bus));
    let context_a = a.context();
    let _addr_a = serve(Router::new().map_hub("/hub", a)).await;
    let addr_b = serve(Router::new().map_hub("/hub", b)).await;
    let mut client = Client::connect(
        addr_b,
        "/hub",
        Some(&token(json!({"sub": "u"}))),
        Protocol::Json,
    )
    .await;

    // Start from zero, then add up.
    drain(&snapshotter);
    for n in 0..3u32 {
        context_a.clients().all().send("Hello", (n,)).await.unwrap();
    }
    // The client on node B gets all three, so each crossed the backplane.
    let mut got = Vec::new();
    while got.len() < 3 {
        if let HubMessage::Invocation(inv) = client.recv_non_ping().await.expect("closed") {
            got.push(inv.arguments[0].deserialize::<u32>().unwrap());
        }
    }
    assert_eq!(got, [0, 1, 2]);
    // Both nodes subscribe to the all-channel, so each envelope is received twice (the sender
    // then ignores its own). A fourth message marks the end: once it has been received by both
    // nodes and the client, anything more from the first three would have been counted already.
    context_a
        .clients()
        .all()
        .send("Hello", (3u32,))
        .await
        .unwrap();
    loop {
        if let HubMessage::Invocation(inv) = client.recv_non_ping().await.expect("closed") {
            assert_eq!(inv.arguments[0].deserialize::<u32>().unwrap(), 3);
            break;
        }
    }
    let totals = Cell::new((0, 0));
    common::eventually("both nodes to receive all four envelopes", || async {
        let (p, r) = drain(&snapshotter);
        let (published, received) = totals.get();
        totals.set((published + p, received + r));
        received + r >= 8
    })
    .await;
    assert_eq!(totals.get(), (4, 8));
}
