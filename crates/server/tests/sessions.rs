//! Sign-ins that end before their tokens expire: sign-out, a reused refresh token, and a
//! removed or disabled account end the session's (or the user's) tokens and close the hub
//! connections they opened, without waiting for the access token to expire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Backend, PASSWORD, SECRET, TestApp};
use serde_json::{Value, json};
use signalbox_server::auth::sessions::WATCH_INTERVAL;

/// Long enough for every node to read the event log a few times over.
const ENDING_DEADLINE: Duration = Duration::from_secs(15);

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn sign_in(app: &TestApp, user: &str) -> (String, String) {
    let (status, body) = app.login(user, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn sign_out_ends_only_that_session_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("alice", &[]).await;
    let (laptop, laptop_refresh) = sign_in(&app, "alice").await;
    let (phone, _) = sign_in(&app, "alice").await;
    let (laptop_sid, phone_sid) = (
        claims_of(&laptop)["sid"].clone(),
        claims_of(&phone)["sid"].clone(),
    );
    assert!(laptop_sid.is_string(), "access tokens name their session");
    assert_ne!(
        laptop_sid, phone_sid,
        "each sign-in is a session of its own"
    );

    let mut laptop_tab = app.connect(&laptop).await;
    let mut phone_tab = app.connect(&phone).await;
    let (status, _) = app
        .post(
            "/api/auth/logout",
            None,
            json!({"refresh_token": laptop_refresh}),
        )
        .await;
    assert_eq!(status, 204);

    // On the node that signed out, at once: well before the other nodes' next read.
    let close = laptop_tab.expect_closed(WATCH_INTERVAL / 2).await;
    assert!(close.is_some(), "the server says why it closes");
    let (status, _) = app.get("/api/notifications", Some(&laptop)).await;
    assert_eq!(status, 401, "the ended session's access token is refused");
    let negotiate = app.negotiate_request(None, &laptop).send().await.unwrap();
    assert_eq!(negotiate.status(), 401, "and cannot reconnect");

    // The other session of the same user is untouched.
    assert!(phone_tab.invoke("GetOnlineUsers", json!([])).await.is_ok());
    let (status, _) = app.get("/api/notifications", Some(&phone)).await;
    assert_eq!(status, 200);
    phone_tab.close().await;
}

async fn a_reused_refresh_token_ends_the_session(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("bob", &[]).await;
    let (access, refresh) = sign_in(&app, "bob").await;
    let mut tab = app.connect(&access).await;
    let (status, rotated) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        claims_of(rotated["access_token"].as_str().unwrap())["sid"],
        claims_of(&access)["sid"],
        "a refresh stays in its session"
    );
    // The spent token again: stolen, or replayed. The whole session ends.
    let (status, _) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401);
    tab.expect_closed(ENDING_DEADLINE).await;
    for token in [&access, rotated["access_token"].as_str().unwrap()] {
        let (status, _) = app.get("/api/notifications", Some(token)).await;
        assert_eq!(status, 401);
    }
}

async fn a_removed_account_loses_its_connections(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("carol", &[]).await;
    app.user("dave", &[]).await;
    let (carol, _) = sign_in(&app, "carol").await;
    let (dave, _) = sign_in(&app, "dave").await;
    let mut carol_tab = app.connect(&carol).await;
    // A token minted without a session (`signalbox token issue`) ends with its user too.
    let mut carol_script = app.connect(&app.token("carol").await).await;
    let mut dave_tab = app.connect(&dave).await;

    // Removed by another process, as `signalbox user delete` does.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["user", "delete", "carol", "--database", &app.db.url])
        .env("SIGNALBOX_JWT_SECRET", SECRET)
        .env_remove("SIGNALBOX_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    carol_tab.expect_closed(ENDING_DEADLINE).await;
    carol_script.expect_closed(ENDING_DEADLINE).await;
    let (status, _) = app.get("/api/notifications", Some(&carol)).await;
    assert_eq!(status, 401);
    assert!(dave_tab.invoke("GetOnlineUsers", json!([])).await.is_ok());
    dave_tab.close().await;
}

async fn a_disabled_account_cannot_sign_in_until_enabled(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("erin", &[]).await;
    let (access, refresh) = sign_in(&app, "erin").await;
    let mut tab = app.connect(&access).await;
    assert!(
        app.state
            .db
            .set_user_disabled("erin", true, signalbox_server::clock::now_ms())
            .await
            .unwrap()
    );
    tab.expect_closed(ENDING_DEADLINE).await;
    let (status, body) = app.login("erin", PASSWORD).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "this account is disabled", "{body}");
    let (status, _) = app.get("/api/notifications", Some(&access)).await;
    assert_eq!(status, 401);
    let (status, _) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401, "disabling ends the sessions");

    assert!(
        app.state
            .db
            .set_user_disabled("erin", false, signalbox_server::clock::now_ms())
            .await
            .unwrap()
    );
    let (fresh, _) = sign_in(&app, "erin").await;
    let (status, _) = app.get("/api/notifications", Some(&fresh)).await;
    assert_eq!(status, 200);
}

on_both_backends!(
    sign_out_ends_only_that_session_at_once,
    a_reused_refresh_token_ends_the_session,
    a_removed_account_loses_its_connections,
    a_disabled_account_cannot_sign_in_until_enabled,
);
