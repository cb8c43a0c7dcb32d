//! A hub's fallback for undeclared methods, over real WebSockets in both protocols: results, void,
//! verbatim errors, non-blocking invocations, declared methods first, policies, limits, streams
//! and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use common::{Client, SECRET, http, serve, token};
use futures_util::StreamExt;
use serde_json::{Value, json};
use signalbox::hub::RateLimit;
use signalbox::protocol::{
    CompletionOutcome, Headers, HubMessage, Invocation, Payload, Protocol, StreamInvocation,
};
use signalbox::{
    Caller, Hub, HubError, HubOptions, HubRouterExt, InvocationReply, JwtAuth, Policy,
    UnknownInvocation,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

const PROTOCOLS: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

/// What the fallback saw: the invocation and the caller's user id.
type Seen = mpsc::Receiver<(UnknownInvocation, Option<String>)>;

/// A hub with one declared method (`Echo`) and a fallback answering by target, reporting every
/// invocation it gets.
fn hub(name: &str, options: HubOptions, policy: Policy) -> (Hub, Seen) {
    let (tx, rx) = mpsc::channel(64);
    let hub = Hub::builder(name)
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .authorize(policy)
        .options(options)
        .method("Echo", |_c: Caller, (_v,): (Value,)| async move {
            Ok::<_, HubError>("declared")
        })
        .fallback(move |caller: Caller, invocation: UnknownInvocation| {
            let tx = tx.clone();
            async move {
                let reply = match invocation.target.as_str() {
                    "Compute" => match invocation.arguments.first() {
                        Some(first) => InvocationReply::Result(first.clone()),
                        None => InvocationReply::Result(Payload::null()),
                    },
                    "Nothing" => InvocationReply::Void,
                    "Refuse" => InvocationReply::error("Upstream said \"no\" (403)."),
                    _ => InvocationReply::result("other"),
                };
                let user = caller.user_id().map(str::to_owned);
                tx.send((invocation, user)).await.unwrap();
                reply
            }
        })
        .build();
    (hub, rx)
}

async fn connect(addr: std::net::SocketAddr, protocol: Protocol) -> Client {
    let t = token(json!({"sub": "alice"}));
    Client::connect(addr, "/hub", Some(&t), protocol).await
}

fn invoke_message(id: Option<&str>, target: &str, arguments: Vec<Payload>) -> HubMessage {
    HubMessage::Invocation(Invocation {
        invocation_id: id.map(str::to_owned),
        ..Invocation::new(target, arguments)
    })
}

/// The next frame that is not a Ping, as raw bytes (one message per frame).
async fn raw_frame(client: &mut Client) -> Vec<u8> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket closed")
            .unwrap();
        let bytes = match message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            _ => continue,
        };
        if bytes != b"{\"type\":6}\x1e" && bytes != [0x02, 0x91, 0x06] {
            return bytes;
        }
    }
}

