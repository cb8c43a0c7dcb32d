//! The web page's server side: `GET /` with its security headers, the embedded assets,
//! `GET /api/auth/config`, and `POST /api/auth/external` trading an ID token of the configured
//! OpenID Connect provider for a signalbox session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, TestApp};
use serde_json::{Value, json};

/// A stand-in OpenID Connect provider: discovery (with the browser endpoints) and a JWKS.
struct FakeProvider {
    url: String,
    key: jsonwebtoken::EncodingKey,
}

impl FakeProvider {
    async fn start() -> FakeProvider {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("keys/es256.pem")).unwrap();
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        jwk.common.key_id = Some("k1".to_owned());
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/keys"),
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
        });
        let app =
            axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/keys",
                    get(move || async move {
                        axum::Json(jsonwebtoken::jwk::JwkSet { keys: vec![jwk] })
                    }),
                );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProvider { url, key }
    }

    fn id_token(&self, extra: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".to_owned());
        let now = signalbox_server::clock::now_secs();
        let mut claims = json!({
            "iss": self.url, "aud": "page-client", "sub": "ext-1",
            "email": "olivia@example.com", "email_verified": true,
            "iat": now, "exp": now + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn oidc_config(issuer: &str, audience: Option<&str>) -> signalbox_server::config::OidcConfig {
    signalbox_server::config::OidcConfig {
        issuer: issuer.to_owned(),
        discovery_url: None,
        jwks_url: None,
        audience: audience.map(str::to_owned),
        user_claim: "email".into(),
        auto_create_users: true,
        jwks_cache_ttl: std::time::Duration::from_secs(3600),
        jwks_min_refresh_interval: std::time::Duration::ZERO,
        client_id: Some("page-client".into()),
        scopes: "openid email".into(),
        provider_name: None,
    }
}

#[tokio::test]
async fn page_and_assets_are_served_with_security_headers() {
    let app = TestApp::start(Backend::Sqlite).await;
    let response = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("/assets/signalr.min.js"), "{html}");
    assert!(!html.contains("https://"), "no external resources: {html}");

    for (path, kind, needle) in [
        ("/assets/app.js", "text/javascript", "accessTokenFactory"),
        ("/assets/app.css", "text/css", ".toast"),
        (
            "/assets/signalr.min.js",
            "text/javascript",
            "HubConnectionBuilder",
        ),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }

    // Without a provider the page offers password sign-in only.
    let (status, config) = app.get("/api/auth/config", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"oidc": null, "permission_claim": "permission", "notify_permission": "notify"})
    );
    let (status, body) = app
        .post("/api/auth/external", None, json!({"id_token": "x.y.z"}))
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn external_id_tokens_are_traded_for_sessions() {
    let provider = FakeProvider::start().await;
    let issuer = provider.url.clone();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer, Some("page-client")));
    })
    .await;

    // The page learns the provider's endpoints, and may call its token endpoint.
    let (status, config) = app.get("/api/auth/config", None).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["oidc"]["client_id"], "page-client");
    assert_eq!(config["oidc"]["issuer"], provider.url.as_str());
    assert_eq!(
        config["oidc"]["authorization_endpoint"],
        format!("{}/auth", provider.url)
    );
    assert_eq!(
        config["oidc"]["token_endpoint"],
        format!("{}/token", provider.url)
    );
    assert_eq!(config["oidc"]["name"], "127.0.0.1");
    let page = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' {};", provider.url)),
        "{csp}"
    );

    // A valid ID token: a session like a password login's, for an account made on first sight.
    let (status, session) = app
        .post(
            "/api/auth/external",
            None,
            json!({"id_token": provider.id_token(&json!({}))}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let access = session["access_token"].as_str().unwrap();
    assert!(session["expires_in"].as_u64().unwrap() > 0);
    let (status, _) = app.get("/api/notifications", Some(access)).await;
    assert_eq!(status, 200);
    let (status, refreshed) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let mut hub = app.connect(access).await;
    assert_eq!(
        hub.invoke("GetOnlineUsers", json!([])).await.unwrap(),
        json!(["olivia@example.com"])
    );
    hub.close().await;

    // Refused: another client's token, an expired one, an unverified address, a forgery.
    for (case, token) in [
        (
            "other client",
            provider.id_token(&json!({"aud": "another-client"})),
        ),
        (
            "expired",
            provider.id_token(&json!({"exp": signalbox_server::clock::now_secs() - 120})),
        ),
        (
            "unverified",
            provider.id_token(&json!({"email_verified": false})),
        ),
        ("local token", app.token("olivia@example.com").await),
    ] {
        let (status, body) = app
            .post("/api/auth/external", None, json!({"id_token": token}))
            .await;
        assert_eq!(status, 401, "{case}: {body}");
    }
}

#[tokio::test]
async fn without_an_audience_the_client_id_is_still_required() {
    let provider = FakeProvider::start().await;
    let issuer = provider.url.clone();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer, None));
    })
    .await;
    let other = provider.id_token(&json!({"aud": "another-client"}));
    let (status, body) = app
        .post("/api/auth/external", None, json!({"id_token": other}))
        .await;
    assert_eq!(status, 401, "{body}");
    let ours = provider.id_token(&json!({}));
    let (status, body) = app
        .post("/api/auth/external", None, json!({"id_token": ours}))
        .await;
    assert_eq!(status, 200, "{body}");
}
