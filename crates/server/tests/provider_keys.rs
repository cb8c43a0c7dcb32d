//! Tokens of the external OpenID Connect provider on the hub and on REST: one authenticator
//! gives the same answer on both. The provider's keys rotate without a restart (a new key is
//! accepted everywhere at once, a withdrawn one refused everywhere after the next fetch), a
//! provider that was down when the service started is used as soon as it answers, and issuer and
//! audience are checked as a pair.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::issuer::FakeIssuer;
use common::{Backend, PASSWORD, TestApp};
use serde_json::json;

const CLIENT: &str = "client-1";
const ES256: &str = include_str!("keys/es256.pem");
const ES256_ROTATED: &str = include_str!("keys/es256-rotated.pem");

fn oidc(issuer: &str) -> signalbox_server::config::OidcConfig {
    let mut config = signalbox_server::config::OidcConfig::new(issuer);
    config.audience = Some(CLIENT.into());
    config.auto_create_users = true;
    config.jwks_min_refresh_interval = Duration::ZERO;
    config
}

/// The answers of REST (`GET /api/notifications`) and of the hub (negotiate) to one token.
async fn answers(app: &TestApp, token: &str) -> (u16, u16) {
    let rest = app.get("/api/notifications", Some(token)).await.0;
    let hub = app
        .negotiate_request(None, token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (rest, hub)
}

#[tokio::test]
async fn rotated_keys_are_accepted_and_withdrawn_keys_refused_everywhere() {
    let issuer = FakeIssuer::start().await;
    let first = issuer.publish(ES256, "k1");
    let app = TestApp::start_with(Backend::Sqlite, |c| c.oidc = Some(oidc(&issuer.url))).await;

    let token = issuer.token(&first, "k1", CLIENT, "olivia@example.com");
    assert_eq!(answers(&app, &token).await, (200, 200));
    let mut hub = app.connect(&token).await;
    assert_eq!(
        hub.invoke("GetOnlineUsers", json!([])).await.unwrap(),
        json!(["olivia@example.com"]),
        "the hub sees the local user the token maps to"
    );

    // The provider rotates: a new key, the old one withdrawn. No restart.
    let second = issuer.publish(ES256_ROTATED, "k2");
    issuer.withdraw("k1");
    let rotated = issuer.token(&second, "k2", CLIENT, "olivia@example.com");
    // The hub is asked first: it fetches the new key set for both.
    let negotiate = app.negotiate_request(None, &rotated).send().await.unwrap();
    assert_eq!(negotiate.status(), 200);
    let mut rotated_hub = app.connect(&rotated).await;
    assert!(
        rotated_hub
            .invoke("GetOnlineUsers", json!([]))
            .await
            .is_ok()
    );
    assert_eq!(app.get("/api/notifications", Some(&rotated)).await.0, 200);

    // A fresh token signed with the withdrawn key: refused on both, though it is unexpired.
    let stale = issuer.token(&first, "k1", CLIENT, "olivia@example.com");
    assert_eq!(answers(&app, &stale).await, (401, 401));

    hub.close().await;
    rotated_hub.close().await;
}

#[tokio::test]
async fn a_provider_down_at_start_is_used_once_it_answers() {
    let mut issuer = FakeIssuer::down().await;
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        let mut config = oidc(&issuer.url);
        config.client_id = Some(CLIENT.into());
        c.oidc = Some(config);
    })
    .await;
    // While it is down the page offers no external sign-in, and its tokens cannot be checked.
    let (_, page) = app.get("/api/auth/config", None).await;
    assert!(page["oidc"].is_null(), "{page}");

    issuer.come_up().await;
    let key = issuer.publish(ES256, "k1");
    // Sign-in: the page finds the provider, and an ID token is traded for a session.
    let (_, page) = app.get("/api/auth/config", None).await;
    assert_eq!(page["oidc"]["issuer"], issuer.url.as_str(), "{page}");
    let id_token = issuer.token(&key, "k1", CLIENT, "olivia@example.com");
    let (status, session) = app
        .post("/api/auth/external", None, json!({"id_token": id_token}))
        .await;
    assert_eq!(status, 200, "{session}");
    // The provider's own tokens, on REST and the hub.
    let token = issuer.token(&key, "k1", CLIENT, "olivia@example.com");
    assert_eq!(answers(&app, &token).await, (200, 200));
    let mut hub = app.connect(&token).await;
    assert!(hub.invoke("GetOnlineUsers", json!([])).await.is_ok());
    hub.close().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_as_a_pair() {
    let issuer = FakeIssuer::start().await;
    let key = issuer.publish(ES256, "k1");
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.auth.audience = Some("signalbox-api".into());
        c.oidc = Some(oidc(&issuer.url));
    })
    .await;

    // The provider's token made for the service's own audience: the provider is not trusted
    // for that audience.
    let crossed = issuer.token(&key, "k1", "signalbox-api", "olivia@example.com");
    assert_eq!(answers(&app, &crossed).await, (401, 401));
    let other_client = issuer.token(&key, "k1", "another-client", "olivia@example.com");
    assert_eq!(answers(&app, &other_client).await, (401, 401));
    let right = issuer.token(&key, "k1", CLIENT, "olivia@example.com");
    assert_eq!(answers(&app, &right).await, (200, 200));

    // Local tokens still carry the local audience and work on both.
    app.user("paul", &[]).await;
    let (_, session) = app.login("paul", PASSWORD).await;
    let local = session["access_token"].as_str().unwrap();
    assert_eq!(answers(&app, local).await, (200, 200));
}

#[tokio::test]
async fn an_unverified_email_maps_no_user_anywhere() {
    let issuer = FakeIssuer::start().await;
    let key = issuer.publish(ES256, "k1");
    let app = TestApp::start_with(Backend::Sqlite, |c| c.oidc = Some(oidc(&issuer.url))).await;
    app.user("olivia@example.com", &[]).await;
    for unverified in [json!(false), json!("false"), json!(null)] {
        let token = issuer.token_with(
            &key,
            "k1",
            CLIENT,
            "olivia@example.com",
            &json!({"email_verified": unverified}),
        );
        assert_eq!(answers(&app, &token).await, (401, 401), "{unverified}");
    }
    let verified = issuer.token(&key, "k1", CLIENT, "olivia@example.com");
    assert_eq!(answers(&app, &verified).await, (200, 200));
}
