//! Who receives `PresenceChanged`: the connections watching a user (`WatchPresence`), everyone
//! with `presence.broadcast = all`, nobody with `off`; and the edges decided when many connects
//! and disconnects share one transaction. Each test runs on SQLite and on PostgreSQL.
//!
//! "Receives nothing" is checked with a marker: a notification sent to the connection after the
//! edge reached a watcher. Frames of one connection are sent in order, so an edge pushed to it
//! would have arrived before the marker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Backend, HubClient, TestApp};
use serde_json::{Value, json};
use signalbox_server::config::PresenceBroadcast;
use signalbox_server::presence::{Change, ConnectionRow};

on_both_backends!(
    a_connection_that_does_not_watch_receives_no_edges,
    a_watcher_of_a_user_gets_that_users_edges_only,
    watching_everyone_gets_every_edge_once,
    unwatching_stops_the_edges,
    broadcast_all_pushes_to_every_connection,
    broadcast_off_pushes_nothing,
    a_storm_of_connects_gives_one_edge_per_user,
    one_batch_keeps_the_order_of_each_users_changes,
);

/// Sends a marker notification to `user` and waits for it on `client`; then no
/// `PresenceChanged` may have arrived before it.
async fn assert_no_edge_before_marker(app: &TestApp, client: &mut HubClient, user: &str) {
    let service = app.token("backend").await;
    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&service),
            json!({"user": user, "message": "marker"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let marker = client.expect("Notification").await;
    assert_eq!(marker[0]["message"], "marker");
    assert_eq!(
        client.try_expect("PresenceChanged", Duration::ZERO).await,
        None,
        "an edge was pushed to a connection that does not watch"
    );
}

/// Connects `user` and waits until its connection is set up (an invocation completes only
/// after the hub's `on_connected`, which pushes the edge).
async fn connect_set_up(app: &TestApp, user: &str) -> HubClient {
    let token = app.token(user).await;
    let mut client = app.connect(&token).await;
    client.invoke("GetOnlineUsers", json!([])).await.unwrap();
    client
}

async fn users(app: &TestApp, names: &[&str]) {
    app.user("backend", &["permission=notify"]).await;
    for name in names {
        app.user(name, &[]).await;
    }
}

fn edge(args: &[Value]) -> (String, bool) {
    (
        args[0]["user"].as_str().unwrap().to_owned(),
        args[0]["online"].as_bool().unwrap(),
    )
}

async fn a_connection_that_does_not_watch_receives_no_edges(backend: Backend) {
    let app = TestApp::start(backend).await;
    users(&app, &["alice", "watcher", "other"]).await;
    let mut watcher = connect_set_up(&app, "watcher").await;
    watcher
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    let mut other = connect_set_up(&app, "other").await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("other".into(), true)
    );
    let alice = connect_set_up(&app, "alice").await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), true)
    );
    assert_no_edge_before_marker(&app, &mut other, "other").await;
    alice.close().await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), false)
    );
    assert_no_edge_before_marker(&app, &mut other, "other").await;
}

async fn a_watcher_of_a_user_gets_that_users_edges_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    users(&app, &["alice", "bob", "watcher"]).await;
    let mut watcher = connect_set_up(&app, "watcher").await;
    let online = watcher
        .invoke("WatchPresence", json!([["alice"]]))
        .await
        .unwrap();
    assert_eq!(online, json!([]));
    let bob = connect_set_up(&app, "bob").await;
    let alice = connect_set_up(&app, "alice").await;
    // Bob's edge came first; the watcher's first edge is still Alice's.
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), true)
    );
    // Watching again answers who of them is online.
    let online = watcher
        .invoke("WatchPresence", json!([["alice", "bob", "nobody"]]))
        .await
        .unwrap();
    assert_eq!(online, json!(["alice", "bob"]));
    bob.close().await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("bob".into(), false)
    );
    alice.close().await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), false)
    );
    assert_no_edge_before_marker(&app, &mut watcher, "watcher").await;
    // Too many users at once is refused.
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let refused = watcher.invoke("WatchPresence", json!([many])).await;
    assert!(refused.unwrap_err().contains("at most"));
}

