//! Accounts and tokens over HTTP: login, refresh rotation and reuse revocation, logout,
//! registration, asymmetric signing with JWKS, and start-up validation. Each storage test runs
//! on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, PASSWORD, TestApp};
use serde_json::json;

on_both_backends!(
    login_refresh_rotation_and_reuse,
    logout_revokes_the_session,
    registration_open_or_disabled,
    query_string_tokens_refused_on_rest,
);

async fn login_refresh_rotation_and_reuse(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("alice", &["permission=notify"]).await;

    let (status, body) = app.login("alice", "wrong password").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = app.login("nobody", PASSWORD).await;
    assert_eq!(status, 401);

    let (status, first) = app.login("alice", PASSWORD).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 900);
    let access = first["access_token"].as_str().unwrap();
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = app.get("/api/notifications", Some(access)).await;
    assert_eq!(status, 200);
    let principal = app
        .state
        .tokens
        .validator()
        .unwrap()
        .validate(access)
        .unwrap();
    assert_eq!(principal.user_id(), Some("alice"));
    assert!(principal.has_claim("permission", "notify"));

    // Rotation: each refresh token works once and yields a new one.
    let (status, second) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let (status, _) = app
        .get("/api/notifications", second["access_token"].as_str())
        .await;
    assert_eq!(status, 200);
    let (status, third) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": r2}))
        .await;
    assert_eq!(status, 200, "{third}");
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();

    // Reusing a spent token revokes the whole family, including the newest token.
    let (status, body) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("reuse"),
        "{body}"
    );
    let (status, _) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": r3}))
        .await;
    assert_eq!(
        status, 401,
        "the newest token of a revoked family must be refused"
    );

    // Another login is a separate family and unaffected.
    let (_, other) = app.login("alice", PASSWORD).await;
    let (status, _) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": other["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, _) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": "sbr_unknown"}),
        )
        .await;
    assert_eq!(status, 401);
}

