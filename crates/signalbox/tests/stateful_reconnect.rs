//! Stateful reconnect over WebSockets: a new socket for the connection takes over even while the
//! server still holds the previous one (the client noticed the drop first), and the previous one
//! is closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::Router;
use common::{Client, http, serve, ws_connect};
use serde_json::{Value, json};
use signalbox::protocol::{CompletionOutcome, HubMessage, Invocation, Payload, Protocol};
use signalbox::{Caller, ConnectionOptions, Hub, HubError, HubRouterExt};

fn echo(outcome: CompletionOutcome) -> Value {
    match outcome {
        CompletionOutcome::Result(payload) => payload.deserialize().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_socket_takes_over_from_one_the_server_still_holds() {
    let hub = Hub::builder("stateful")
        .connection_options(ConnectionOptions::default().allow_stateful_reconnect(true))
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .build();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let negotiate = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1&useStatefulReconnect=true",
        &[],
        b"",
    )
    .await;
    assert_eq!(negotiate.status, 200, "{}", negotiate.text());
    assert_eq!(negotiate.json()["useStatefulReconnect"], true);
    let token = negotiate.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/hub?id={token}");

    let mut first = Client::raw(ws_connect(addr, &path, None).await.unwrap(), Protocol::Json);
    first.handshake(2).await.unwrap();
    let reply = first.invoke("Echo", vec![Payload::new("one")]).await;
    assert_eq!(echo(reply), json!("one"));

    // The first socket is still open on both sides: the second one must still be accepted.
    let second = ws_connect(addr, &path, None)
        .await
        .expect("the reconnect is accepted while the server holds the previous socket");
    let mut second = Client::raw(second, Protocol::Json);
    // What the first socket did not acknowledge is replayed on the new one, then the connection
    // goes on there.
    let invocation = Invocation {
        invocation_id: Some("second".into()),
        ..Invocation::new("Echo", vec![Payload::new("two")])
    };
    second.send(&HubMessage::Invocation(invocation)).await;
    let mut completions = Vec::new();
    while completions.len() < 2 {
        let message = second.recv().await.expect("the new socket stays open");
        if let HubMessage::Completion(c) = message {
            completions.push((c.invocation_id, echo(c.outcome)));
        }
    }
    assert_eq!(
        completions,
        [
            ("0".to_owned(), json!("one")),
            ("second".to_owned(), json!("two"))
        ]
    );

    // The previous socket was let go.
    let left = first.recv().await;
    assert!(
        left.is_none(),
        "the previous socket ends once replaced: {left:?}"
    );
}
