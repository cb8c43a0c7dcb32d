//! A node flooded over the backplane with envelopes that need work (group changes for one of its
//! connections) handles at most `max_envelopes_in_flight` of them at once, stops reading while
//! they run (the backplane's own queue bounds the backlog), acks every envelope it took once the
//! work can finish, and its memory stays flat.
//!
//! The envelopes are written byte by byte from the layout documented in
//! `crates/signalbox/src/lifetime/scaled/envelope.rs`; the node's acks are held at a gate in the
//! backplane driver, so every handler stays busy until the test opens it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use bytes::Bytes;
use common::{Client, eventually, serve};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use signalbox::lifetime::{
    Backplane, BackplaneError, BackplaneState, BackplaneStream, MemoryBackplane, MemoryBus,
    ScaledOptions,
};
use signalbox::metrics::{BACKPLANE_ENVELOPES_IN_FLIGHT, BACKPLANE_ENVELOPES_WAITED};
use signalbox::protocol::Protocol;
use signalbox::{Hub, HubLifetimeManager, HubRouterExt, ScaledLifetimeManager};
use tokio::sync::watch;

const PREFIX: &str = "flood";
const ORIGIN: &str = "flooder";
const CAP: usize = 32;
const FLOOD: u64 = 200_000;
/// The request id of the envelope sent after the flood.
const LAST: u64 = u64::MAX;
/// How much the resident set may grow during the flood. It grows by under 1 MiB; handling every
/// envelope it reads at once (one task each, no cap) grew it by about 44 MiB here, the bus
/// dropping most of the flood for want of a faster reader.
const RSS_BOUND: u64 = 16 << 20;

/// A [`MemoryBackplane`] that holds the node's acks until the gate opens (counting them instead
/// of publishing them) and counts the group changes the node reads.
struct Gated {
    inner: MemoryBackplane,
    gate: watch::Receiver<bool>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Group-change envelopes the node read from its message stream.
    taken: AtomicU64,
    /// Acks the node published.
    acks: AtomicU64,
    /// Whether the ack of the last envelope was published.
    last_acked: AtomicU64,
}

impl Backplane for Gated {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        if channel != format!("{PREFIX}:internal:ack:{ORIGIN}") {
            return self.inner.publish(channel, payload);
        }
        let mut gate = self.gate.clone();
        let counts = self.counts.clone();
        async move {
            if gate.wait_for(|open| *open).await.is_err() {
                // The test is over.
                return Err(BackplaneError::NotConnected);
            }
            // An ack: version 1, kind 3, the request id.
            assert_eq!(payload.len(), 10);
            assert_eq!(payload[..2], [1, 3]);
            if payload[2..] == LAST.to_be_bytes() {
                counts.last_acked.store(1, Ordering::SeqCst);
            }
            counts.acks.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        .boxed()
    }