async fn logout_revokes_the_session(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("bob", &[]).await;
    let (_, session) = app.login("bob", PASSWORD).await;
    let refresh = session["refresh_token"].clone();
    let (status, _) = app
        .post("/api/auth/logout", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .post("/api/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401);
}

async fn registration_open_or_disabled(backend: Backend) {
    let closed = TestApp::start(backend).await;
    let (status, body) = closed
        .post(
            "/api/auth/register",
            None,
            json!({"username": "carol", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    drop(closed);

    let app = TestApp::start_with(backend, |c| c.auth.registration = true).await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "carol", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "carol", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "dave", "password": "short"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "bad name", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.login("carol", PASSWORD).await;
    assert_eq!(status, 200);
}

async fn query_string_tokens_refused_on_rest(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("erin", &[]).await;
    let token = app.token("erin").await;
    let (status, _) = app
        .get(&format!("/api/notifications?access_token={token}"), None)
        .await;
    assert_eq!(status, 401);
    let response = app
        .http
        .get(format!("{}/api/notifications", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn es256_tokens_and_jwks() {
    asymmetric_tokens_and_jwks(
        signalbox_server::config::SigningAlgorithm::ES256,
        include_str!("keys/es256.pem"),
        "\"crv\":\"P-256\"",
    )
    .await;
}

#[tokio::test]
async fn rs256_tokens_and_jwks() {
    asymmetric_tokens_and_jwks(
        signalbox_server::config::SigningAlgorithm::RS256,
        include_str!("keys/rs256.pem"),
        "\"kty\":\"RSA\"",
    )
    .await;
}

async fn asymmetric_tokens_and_jwks(
    algorithm: signalbox_server::config::SigningAlgorithm,
    pem: &str,
    expected_in_jwks: &str,
) {
    let jwt_alg = match algorithm {
        signalbox_server::config::SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        signalbox_server::config::SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        signalbox_server::config::SigningAlgorithm::HS256 => unreachable!(),
    };
    let dir = std::env::temp_dir().join(format!("signalbox-key-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    std::fs::write(&key, pem).unwrap();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.auth.jwt_algorithm = algorithm;
        c.auth.jwt_private_key = Some(key.clone());
        c.auth.jwt_secret = None;
    })
    .await;
    app.user("frank", &[]).await;
    let (status, session) = app.login("frank", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    let access = session["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, jwt_alg);
    assert_eq!(header.kid.as_deref(), Some("signalbox-1"));

    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    assert_eq!(set.keys.len(), 1, "{jwks}");
    let jwk = set.find("signalbox-1").unwrap();
    assert!(jwks.to_string().contains(expected_in_jwks), "{jwks}");
    assert!(
        !jwks.to_string().contains("\"d\""),
        "private key material must not be published"
    );
    let mut validation = jsonwebtoken::Validation::new(jwt_alg);
    validation.set_issuer(&["signalbox"]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        access,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims["sub"], "frank");
    let (status, _) = app.get("/api/notifications", Some(access)).await;
    assert_eq!(status, 200);
    let mut hub = app.connect(access).await;
    assert_eq!(
        hub.invoke("GetOnlineUsers", json!([])).await.unwrap(),
        json!(["frank"])
    );
    hub.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unreachable_database_is_a_clear_start_error() {
    let mut config = signalbox_server::config::Config {
        database: "postgres://postgres@127.0.0.1:1/none".into(),
        ..Default::default()
    };
    config.auth.jwt_secret = Some(common::SECRET.into());
    let error = signalbox_server::server::build(config).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("cannot open the database at postgres://postgres@127.0.0.1:1/none"),
        "{message}"
    );
}

#[tokio::test]
async fn oidc_tokens_are_mapped_to_local_users_and_keys_rotate() {
    use common::issuer::FakeIssuer;
    let issuer = FakeIssuer::start().await;
    let first = issuer.publish(include_str!("keys/es256.pem"), "k1");
    let issuer_url = issuer.url.clone();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(signalbox_server::config::OidcConfig {
            issuer: issuer_url,
            discovery_url: None,
            jwks_url: None,
            audience: Some("client-1".into()),
            user_claim: "email".into(),
            auto_create_users: true,
            jwks_cache_ttl: std::time::Duration::from_secs(3600),
            jwks_min_refresh_interval: std::time::Duration::ZERO,
            client_id: None,
            scopes: "openid email".into(),
            provider_name: None,
        });
    })
    .await;

    let token = issuer.token(&first, "k1", "client-1", "olivia@example.com");
    let (status, body) = app.get("/api/notifications", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        app.state
            .db
            .user("olivia@example.com")
            .await
            .unwrap()
            .is_some(),
        "account created"
    );

    // Wrong audience, or a key the issuer never published: refused.
    let wrong_aud = issuer.token(&first, "k1", "another-client", "olivia@example.com");
    assert_eq!(app.get("/api/notifications", Some(&wrong_aud)).await.0, 401);
    let rogue =
        jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("keys/es256-rotated.pem")).unwrap();
    let forged = issuer.token(&rogue, "k1", "client-1", "olivia@example.com");
    assert_eq!(app.get("/api/notifications", Some(&forged)).await.0, 401);

    // The hub accepts the external token and maps it to the local user.
    let mut hub = app.connect(&token).await;
    assert_eq!(
        hub.invoke("GetOnlineUsers", json!([])).await.unwrap(),
        json!(["olivia@example.com"])
    );
    hub.close().await;

    // Key rotation: a token signed with a newly published key is accepted after a refetch.
    let second = issuer.publish(include_str!("keys/es256-rotated.pem"), "k2");
    let rotated = issuer.token(&second, "k2", "client-1", "olivia@example.com");
    let (status, body) = app.get("/api/notifications", Some(&rotated)).await;
    assert_eq!(status, 200, "{body}");

    // Local tokens still work alongside.
    app.user("paul", &[]).await;
    let (_, session) = app.login("paul", PASSWORD).await;
    let (status, _) = app
        .get("/api/notifications", session["access_token"].as_str())
        .await;
    assert_eq!(status, 200);
    let local = app.connect(session["access_token"].as_str().unwrap()).await;
    local.close().await;
}

/// RFC 8725 §3.11: local access tokens carry `typ: at+jwt` (RFC 9068) and a JWT signed with the
/// same key but typed otherwise (or not at all) is refused on REST routes and on the hub.
#[tokio::test]
async fn access_tokens_must_be_typed_at_jwt() {
    let app = TestApp::start(Backend::Sqlite).await;
    app.user("alice", &[]).await;
    let (status, session) = app.login("alice", PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    let access = session["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));

    let now = signalbox_server::clock::now_secs();
    let claims = json!({"sub": "alice", "iss": "signalbox", "iat": now, "exp": now + 300});
    let key = jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()).unwrap();
    let sign = |typ: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let negotiate = |token: String| {
        let request = app.negotiate_request(None, &token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for typ in [Some("JWT"), None, Some("id_token+jwt")] {
        let token = sign(typ);
        assert_eq!(
            app.get("/api/notifications", Some(&token)).await.0,
            401,
            "{typ:?} on REST"
        );
        assert_eq!(negotiate(token).await, 401, "{typ:?} on negotiate");
    }
    for typ in ["at+jwt", "application/at+jwt"] {
        let token = sign(Some(typ));
        assert_eq!(app.get("/api/notifications", Some(&token)).await.0, 200);
        assert_eq!(negotiate(token).await, 200, "{typ} on negotiate");
    }
}
