//! Publishing to many recipients at once. A `users` list longer than one multi-row INSERT stores
//! exactly one row per recipient; `everyone` stores one notification that every account sees.
//! Both are delivered live to those online and replayed to the others, once. Each test runs on
//! SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Backend, HubClient, TestApp, eventually};
use serde_json::{Value, json};
use signalbox_server::auth::accounts::NewUser;
use signalbox_server::notifications::store::INSERT_CHUNK;

on_both_backends!(
    users_across_insert_chunks_get_one_row_each,
    users_list_reports_every_unknown_user,
    everyone_is_stored_once_for_every_account,
    everyone_leaves_out_accounts_created_later,
    broadcasts_received_live_are_not_replayed,
    connects_during_broadcasts_miss_none_and_repeat_none,
);

/// More recipients than two INSERT chunks hold, so that the last chunk is a partial one.
const RECIPIENTS: usize = 2 * INSERT_CHUNK + INSERT_CHUNK / 2;

fn name(i: usize) -> String {
    format!("u{i:05}")
}

/// Creates `count` accounts without passwords (no hashing: they sign in with tokens).
async fn many_users(app: &TestApp, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(name).collect();
    for user in &names {
        app.state
            .accounts
            .create(NewUser {
                name: user.clone(),
                ..NewUser::default()
            })
            .await
            .unwrap();
    }
    names
}

async fn users_across_insert_chunks_get_one_row_each(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut names = many_users(&app, RECIPIENTS).await;
    app.user("svc", &["permission=notify"]).await;
    names.push("svc".to_owned());
    let svc = app.token("svc").await;

    // Online: users on both sides of each chunk boundary, and the last one.
    let online: Vec<String> = [
        0,
        INSERT_CHUNK - 1,
        INSERT_CHUNK,
        2 * INSERT_CHUNK,
        RECIPIENTS - 1,
    ]
    .into_iter()
    .map(name)
    .collect();
    let mut clients = Vec::new();
    for user in &online {
        let token = app.token(user).await;
        let client = app.connect(&token).await;
        app.wait_presence(user, &token, |v| v["online"] == true)
            .await;
        clients.push(client);
    }

    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": names, "message": "to all"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let stored: BTreeMap<String, String> = body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["user"].as_str().unwrap().to_owned(),
                n["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "one notification per account"
    );
    let ids: BTreeSet<&String> = stored.values().collect();
    assert_eq!(ids.len(), names.len(), "distinct ids");

    // Every recipient has exactly that one row, unread.
    assert_eq!(
        app.state.inbox.unread_total().await.unwrap(),
        i64::try_from(names.len()).unwrap()
    );
    for user in &names {
        let rows = app.state.inbox.list(user, false, 10).await.unwrap();
        assert_eq!(rows.len(), 1, "{user}: {rows:?}");
        assert_eq!(rows[0].id, stored[user], "{user}");
        assert_eq!(rows[0].message, "to all");
        assert_eq!(rows[0].read_at, None);
    }

    // Those online got it live, once: the next notification each receives is a second one.
    for (user, client) in online.iter().zip(clients.iter_mut()) {
        let live = client.expect("Notification").await;
        assert_eq!(live[0]["id"], stored[user].as_str(), "{user}");
        assert_eq!(live[0]["from"], "svc");
    }
    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": online, "message": "second"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for client in &mut clients {
        let next = client.expect("Notification").await;
        assert_eq!(next[0]["message"], "second", "no duplicate of the first");
    }

    // One of those offline gets it when a connection comes up, once.
    let late = name(INSERT_CHUNK + 1);
    let late_token = app.token(&late).await;
    let mut late_client = app.connect(&late_token).await;
    let replayed = late_client.expect("Notification").await;
    assert_eq!(replayed[0]["id"], stored[&late].as_str());

    // Each recipient's unread state is its own.
    let (status, body) = app
        .post(
            &format!("/api/notifications/{}/read", stored[&late]),
            Some(&late_token),
            json!({}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, unread) = app
        .get("/api/notifications?unread=true", Some(&late_token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(unread, Value::Array(Vec::new()));
    let (status, other) = app
        .get(
            "/api/notifications?unread=true",
            Some(&app.token(&online[0]).await),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(other.as_array().unwrap().len(), 2, "{other}");

    late_client.close().await;
    for client in clients {
        client.close().await;
    }
}

async fn users_list_reports_every_unknown_user(backend: Backend) {
    let app = TestApp::start(backend).await;
    let known = many_users(&app, 3).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let mut users = known.clone();
    users.extend(["ghost-b".to_owned(), "ghost-a".to_owned()]);
    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": users, "message": "hi"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let text = body.to_string();
    assert!(text.contains("ghost-a, ghost-b"), "{text}");
    assert_eq!(app.state.inbox.unread_total().await.unwrap(), 0);

    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": known, "message": "hi"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 3);
}

/// `POST /api/notifications` as `token`; the response body (asserts 201).
async fn publish(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, response) = app.post("/api/notifications", Some(token), body).await;
    assert_eq!(status, 201, "{response}");
    response
}

/// The one id of a publish to everyone.
fn broadcast_id(response: &Value) -> String {
    let ids = response["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "stored once: {response}");
    assert_eq!(response["notifications"], json!([]), "{response}");
    ids[0].as_str().unwrap().to_owned()
}

/// Waits until `count` connections of the node are fully set up (registered for broadcasts,
/// missed notifications replayed).
async fn wait_set_up(app: &TestApp, count: usize) {
    eventually(&format!("{count} connections set up"), || async {
        app.state.presence.ready_count() == count
    })
    .await;
}

/// The messages of the caller's inbox listing (`query`: `""` or `"?unread=true"`), newest first.
async fn listed(app: &TestApp, token: &str, query: &str) -> Vec<(String, Value)> {
    let (status, body) = app
        .get(&format!("/api/notifications{query}"), Some(token))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["message"].as_str().unwrap().to_owned(),
                n["read_at"].clone(),
            )
        })
        .collect()
}

