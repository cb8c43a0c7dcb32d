//! A client-result invocation from another node takes a receive slot only while it is queued to
//! the client: a client that is slow to answer never stops its node from reading the backplane.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use common::{Client, eventually, serve};
use signalbox::lifetime::{MemoryBus, ScaledOptions};
use signalbox::protocol::{Completion, HubMessage, Payload, Protocol};
use signalbox::{Hub, HubLifetimeManager, HubRouterExt, ScaledLifetimeManager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_answer_does_not_hold_a_receive_slot() {
    let bus = MemoryBus::new();
    // One slot on the node holding the connection: a held slot would stop it from reading.
    let holder = Arc::new(ScaledLifetimeManager::with_options(
        bus.backplane(),
        "slots",
        ScaledOptions::default().max_envelopes_in_flight(1),
    ));
    let asker = Arc::new(ScaledLifetimeManager::new(bus.backplane(), "slots"));
    let hub = Hub::builder("slots")
        .lifetime_manager(holder.clone())
        .build();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let mut client = Client::connect(addr, "/hub", None, Protocol::Json).await;
    let connection_id = holder.local_connection_ids().pop().unwrap();
    eventually("both nodes ready", || async {
        holder.is_healthy() && asker.is_healthy()
    })
    .await;

    // The other node asks the client for a result; the client reads the invocation but does not
    // answer yet.
    let invoke = tokio::spawn({
        let asker = asker.clone();
        let connection_id = connection_id.clone();
        async move {
            asker
                .invoke_client(connection_id, "Ask".into(), vec![Payload::new(1)])
                .await
        }
    });
    let invocation_id = loop {
        match client.recv().await.expect("closed before the invocation") {
            HubMessage::Invocation(invocation) if invocation.target == "Ask" => {
                break invocation
                    .invocation_id
                    .expect("a client-result invocation has an id");
            }
            _ => {}
        }
    };
    eventually("the invocation's slot released", || async {
        holder.envelopes_in_flight() == 0
    })
    .await;

    // Meanwhile the node still handles work from the backplane: a group change is acknowledged.
    asker
        .add_to_group(&connection_id, "while-waiting")
        .await
        .expect("the group change is acknowledged while the client has not answered");
    asker
        .remove_from_group(&connection_id, "while-waiting")
        .await
        .expect("and so is its removal");
    assert!(!invoke.is_finished(), "the invocation waits for the client");

    // The client's answer still reaches the node that asked.
    client
        .send(&HubMessage::Completion(Completion::result(
            invocation_id,
            Payload::new(42),
        )))
        .await;
    let result = invoke.await.unwrap().expect("the client's result");
    assert_eq!(result.deserialize::<i32>().unwrap(), 42);
}
