//! Publishing to many recipients at once (`everyone`, a large `users` list): more recipients
//! than one multi-row INSERT stores, each with exactly one row, delivered live to those online
//! and replayed to the others. Each test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestApp};
use serde_json::{Value, json};
use signalbox_server::auth::accounts::NewUser;
use signalbox_server::notifications::store::INSERT_CHUNK;

on_both_backends!(
    everyone_across_insert_chunks_gets_one_row_each,
    users_list_reports_every_unknown_user,
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

async fn everyone_across_insert_chunks_gets_one_row_each(backend: Backend) {
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
            json!({"everyone": true, "message": "to all"}),
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