async fn watching_everyone_gets_every_edge_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    users(&app, &["alice", "bob", "watcher"]).await;
    let mut watcher = connect_set_up(&app, "watcher").await;
    // Watching users by name and everyone: each edge still arrives once.
    watcher
        .invoke("WatchPresence", json!([["alice"]]))
        .await
        .unwrap();
    let online = watcher
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    assert_eq!(online, json!(["watcher"]));
    let alice = connect_set_up(&app, "alice").await;
    let bob = connect_set_up(&app, "bob").await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), true)
    );
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("bob".into(), true)
    );
    alice.close().await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("alice".into(), false)
    );
    bob.close().await;
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("bob".into(), false)
    );
    assert_no_edge_before_marker(&app, &mut watcher, "watcher").await;
}

async fn unwatching_stops_the_edges(backend: Backend) {
    let app = TestApp::start(backend).await;
    users(&app, &["alice", "bob", "watcher"]).await;
    let mut watcher = connect_set_up(&app, "watcher").await;
    watcher
        .invoke("WatchPresence", json!([["alice", "bob"]]))
        .await
        .unwrap();
    watcher
        .invoke("UnwatchPresence", json!([["alice"]]))
        .await
        .unwrap();
    let alice = connect_set_up(&app, "alice").await;
    let _bob = connect_set_up(&app, "bob").await;
    // Alice's edge came first: had it been pushed, it would be the first one.
    assert_eq!(
        edge(&watcher.expect("PresenceChanged").await),
        ("bob".into(), true)
    );
    assert_no_edge_before_marker(&app, &mut watcher, "watcher").await;
    // Everyone, then nobody; another connection watching everyone sees when the edge went out.
    let mut other = connect_set_up(&app, "bob").await;
    other.invoke("WatchPresence", json!([null])).await.unwrap();
    watcher
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    watcher
        .invoke("UnwatchPresence", json!([null]))
        .await
        .unwrap();
    alice.close().await;
    assert_eq!(
        edge(&other.expect("PresenceChanged").await),
        ("alice".into(), false)
    );
    assert_no_edge_before_marker(&app, &mut watcher, "watcher").await;
}

async fn broadcast_all_pushes_to_every_connection(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.presence.broadcast = PresenceBroadcast::All;
    })
    .await;
    users(&app, &["alice", "listener"]).await;
    let mut listener = connect_set_up(&app, "listener").await;
    // Its own edge, as before watching existed.
    assert_eq!(
        edge(&listener.expect("PresenceChanged").await),
        ("listener".into(), true)
    );
    let alice = connect_set_up(&app, "alice").await;
    assert_eq!(
        edge(&listener.expect("PresenceChanged").await),
        ("alice".into(), true)
    );
    alice.close().await;
    assert_eq!(
        edge(&listener.expect("PresenceChanged").await),
        ("alice".into(), false)
    );
    // Watching changes nothing: each edge still arrives once.
    listener
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    let _alice = connect_set_up(&app, "alice").await;
    assert_eq!(
        edge(&listener.expect("PresenceChanged").await),
        ("alice".into(), true)
    );
    assert_no_edge_before_marker(&app, &mut listener, "listener").await;
}

async fn broadcast_off_pushes_nothing(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        c.presence.broadcast = PresenceBroadcast::Off;
    })
    .await;
    users(&app, &["alice", "listener"]).await;
    let mut listener = connect_set_up(&app, "listener").await;
    let refused = listener.invoke("WatchPresence", json!([null])).await;
    assert!(refused.unwrap_err().contains("not pushed"));
    let alice = connect_set_up(&app, "alice").await;
    let online = listener.invoke("GetOnlineUsers", json!([])).await.unwrap();
    assert_eq!(online, json!(["alice", "listener"]));
    alice.close().await;
    assert_no_edge_before_marker(&app, &mut listener, "listener").await;
}