fn value(outcome: CompletionOutcome) -> Value {
    match outcome {
        CompletionOutcome::Result(payload) => payload.deserialize().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

fn error_text(outcome: CompletionOutcome) -> String {
    match outcome {
        CompletionOutcome::Error(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_results_void_and_errors_in_both_protocols() {
    let (hub, mut seen) = hub("answers", HubOptions::default(), Policy::authenticated());
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = connect(addr, protocol).await;

        // Result: the argument comes back as sent; the handler gets it raw, with the headers.
        let mut headers = Headers::new();
        headers.insert("traceparent".into(), "00-abc-def-01".into());
        client
            .send(&HubMessage::Invocation(Invocation {
                invocation_id: Some("r1".into()),
                headers,
                ..Invocation::new(
                    "Compute",
                    vec![Payload::new(json!({"a": [1, "x"]})), Payload::new(7)],
                )
            }))
            .await;
        let HubMessage::Completion(completion) = client.recv_non_ping().await.unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(completion.invocation_id, "r1");
        assert_eq!(value(completion.outcome), json!({"a": [1, "x"]}));
        let (invocation, user) = seen.recv().await.unwrap();
        assert_eq!(invocation.target, "Compute");
        assert_eq!(invocation.invocation_id.as_deref(), Some("r1"));
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(
            invocation.headers.get("traceparent").map(String::as_str),
            Some("00-abc-def-01")
        );
        assert_eq!(invocation.arguments.len(), 2);
        match (protocol, &invocation.arguments[1]) {
            (Protocol::Json, Payload::Json(raw)) => assert_eq!(raw.get(), "7"),
            (Protocol::MessagePack, Payload::MessagePack(bytes)) => assert_eq!(bytes[..], [7]),
            (protocol, other) => panic!("{protocol:?} argument arrived as {other:?}"),
        }
        assert_eq!(
            invocation.arguments[0].deserialize::<Value>().unwrap(),
            json!({"a": [1, "x"]})
        );

        // A null result is a result, not void.
        assert_eq!(
            value(client.invoke("Compute", vec![Payload::null()]).await),
            Value::Null
        );
        seen.recv().await.unwrap();

        // Void: neither result nor error on the wire.
        client
            .send(&invoke_message(Some("0"), "Nothing", vec![]))
            .await;
        let frame = raw_frame(&mut client).await;
        match protocol {
            Protocol::Json => assert_eq!(frame, b"{\"type\":3,\"invocationId\":\"0\"}\x1e"),
            // Length prefix, then [3, {}, "0", 2 (void)].
            Protocol::MessagePack => assert_eq!(frame, [0x06, 0x94, 0x03, 0x80, 0xa1, b'0', 0x02]),
        }
        assert_eq!(seen.recv().await.unwrap().0.target, "Nothing");

        // Error: the text verbatim, no prefix.
        let outcome = client.invoke("Refuse", vec![]).await;
        assert_eq!(error_text(outcome), "Upstream said \"no\" (403).");
        seen.recv().await.unwrap();
    }
}

#[tokio::test]
async fn non_blocking_invocations_get_no_reply() {
    let (hub, mut seen) = hub("fire", HubOptions::default(), Policy::authenticated());
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = connect(addr, protocol).await;
        for target in ["Compute", "Refuse", "Nothing"] {
            client
                .send(&invoke_message(None, target, vec![Payload::new(1)]))
                .await;
            let (invocation, _) = seen.recv().await.unwrap();
            assert_eq!(invocation.target, target);
            assert_eq!(invocation.invocation_id, None);
        }
        // The next message is the answer to a blocking invocation sent afterwards.
        client
            .send(&invoke_message(
                Some("b1"),
                "Compute",
                vec![Payload::new(2)],
            ))
            .await;
        match client.recv_non_ping().await.unwrap() {
            HubMessage::Completion(completion) => {
                assert_eq!(completion.invocation_id, "b1");
                assert_eq!(value(completion.outcome), json!(2));
            }
            other => panic!("unexpected {other:?}"),
        }
        seen.recv().await.unwrap();
    }
}

#[tokio::test]
async fn declared_methods_win() {
    let (hub, mut seen) = hub("declared", HubOptions::default(), Policy::authenticated());
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = connect(addr, protocol).await;
        for target in ["Echo", "echo", "ECHO"] {
            let outcome = client.invoke(target, vec![Payload::new(1)]).await;
            assert_eq!(value(outcome), json!("declared"));
        }
        // A declared method's own errors are not handed to the fallback either.
        let outcome = client.invoke("Echo", vec![]).await;
        assert!(error_text(outcome).starts_with("Failed to invoke 'Echo'"));
        // The fallback's first invocation is the one below: none of the above reached it.
        assert_eq!(value(client.invoke("Other", vec![]).await), json!("other"));
        assert_eq!(seen.recv().await.unwrap().0.target, "Other");
    }
}

#[tokio::test]
async fn hub_policy_applies() {
    let (hub, mut seen) = hub(
        "guarded",
        HubOptions::default(),
        Policy::require_role(["admin"]),
    );
    let addr = serve(Router::new().map_hub("/hub", hub)).await;

    let anonymous = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(anonymous.status, 401);
    let user = format!("Bearer {}", token(json!({"sub": "bob", "role": "user"})));
    let denied = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Authorization", user.as_str())],
        b"",
    )
    .await;
    assert_eq!(denied.status, 403);

    let admin = token(json!({"sub": "carol", "role": "admin"}));
    for protocol in PROTOCOLS {
        let mut client = Client::connect(addr, "/hub", Some(&admin), protocol).await;
        assert_eq!(value(client.invoke("Other", vec![]).await), json!("other"));
        let (invocation, user) = seen.recv().await.unwrap();
        assert_eq!(invocation.target, "Other");
        assert_eq!(user.as_deref(), Some("carol"));
    }
}

#[tokio::test]
async fn rate_limit_applies() {
    let options = HubOptions::default().invocation_rate_limit(RateLimit::new(0.001, 2));
    let (hub, mut seen) = hub("limited", options, Policy::authenticated());
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = connect(addr, protocol).await;
        assert_eq!(value(client.invoke("Other", vec![]).await), json!("other"));
        // Declared methods and the fallback draw from the same bucket.
        assert_eq!(
            value(client.invoke("Echo", vec![Payload::new(1)]).await),
            json!("declared")
        );
        let outcome = client.invoke("Other", vec![]).await;
        assert_eq!(
            error_text(outcome),
            "Failed to invoke 'Other': rate limit exceeded, too many invocations."
        );
        seen.recv().await.unwrap();
        assert!(seen.try_recv().is_err(), "the limited invocation ran");
    }
}

