//! `HubBuilder::initial_groups`: a connection is in its groups by the time its handshake is
//! answered, before `on_connected` has run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use common::{Client, SECRET, serve, token};
use serde_json::json;
use signalbox::protocol::{HubMessage, Protocol};
use signalbox::{Caller, Hub, HubError, HubRouterExt, JwtAuth, Policy};
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_joined_before_the_handshake_is_answered() {
    // `on_connected` waits until the test lets it go: whatever arrives before that proves the
    // groups were joined earlier.
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let hub = Hub::builder("hub")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .authorize(Policy::authenticated())
        .initial_groups(|principal| async move {
            let user = principal
                .and_then(|p| p.user_id().map(str::to_owned))
                .unwrap_or_default();
            vec![format!("user-{user}"), "everyone".to_owned()]
        })
        .on_connected(move |_caller: Caller| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await;
                Ok::<_, HubError>(())
            }
        })
        .build();
    let context = hub.context();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;

    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let alice = token(json!({"sub": "alice"}));
        let mut client = Client::connect(addr, "/hub", Some(&alice), protocol).await;
        context
            .clients()
            .group("user-alice")
            .send("Direct", ("to alice",))
            .await
            .unwrap();
        context
            .clients()
            .group("everyone")
            .send("All", ("to everyone",))
            .await
            .unwrap();
        for expected in ["Direct", "All"] {
            match client.recv_non_ping().await {
                Some(HubMessage::Invocation(invocation)) => {
                    assert_eq!(invocation.target, expected);
                }
                other => panic!("expected {expected}, got {other:?}"),
            }
        }
        release.add_permits(1);
    }
}
