//! The notification hub, presence, the durable inbox and the publish API, driven over HTTP and
//! a raw SignalR WebSocket client. Each test runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp};
use serde_json::{Value, json};
use signalbox_server::presence::ConnectionRow;

on_both_backends!(
    presence_with_two_connections,
    offline_notification_delivered_on_connect_once,
    send_notification_needs_the_permission,
    mark_read_and_unread_listing,
    publish_api_permissions_and_targets,
    stale_connections_cleaned_at_start,
    retention_deletes_old_notifications,
    publishing_while_connecting_delivers_each_once,
);

fn is_online(v: &Value) -> bool {
    v["online"] == true
}

async fn presence_with_two_connections(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("alice", &[]).await;
    app.user("watcher", &[]).await;
    let alice = app.token("alice").await;
    let watcher_token = app.token("watcher").await;
    let mut watcher = app.connect(&watcher_token).await;
    // Watching everyone answers who is online: the watcher itself.
    let online = watcher
        .invoke("WatchPresence", json!([null]))
        .await
        .unwrap();
    assert_eq!(online, json!(["watcher"]));

    let before = app.presence("alice", &alice).await;
    assert_eq!(before["online"], false);
    assert_eq!(before["last_connected_at"], Value::Null);

    let tab1 = app.connect(&alice).await;
    let edge = watcher.expect("PresenceChanged").await;
    assert_eq!(edge[0]["user"], "alice");
    assert_eq!(edge[0]["online"], true);
    assert!(edge[0]["at"].as_str().unwrap().ends_with('Z'));
    let tab2 = app.connect(&alice).await;
    let both = app
        .wait_presence("alice", &alice, |v| {
            v["connections"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(both["online"], true);
    assert!(both["last_connected_at"].is_string());
    let rows = both["connections"].as_array().unwrap();
    assert_eq!(rows[0]["user_agent"], "signalbox-tests/1");
    assert_eq!(rows[0]["node"], app.state.presence.node());
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["connection_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&tab1.connection_id.as_str()));
    assert!(ids.contains(&tab2.connection_id.as_str()));
    // No edge for the second tab.
    assert!(
        watcher
            .collect("PresenceChanged", Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Closing one tab keeps the user online.
    tab1.close().await;
    let one = app
        .wait_presence("alice", &alice, |v| {
            v["connections"].as_array().unwrap().len() == 1
        })
        .await;
    assert_eq!(one["online"], true);
    assert_eq!(one["last_disconnected_at"], Value::Null);
    assert!(
        watcher
            .collect("PresenceChanged", Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Closing the last one sets offline and last_disconnected_at, with one edge.
    tab2.close().await;
    let offline = app.wait_presence("alice", &alice, |v| !is_online(v)).await;
    assert!(offline["last_disconnected_at"].is_string(), "{offline}");
    let edge = watcher.expect("PresenceChanged").await;
    assert_eq!(
        edge[0],
        json!({"user": "alice", "online": false, "at": offline["last_disconnected_at"]})
    );
    assert!(
        watcher
            .collect("PresenceChanged", Duration::from_millis(300))
            .await
            .is_empty()
    );

    let online = watcher.invoke("GetOnlineUsers", json!([])).await.unwrap();
    assert_eq!(online, json!(["watcher"]));
    watcher.close().await;
}

async fn offline_notification_delivered_on_connect_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("bob", &[]).await;
    app.user("backend", &["permission=notify"]).await;
    let service = app.token("backend").await;
    let bob = app.token("bob").await;

    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&service),
            json!({"user": "bob", "message": "while you were out"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["ids"][0].as_str().unwrap().to_owned();
    assert_eq!(body["notifications"], json!([{"id": id, "user": "bob"}]));

    let mut first = app.connect(&bob).await;
    let got = first.expect("Notification").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["from"], "backend");
    assert_eq!(got[0]["message"], "while you were out");
    assert!(got[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[0].as_object().unwrap().len(), 4, "{}", got[0]);
    assert!(
        first
            .collect("Notification", Duration::from_millis(300))
            .await
            .is_empty()
    );
    first.close().await;
    app.wait_presence("bob", &bob, |v| !is_online(v)).await;

    // Reconnecting does not deliver it again; it stays in the inbox, unread.
    let mut second = app.connect(&bob).await;
    assert!(
        second
            .collect("Notification", Duration::from_millis(500))
            .await
            .is_empty()
    );
    let (_, unread) = app.get("/api/notifications?unread=true", Some(&bob)).await;
    assert_eq!(unread.as_array().unwrap().len(), 1);
    assert_eq!(unread[0]["id"], id.as_str());

    // While online, a new one arrives live, exactly once.
    let (status, body) = app
        .post(
            "/api/notifications",
            Some(&service),
            json!({"user": "bob", "message": "live"}),
        )
        .await;
    assert_eq!(status, 201);
    let live = second.expect("Notification").await;
    assert_eq!(live[0]["id"], body["ids"][0]);
    assert_eq!(live[0]["message"], "live");
    assert!(
        second
            .collect("Notification", Duration::from_millis(300))
            .await
            .is_empty()
    );
    second.close().await;
}

async fn send_notification_needs_the_permission(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("carol", &[]).await;
    app.user("dave", &["permission=notify"]).await;
    app.user("eve", &["permission=read"]).await;
    let mut carol = app.connect(&app.token("carol").await).await;
    let mut dave = app.connect(&app.token("dave").await).await;
    let mut eve = app.connect(&app.token("eve").await).await;

    let id = dave
        .invoke("SendNotification", json!(["carol", "hello carol"]))
        .await
        .unwrap();
    let got = carol.expect("Notification").await;
    assert_eq!(got[0]["id"], id);
    assert_eq!(got[0]["from"], "dave");
    assert_eq!(got[0]["message"], "hello carol");

    let denied = eve
        .invoke("SendNotification", json!(["carol", "sneaky"]))
        .await
        .unwrap_err();
    assert!(denied.contains("unauthorized"), "{denied}");
    assert!(
        carol
            .collect("Notification", Duration::from_millis(300))
            .await
            .is_empty()
    );

    let unknown = dave
        .invoke("SendNotification", json!(["nobody", "x"]))
        .await
        .unwrap_err();
    assert!(unknown.contains("unknown user"), "{unknown}");
    for c in [carol, dave, eve] {
        c.close().await;
    }
}

async fn mark_read_and_unread_listing(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("frank", &[]).await;
    app.user("grace", &[]).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let frank = app.token("frank").await;
    let grace = app.token("grace").await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let (_, body) = app
            .post(
                "/api/notifications",
                Some(&svc),
                json!({"user": "frank", "message": text}),
            )
            .await;
        ids.push(body["ids"][0].as_str().unwrap().to_owned());
    }
    let (_, all) = app.get("/api/notifications", Some(&frank)).await;
    let messages: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["three", "two", "one"], "newest first");

    let (status, _) = app
        .post(
            &format!("/api/notifications/{}/read", ids[0]),
            Some(&frank),
            json!(null),
        )
        .await;
    assert_eq!(status, 204);
    // Someone else's notification is not found for them.
    let (status, _) = app
        .post(
            &format!("/api/notifications/{}/read", ids[1]),
            Some(&grace),
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    // Over the hub.
    let mut hub = app.connect(&frank).await;
    // The undelivered ones arrive on connect.
    assert_eq!(
        hub.collect("Notification", Duration::from_millis(500))
            .await
            .len(),
        3
    );
    assert_eq!(
        hub.invoke("MarkRead", json!([ids[1]])).await.unwrap(),
        json!(true)
    );
    assert_eq!(
        hub.invoke("MarkRead", json!(["nope"])).await.unwrap(),
        json!(false)
    );
    let (_, unread) = app
        .get("/api/notifications?unread=true", Some(&frank))
        .await;
    let unread: Vec<&str> = unread
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(unread, [ids[2].as_str()]);
    let (_, all) = app
        .get("/api/notifications?unread=false&limit=2", Some(&frank))
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all[1]["read_at"].is_string());
    let (_, grace_inbox) = app.get("/api/notifications", Some(&grace)).await;
    assert_eq!(grace_inbox, json!([]));
    hub.close().await;
}

async fn publish_api_permissions_and_targets(backend: Backend) {
    let app = TestApp::start(backend).await;
    for user in ["u1", "u2", "u3"] {
        app.user(user, &[]).await;
    }
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let plain = app.token("u1").await;

    let body = json!({"user": "u2", "message": "hi"});
    let (status, _) = app.post("/api/notifications", None, body.clone()).await;
    assert_eq!(status, 401);
    let (status, denied) = app
        .post("/api/notifications", Some(&plain), body.clone())
        .await;
    assert_eq!(status, 403, "{denied}");
    assert!(
        denied["message"].as_str().unwrap().contains("permission"),
        "{denied}"
    );
    let (_, inbox) = app
        .get("/api/notifications", Some(&app.token("u2").await))
        .await;
    assert_eq!(inbox, json!([]), "a refused publish stores nothing");

    let (status, several) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": ["u1", "u2", "u1"], "message": "m"}),
        )
        .await;
    assert_eq!(status, 201, "{several}");
    assert_eq!(several["ids"].as_array().unwrap().len(), 2);

    // Groups.
    let put = |user: &'static str, token: String| {
        let app = &app;
        async move {
            app.http
                .put(format!("{}/api/groups/ops/members/{user}", app.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(put("u2", plain.clone()).await, 403);
    assert_eq!(put("u2", svc.clone()).await, 204);
    assert_eq!(put("u3", svc.clone()).await, 204);
    assert_eq!(put("ghost", svc.clone()).await, 404);
    let (status, group) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"group": "ops", "message": "g"}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let users: Vec<&str> = group["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["u2", "u3"]);
    let (status, _) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"group": "empty", "message": "g"}),
        )
        .await;
    assert_eq!(status, 404);

    let (status, everyone) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"everyone": true, "message": "all"}),
        )
        .await;
    assert_eq!(status, 201);
    // Stored once, for every account.
    assert_eq!(everyone["ids"].as_array().unwrap().len(), 1);
    assert_eq!(everyone["notifications"], json!([]));

    let (status, _) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"user": "u1", "group": "ops", "message": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .post("/api/notifications", Some(&svc), json!({"message": "x"}))
        .await;
    assert_eq!(status, 400);
    let (status, unknown) = app
        .post(
            "/api/notifications",
            Some(&svc),
            json!({"users": ["u1", "ghost"], "message": "x"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(unknown["message"].as_str().unwrap().contains("ghost"));
}

async fn stale_connections_cleaned_at_start(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("henry", &[]).await;
    let node = "crashed-node".to_owned();
    // What a process that died with henry connected leaves behind.
    app.state
        .db
        .insert_connection(&ConnectionRow {
            connection_id: "stale-1".into(),
            user_name: "henry".into(),
            node: node.clone(),
            connected_at: 1,
            user_agent: None,
        })
        .await
        .unwrap();
    app.state.db.mark_user_connected("henry", 1).await.unwrap();
    let token = app.token("henry").await;
    assert_eq!(app.presence("henry", &token).await["online"], true);
    let db = app.stop().await;

    let mut config = common::test_config(&db);
    config.node = node;
    let restarted = TestApp::start_on(db, config).await;
    let presence = restarted.presence("henry", &token).await;
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["last_disconnected_at"].is_string());
    assert_eq!(presence["connections"], json!([]));
}

async fn retention_deletes_old_notifications(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("ivy", &[]).await;
    app.state
        .db
        .insert_notifications(&[signalbox_server::notifications::store::NotificationRow {
            id: "old".into(),
            recipient: "ivy".into(),
            sender: None,
            message: "ancient".into(),
            created_at: 1_000,
            delivered_at: None,
            read_at: None,
        }])
        .await
        .unwrap();
    let token = app.token("ivy").await;
    let (_, inbox) = app.get("/api/notifications", Some(&token)).await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    let db = app.stop().await;

    // The retention task runs at start.
    let config = common::test_config(&db);
    let restarted = TestApp::start_on(db, config).await;
    common::eventually("the old notification to be deleted", || async {
        let (_, inbox) = restarted.get("/api/notifications", Some(&token)).await;
        inbox == json!([])
    })
    .await;
}

#[tokio::test]
async fn openapi_document_and_swagger_ui() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for path in [
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/notifications",
        "/api/notifications/{id}/read",
        "/api/users/{id}/presence",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    let ui = app
        .http
        .get(format!("{}/swagger/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    let html = ui.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("cdn"), "assets are served locally");
    let js = app
        .http
        .get(format!("{}/swagger/swagger-ui-bundle.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
}

#[tokio::test]
async fn cors_allows_listed_origins_with_credentials() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.cors.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.http
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/hubs/notifications/negotiate", app.url),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = preflight("https://app.example.com").await;
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        ok.headers()
            .get("access-control-allow-credentials")
            .unwrap(),
        "true"
    );
    let other = preflight("https://evil.example.com").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn graceful_shutdown_records_users_offline() {
    let app = TestApp::start(Backend::Sqlite).await;
    app.user("jack", &[]).await;
    let token = app.token("jack").await;
    let client = app.connect(&token).await;
    app.wait_presence("jack", &token, is_online).await;
    let db = app.stop().await;
    drop(client);
    let config = common::test_config(&db);
    let restarted = TestApp::start_on(db, config).await;
    let presence = restarted.presence("jack", &token).await;
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["last_disconnected_at"].is_string(), "{presence}");
}

async fn publishing_while_connecting_delivers_each_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("kate", &[]).await;
    app.user("svc", &["permission=notify"]).await;
    let svc = app.token("svc").await;
    let kate = app.token("kate").await;
    // Publish 30 notifications while kate's connection comes up: each one is either replayed
    // on connect or delivered live, never both, never neither.
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let publisher = {
        let http = app.http.clone();
        let url = app.url.clone();
        tokio::spawn(async move {
            let mut started_tx = Some(started_tx);
            let mut ids = Vec::new();
            for i in 0..30 {
                let response: Value = http
                    .post(format!("{url}/api/notifications"))
                    .bearer_auth(&svc)
                    .json(&json!({"user": "kate", "message": format!("n{i}")}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(response["ids"][0].as_str().unwrap().to_owned());
                if let Some(tx) = started_tx.take() {
                    let _ = tx.send(());
                }
            }
            ids
        })
    };
    // Connect once the first notification is stored, while the rest are still being published.
    started.await.unwrap();
    let mut client = app.connect(&kate).await;
    let sent = publisher.await.unwrap();
    let mut received: Vec<String> = client
        .collect("Notification", Duration::from_millis(1500))
        .await
        .into_iter()
        .map(|args| args[0]["id"].as_str().unwrap().to_owned())
        .collect();
    received.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(received, expected, "each notification exactly once");
    client.close().await;
}