#[tokio::test]
async fn runs_under_the_parallel_invocation_limit() {
    let gate = Arc::new(Semaphore::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (entered_tx, mut entered) = mpsc::channel(8);
    let hub = {
        let (gate, active, most) = (gate.clone(), active.clone(), most.clone());
        Hub::builder("parallel")
            .fallback(move |_c: Caller, invocation: UnknownInvocation| {
                let (gate, active, most, entered) = (
                    gate.clone(),
                    active.clone(),
                    most.clone(),
                    entered_tx.clone(),
                );
                async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    entered.send(invocation.target).await.unwrap();
                    gate.acquire().await.unwrap().forget();
                    active.fetch_sub(1, Ordering::SeqCst);
                    InvocationReply::Void
                }
            })
            .build()
    };
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = Client::connect(addr, "/hub", None, protocol).await;
        client
            .send(&invoke_message(Some("p1"), "First", vec![]))
            .await;
        assert_eq!(entered.recv().await.unwrap(), "First");
        client
            .send(&invoke_message(Some("p2"), "Second", vec![]))
            .await;
        gate.add_permits(1);
        let HubMessage::Completion(first) = client.recv_non_ping().await.unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(first.invocation_id, "p1");
        assert_eq!(entered.recv().await.unwrap(), "Second");
        gate.add_permits(1);
        let HubMessage::Completion(second) = client.recv_non_ping().await.unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(second.invocation_id, "p2");
        assert!(matches!(second.outcome, CompletionOutcome::Void));
    }
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn streams_to_unknown_targets_keep_the_unknown_method_error() {
    let (hub, mut seen) = hub("streams", HubOptions::default(), Policy::authenticated());
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    for protocol in PROTOCOLS {
        let mut client = connect(addr, protocol).await;
        client
            .send(&HubMessage::StreamInvocation(StreamInvocation {
                headers: Headers::new(),
                invocation_id: "s1".into(),
                target: "Compute".into(),
                arguments: vec![Payload::new(1)],
                stream_ids: vec![],
            }))
            .await;
        let HubMessage::Completion(completion) = client.recv_non_ping().await.unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(completion.invocation_id, "s1");
        assert_eq!(
            error_text(completion.outcome),
            "Unknown hub method 'Compute'"
        );

        client
            .send(&HubMessage::Invocation(Invocation {
                invocation_id: Some("s2".into()),
                stream_ids: vec!["upload".into()],
                ..Invocation::new("Compute", vec![])
            }))
            .await;
        let HubMessage::Completion(completion) = client.recv_non_ping().await.unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(completion.invocation_id, "s2");
        assert_eq!(
            error_text(completion.outcome),
            "Unknown hub method 'Compute'"
        );

        // The fallback's first invocation is this one: the two above never reached it.
        assert_eq!(value(client.invoke("Other", vec![]).await), json!("other"));
        assert_eq!(seen.recv().await.unwrap().0.target, "Other");
    }
}

#[tokio::test]
async fn counted_in_the_invocation_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let counts = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                if !labels.contains(&("hub".into(), "counted".into())) {
                    return None;
                }
                let method = labels.iter().find(|(k, _)| k == "method")?.1.clone();
                let outcome = labels
                    .iter()
                    .find(|(k, _)| k == "outcome")
                    .map(|(_, v)| v.clone());
                let value = match value {
                    DebugValue::Counter(c) => c,
                    DebugValue::Histogram(h) => h.len() as u64,
                    DebugValue::Gauge(_) => return None,
                };
                Some(((key.name().to_owned(), method, outcome), value))
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let invocations = |method: &str, outcome: &str| {
        (
            signalbox::metrics::INVOCATIONS.to_owned(),
            method.to_owned(),
            Some(outcome.to_owned()),
        )
    };
    let fallback = signalbox::metrics::FALLBACK_METHOD;
    let duration = (
        signalbox::metrics::INVOCATION_DURATION.to_owned(),
        fallback.to_owned(),
        None,
    );

    let (hub, mut seen) = hub("counted", HubOptions::default(), Policy::authenticated());
    signalbox::metrics::register();
    signalbox::metrics::register_hub(&hub);
    let registered = counts();
    for key in [
        invocations(fallback, "ok"),
        invocations(fallback, "error"),
        duration.clone(),
    ] {
        assert_eq!(registered.get(&key), Some(&0), "{key:?} not registered");
    }

    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let mut client = connect(addr, Protocol::Json).await;
    client.invoke("Compute", vec![Payload::new(1)]).await;
    client.invoke("Nothing", vec![]).await;
    client.invoke("Refuse", vec![]).await;
    client.invoke("Echo", vec![Payload::new(1)]).await;
    client
        .send(&HubMessage::StreamInvocation(StreamInvocation {
            headers: Headers::new(),
            invocation_id: "s1".into(),
            target: "Compute".into(),
            arguments: vec![],
            stream_ids: vec![],
        }))
        .await;
    client.recv_non_ping().await.unwrap();
    for _ in 0..3 {
        seen.recv().await.unwrap();
    }

    let counted = counts();
    let get = |key| counted.get(&key).copied().unwrap_or(0);
    assert_eq!(get(invocations(fallback, "ok")), 2);
    assert_eq!(get(invocations(fallback, "error")), 1);
    assert_eq!(get(duration), 3);
    assert_eq!(get(invocations("echo", "ok")), 1);
    assert_eq!(get(invocations("*", "unknown_method")), 1);
}
