//! Codec micro-benchmarks through the public `signalbox_protocol` API: encode and decode an
//! Invocation in JSON and MessagePack with a small and a 1 KiB payload, and decode a batch of 64.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signalbox_protocol::{HubMessage, Invocation, Payload, Protocol};

fn invocation(pad: usize) -> HubMessage {
    HubMessage::Invocation(Invocation::new(
        "Msg",
        vec![
            Payload::new(1_760_000_000_000_000u64),
            Payload::new(7u64),
            Payload::new(42u64),
            Payload::new("x".repeat(pad)),
        ],
    ))
}

/// The same message as a client would send it: decoded from the wire, so payloads are raw.
fn wire(protocol: Protocol, pad: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..count {
        protocol.encode(&invocation(pad), &mut out).unwrap();
    }
    out
}

fn codecs(c: &mut Criterion) {
    for protocol in Protocol::ALL {
        for (size, pad) in [("small", 16), ("1KiB", 1024)] {
            let message = invocation(pad);
            let bytes = wire(protocol, pad, 1);
            let mut group = c.benchmark_group(format!("{protocol}/{size}"));
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function("encode", |b| {
                let mut out = Vec::with_capacity(2048);
                b.iter(|| {
                    out.clear();
                    protocol.encode(black_box(&message), &mut out).unwrap();
                    black_box(out.len())
                });
            });
            // Re-encoding a decoded message: raw payloads copied through (the relay path).
            let decoded = protocol
                .decode(&mut BytesMut::from(&bytes[..]), None)
                .unwrap()
                .unwrap();
            group.bench_function("encode_decoded", |b| {
                let mut out = Vec::with_capacity(2048);
                b.iter(|| {
                    out.clear();
                    protocol.encode(black_box(&decoded), &mut out).unwrap();
                    black_box(out.len())
                });
            });
            group.bench_function("decode", |b| {
                b.iter(|| {
                    let mut buf = BytesMut::from(&bytes[..]);
                    black_box(protocol.decode(&mut buf, None).unwrap())
                });
            });
            group.bench_function("decode_and_type_args", |b| {
                b.iter(|| {
                    let mut buf = BytesMut::from(&bytes[..]);
                    let Some(HubMessage::Invocation(inv)) =
                        protocol.decode(&mut buf, None).unwrap()
                    else {
                        panic!("not an invocation")
                    };
                    let t: u64 = inv.arguments[0].deserialize().unwrap();
                    let pad: String = inv.arguments[3].deserialize().unwrap();
                    black_box((t, pad))
                });
            });
            group.finish();
        }
        let batch = wire(protocol, 16, 64);
        let mut group = c.benchmark_group(format!("{protocol}/batch64"));
        group.throughput(Throughput::Elements(64));
        group.bench_function("decode", |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&batch[..]);
                let mut n = 0;
                while let Some(m) = protocol.decode(&mut buf, None).unwrap() {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, 64);
            });
        });
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