/// `POST /api/notifications/{id}/read` as `token`: the status.
async fn mark_read(app: &TestApp, token: &str, id: &str) -> u16 {
    let (status, body) = app
        .post(
            &format!("/api/notifications/{id}/read"),
            Some(token),
            json!({}),
        )
        .await;
    assert!(status == 204 || status == 404, "{status}: {body}");
    status
}

/// The message of the next `Notification` the client receives.
async fn next_message(client: &mut HubClient) -> String {
    client.expect("Notification").await[0]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn everyone_is_stored_once_for_every_account(backend: Backend) {
    let app = TestApp::start(backend).await;
    let names = many_users(&app, 20).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    // Online: the first account in two tabs, the second in one.
    let first = app.token(&names[0]).await;
    let second = app.token(&names[1]).await;
    let mut tabs = vec![
        app.connect(&first).await,
        app.connect(&first).await,
        app.connect(&second).await,
    ];
    wait_set_up(&app, 3).await;

    let id =
        broadcast_id(&publish(&app, &svc, json!({"everyone": true, "message": "to all"})).await);
    // Every tab gets it live, once: the next each receives is the next notification.
    for tab in &mut tabs {
        let live = tab.expect("Notification").await;
        assert_eq!(live[0]["id"], id.as_str());
        assert_eq!(live[0]["from"], "svc");
        assert_eq!(live[0]["message"], "to all");
    }
    publish(
        &app,
        &svc,
        json!({"users": [&names[0], &names[1]], "message": "second"}),
    )
    .await;
    for tab in &mut tabs {
        assert_eq!(next_message(tab).await, "second", "no duplicate");
    }
    // Counted unread once per account there was (21 with svc), plus the two rows of "second".
    assert_eq!(app.state.inbox.unread_total().await.unwrap(), 21 + 2);

    // An account offline then lists it, and gets it when a connection comes up, once; a second
    // tab opened afterwards does not get it again.
    let late = app.token(&names[5]).await;
    assert_eq!(
        listed(&app, &late, "").await,
        [("to all".to_owned(), Value::Null)]
    );
    let mut late_tab = app.connect(&late).await;
    let replayed = late_tab.expect("Notification").await;
    assert_eq!(replayed[0]["id"], id.as_str());
    wait_set_up(&app, 4).await;
    let mut late_tab2 = app.connect(&late).await;
    wait_set_up(&app, 5).await;
    publish(&app, &svc, json!({"user": &names[5], "message": "third"})).await;
    assert_eq!(next_message(&mut late_tab).await, "third");
    assert_eq!(
        next_message(&mut late_tab2).await,
        "third",
        "no replay twice"
    );
    // Its own notifications and the broadcast, newest first.
    assert_eq!(
        listed(&app, &late, "")
            .await
            .into_iter()
            .map(|(m, _)| m)
            .collect::<Vec<_>>(),
        ["third", "to all"]
    );

    // Read marks are per account: over HTTP for one, with the hub's MarkRead for another.
    assert_eq!(mark_read(&app, &late, &id).await, 204);
    assert_eq!(
        mark_read(&app, &late, &id).await,
        204,
        "marking read again is fine"
    );
    assert_eq!(
        listed(&app, &late, "?unread=true").await,
        [("third".to_owned(), Value::Null)]
    );
    let read = listed(&app, &late, "").await;
    assert!(read[1].1.is_string(), "read_at set: {read:?}");
    assert_eq!(
        tabs[2].invoke("MarkRead", json!([id])).await.unwrap(),
        json!(true)
    );
    assert_eq!(
        listed(&app, &second, "?unread=true")
            .await
            .into_iter()
            .map(|(m, _)| m)
            .collect::<Vec<_>>(),
        ["second"]
    );
    let other = app.token(&names[2]).await;
    assert_eq!(
        listed(&app, &other, "?unread=true").await,
        [("to all".to_owned(), Value::Null)]
    );
    assert_eq!(
        app.state.inbox.unread_total().await.unwrap(),
        21 + 2 + 1 - 2
    );
    assert_eq!(mark_read(&app, &late, "no-such-id").await, 404);

    late_tab.close().await;
    late_tab2.close().await;
    for tab in tabs {
        tab.close().await;
    }
}

/// Milliseconds since the Unix epoch, as the service stores times.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

async fn everyone_leaves_out_accounts_created_later(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let id = broadcast_id(
        &publish(
            &app,
            &svc,
            json!({"everyone": true, "message": "before you"}),
        )
        .await,
    );
    // The account is created once the clock has moved past the broadcast.
    let stored_by = now_ms();
    while now_ms() <= stored_by {
        tokio::task::yield_now().await;
    }
    app.user("newbie", &[]).await;
    let newbie = app.token("newbie").await;
    assert_eq!(listed(&app, &newbie, "").await, []);
    let mut tab = app.connect(&newbie).await;
    publish(&app, &svc, json!({"user": "newbie", "message": "welcome"})).await;
    assert_eq!(
        next_message(&mut tab).await,
        "welcome",
        "no broadcast from before"
    );
    assert_eq!(
        mark_read(&app, &newbie, &id).await,
        404,
        "not one of newbie's"
    );
    // One account (svc) when it was stored, and "welcome".
    assert_eq!(app.state.inbox.unread_total().await.unwrap(), 2);
    tab.close().await;
}

async fn broadcasts_received_live_are_not_replayed(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("svc", &["permission=notify"]).await;
    app.user("ann", &[]).await;
    let svc = app.token("svc").await;
    let ann = app.token("ann").await;

    let mut tab = app.connect(&ann).await;
    wait_set_up(&app, 1).await;
    for message in ["b1", "b2", "b3"] {
        publish(&app, &svc, json!({"everyone": true, "message": message})).await;
    }
    for message in ["b1", "b2", "b3"] {
        assert_eq!(next_message(&mut tab).await, message);
    }
    tab.close().await;
    app.wait_presence("ann", &ann, |p| p["online"] == false)
        .await;

    // Sent while ann is away: replayed on the next connection, alone.
    publish(&app, &svc, json!({"everyone": true, "message": "b4"})).await;
    let mut tab = app.connect(&ann).await;
    assert_eq!(next_message(&mut tab).await, "b4");
    wait_set_up(&app, 1).await;
    publish(&app, &svc, json!({"user": "ann", "message": "after"})).await;
    assert_eq!(next_message(&mut tab).await, "after", "b1–b3 not again");
    tab.close().await;
    app.wait_presence("ann", &ann, |p| p["online"] == false)
        .await;

    // Nothing is missed since: the next connection replays nothing.
    let mut tab = app.connect(&ann).await;
    wait_set_up(&app, 1).await;
    publish(&app, &svc, json!({"user": "ann", "message": "last"})).await;
    assert_eq!(next_message(&mut tab).await, "last", "b4 not again");
    tab.close().await;
}

/// Accounts connecting while broadcasts are being sent each get every broadcast exactly once:
/// those sent before their connection registered by the replay, the others live.
async fn connects_during_broadcasts_miss_none_and_repeat_none(backend: Backend) {
    const BROADCASTS: usize = 30;
    let app = TestApp::start(backend).await;
    let names = many_users(&app, 12).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let mut tokens = Vec::new();
    for user in &names {
        tokens.push(app.token(user).await);
    }

    let publisher = async {
        let mut ids = BTreeSet::new();
        for i in 0..BROADCASTS {
            let response = publish(
                &app,
                &svc,
                json!({"everyone": true, "message": format!("b{i}")}),
            )
            .await;
            ids.insert(broadcast_id(&response));
        }
        ids
    };
    let connector = async {
        let mut tabs = Vec::new();
        for token in &tokens {
            tabs.push(app.connect(token).await);
        }
        tabs
    };
    let (ids, mut tabs) = tokio::join!(publisher, connector);
    assert_eq!(ids.len(), BROADCASTS);

    for (user, tab) in names.iter().zip(tabs.iter_mut()) {
        let mut received: Vec<String> = Vec::new();
        while received.len() < BROADCASTS {
            let Some(args) = tab
                .try_expect("Notification", Duration::from_secs(10))
                .await
            else {
                panic!("{user} received {} of {BROADCASTS}", received.len());
            };
            received.push(args[0]["id"].as_str().unwrap().to_owned());
        }
        let distinct: BTreeSet<String> = received.iter().cloned().collect();
        assert_eq!(
            distinct.len(),
            received.len(),
            "{user}: duplicates {received:?}"
        );
        assert_eq!(distinct, ids, "{user}");
    }
    // And nothing more.
    publish(&app, &svc, json!({"users": names, "message": "end"})).await;
    for tab in &mut tabs {
        assert_eq!(next_message(tab).await, "end");
    }
    for tab in tabs {
        tab.close().await;
    }
}