async fn a_storm_of_connects_gives_one_edge_per_user(backend: Backend) {
    // 19 × 3 tabs and the watcher: within the default per-IP negotiate burst (60), which the
    // connects would otherwise exceed whenever they start within 50 ms of the watcher's.
    const USERS: usize = 19;
    const TABS: usize = 3;
    let app = TestApp::start(backend).await;
    let names: Vec<String> = (0..USERS).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    users(&app, &refs).await;
    app.user("watcher", &[]).await;
    let mut watcher = connect_set_up(&app, "watcher").await;
    watcher
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for name in &names {
        tokens.push(app.token(name).await);
    }
    // Every tab of every user at once.
    let connects = tokens
        .iter()
        .flat_map(|token| (0..TABS).map(move |_| token))
        .map(|token| app.connect(token));
    let clients: Vec<HubClient> = futures_util::future::join_all(connects).await;
    let mut online = std::collections::HashMap::<String, usize>::new();
    for _ in 0..USERS {
        let (user, up) = edge(&watcher.expect("PresenceChanged").await);
        assert!(up);
        *online.entry(user).or_default() += 1;
    }
    assert_eq!(online.len(), USERS, "{online:?}");
    assert!(online.values().all(|n| *n == 1), "{online:?}");
    common::eventually("every tab recorded", || async {
        app.state.presence.connection_total().await.unwrap() == (USERS * TABS + 1) as i64
    })
    .await;
    futures_util::future::join_all(clients.into_iter().map(HubClient::close)).await;
    let mut offline = std::collections::HashMap::<String, usize>::new();
    for _ in 0..USERS {
        let (user, up) = edge(&watcher.expect("PresenceChanged").await);
        assert!(!up);
        *offline.entry(user).or_default() += 1;
    }
    assert_eq!(offline.len(), USERS, "{offline:?}");
    assert_no_edge_before_marker(&app, &mut watcher, "watcher").await;
    assert_eq!(
        app.state.presence.online_users().await.unwrap(),
        vec!["watcher".to_owned()]
    );
}

async fn one_batch_keeps_the_order_of_each_users_changes(backend: Backend) {
    let app = TestApp::start(backend).await;
    users(&app, &["alice", "bob"]).await;
    let row = |id: &str, user: &str| {
        Change::Connect(ConnectionRow {
            connection_id: id.to_owned(),
            user_name: user.to_owned(),
            node: "elsewhere".to_owned(),
            connected_at: 1,
            user_agent: None,
        })
    };
    let gone = |id: &str, user: &str| Change::Disconnect {
        user: user.to_owned(),
        connection_id: id.to_owned(),
    };
    let db = &app.state.db;
    let edges = db
        .apply_presence_changes(
            &[
                row("a1", "alice"),
                row("b1", "bob"),
                row("a2", "alice"),
                gone("a1", "alice"),
                gone("b1", "bob"),
                gone("never", "bob"),
                row("b2", "bob"),
                gone("a2", "alice"),
                row("a1", "alice"),
            ],
            42,
        )
        .await
        .unwrap();
    // As one by one: the last connect opens `a1` again, Alice's second online edge.
    assert_eq!(
        edges,
        vec![true, true, false, false, true, false, true, true, true]
    );
    let left = app.state.presence.online_users().await.unwrap();
    assert_eq!(left, vec!["alice".to_owned(), "bob".to_owned()]);
    let bob = app.state.presence.lookup("bob").await.unwrap().unwrap();
    assert_eq!(bob.last_connected_at, Some(42));
    assert_eq!(bob.last_disconnected_at, Some(42));
    let alice = app.state.presence.lookup("alice").await.unwrap().unwrap();
    assert_eq!(alice.last_disconnected_at, Some(42));
    // The same changes again, in the next batch: no edge from the connects of rows that exist.
    let edges = db
        .apply_presence_changes(&[row("b2", "bob"), gone("b2", "bob")], 43)
        .await
        .unwrap();
    assert_eq!(edges, vec![false, true]);
}