    fn subscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.inner.subscribe(channels)
    }

    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        self.inner.unsubscribe(channels)
    }

    fn messages(&self) -> Option<BackplaneStream> {
        let counts = self.counts.clone();
        let groups = format!("{PREFIX}:internal:groups");
        Some(
            self.inner
                .messages()?
                .inspect(move |message| {
                    if message.channel == groups {
                        counts.taken.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .boxed(),
        )
    }

    fn state(&self) -> watch::Receiver<BackplaneState> {
        self.inner.state()
    }
}

/// A group-add envelope from [`ORIGIN`] for `connection_id`, request `id`.
fn group_add(id: u64, connection_id: &str) -> Bytes {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = vec![1, 2];
    string(&mut out, ORIGIN);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(1);
    string(&mut out, "room");
    string(&mut out, connection_id);
    Bytes::from(out)
}

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The gauge of envelopes in flight and the counter of waits for a slot, added up over
/// snapshots (a snapshot of the debugging recorder drains both).
struct Totals {
    snapshotter: Snapshotter,
    gauge: Cell<f64>,
    waited: Cell<u64>,
}

impl Totals {
    fn read(&self) -> (f64, u64) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            match (key.key().name(), value) {
                (BACKPLANE_ENVELOPES_IN_FLIGHT, DebugValue::Gauge(v)) => {
                    self.gauge.set(self.gauge.get() + v.into_inner());
                }
                (BACKPLANE_ENVELOPES_WAITED, DebugValue::Counter(n)) => {
                    self.waited.set(self.waited.get() + n);
                }
                _ => {}
            }
        }
        (self.gauge.get(), self.waited.get())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_handled_with_bounded_concurrency_and_flat_memory() {
    let recorder = DebuggingRecorder::new();
    let totals = Totals {
        snapshotter: recorder.snapshotter(),
        gauge: Cell::new(0.0),
        waited: Cell::new(0),
    };
    recorder.install().unwrap();
    signalbox::metrics::register();

    let bus = MemoryBus::new();
    let (open, gate) = watch::channel(true);
    let counts = Arc::new(Counts::default());
    let manager = Arc::new(ScaledLifetimeManager::with_options(
        Gated {
            inner: bus.backplane(),
            gate,
            counts: counts.clone(),
        },
        PREFIX,
        ScaledOptions::default().max_envelopes_in_flight(CAP),
    ));
    let hub = Hub::builder("flood")
        .lifetime_manager(manager.clone())
        .build();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let _client = Client::connect(addr, "/hub", None, Protocol::Json).await;
    let connection_id = manager.local_connection_ids().pop().unwrap();
    let flooder = bus.backplane();
    let groups = format!("{PREFIX}:internal:groups");

    // The node is subscribed and acks while the gate is open.
    flooder
        .publish(&groups, group_add(0, &connection_id))
        .await
        .unwrap();
    eventually("the first ack", || async {
        counts.acks.load(Ordering::SeqCst) == 1
    })
    .await;
    let taken_before = counts.taken.load(Ordering::SeqCst);
    assert_eq!(taken_before, 1);

    // Hold the acks: every handler now stays busy.
    open.send_replace(false);
    let rss_before = rss();
    let mut max_in_flight = 0;
    for id in 1..=FLOOD {
        flooder
            .publish(&groups, group_add(id, &connection_id))
            .await
            .unwrap();
        let in_flight = manager.envelopes_in_flight();
        max_in_flight = max_in_flight.max(in_flight);
        assert!(in_flight <= CAP, "{in_flight} envelopes in flight");
        // The node reads no further than its slots and the one envelope waiting for a slot.
        let taken = counts.taken.load(Ordering::SeqCst) - taken_before;
        assert!(taken <= CAP as u64 + 1, "{taken} envelopes taken");
    }
    // Every slot taken, one more envelope read and waiting for a slot, and the wait counted.
    eventually("every slot taken", || async {
        manager.envelopes_in_flight() == CAP
            && counts.taken.load(Ordering::SeqCst) - taken_before == CAP as u64 + 1
            && {
                let (gauge, waited) = totals.read();
                gauge == CAP as f64 && waited >= 1
            }
    })
    .await;
    assert_eq!(counts.acks.load(Ordering::SeqCst), 1, "no ack got through");
    let grown = rss().saturating_sub(rss_before);
    assert!(
        grown < RSS_BOUND,
        "resident set grew by {} MiB during the flood",
        grown >> 20
    );

    // Open the gate: the node works through what it took and what its backplane queue kept
    // (the bus dropped the rest, as a pub/sub server drops for a slow subscriber).
    open.send_replace(true);
    eventually("the queued envelopes handled", || async {
        manager.envelopes_in_flight() == 0
            && counts.acks.load(Ordering::SeqCst) == counts.taken.load(Ordering::SeqCst)
    })
    .await;
    // One more, after everything queued: once it is acked, every envelope taken before it was
    // acked too (nothing lost between being read and being answered).
    flooder
        .publish(&groups, group_add(LAST, &connection_id))
        .await
        .unwrap();
    eventually("the last ack", || async {
        counts.last_acked.load(Ordering::SeqCst) == 1
            && manager.envelopes_in_flight() == 0
            && counts.acks.load(Ordering::SeqCst) == counts.taken.load(Ordering::SeqCst)
    })
    .await;
    let taken = counts.taken.load(Ordering::SeqCst);
    assert!(
        taken > CAP as u64 && taken < FLOOD,
        "{taken} of {FLOOD} envelopes reached the node"
    );
    assert_eq!(totals.read().0, 0.0);
    assert_eq!(max_in_flight.max(CAP), CAP);
    assert!(manager.is_healthy());
}
