//! Server-side sign-in as a confidential OpenID Connect client: `GET /api/auth/oidc/start` →
//! the provider → `GET /api/auth/oidc/callback` → `POST /api/auth/oidc/session`, against a
//! fake provider whose token endpoint checks the client authentication (`client_secret_basic`
//! or `client_secret_post`) and the PKCE verifier, and signs ID tokens with the request's nonce.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, TestApp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signalbox_server::auth::store::{SignInFlowKind, SignInFlowRow};
use signalbox_server::config::{ClientSecret, OidcConfig};

const CLIENT_ID: &str = "page-client";
/// Characters that Basic authentication must form-encode.
const CLIENT_SECRET: &str = "GOCSPX-s3cr3t/with+special:chars";

/// What the provider remembers of an authorization request.
#[derive(Clone)]
struct Pending {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    extra: Value,
}

/// A token request as the provider saw it.
#[derive(Clone, Debug)]
struct TokenRequest {
    authorization: Option<String>,
    form: HashMap<String, String>,
    outcome: &'static str,
}

#[derive(Default)]
struct ProviderState {
    codes: HashMap<String, Pending>,
    requests: Vec<TokenRequest>,
    methods: Vec<String>,
}

/// A stand-in OpenID Connect provider.
struct FakeProvider {
    url: String,
    state: Arc<Mutex<ProviderState>>,
}

fn b64_sha256(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

fn form_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() + 1 => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

struct Shared {
    url: String,
    key: jsonwebtoken::EncodingKey,
    state: Arc<Mutex<ProviderState>>,
}

async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::http::StatusCode;
    let authorization = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut state = shared.state.lock().unwrap();
    let post_only = state.methods == ["client_secret_post"];
    let refuse = |state: &mut ProviderState, status, error: &'static str| {
        state.requests.push(TokenRequest {
            authorization: authorization.clone(),
            form: form.clone(),
            outcome: error,
        });
        (status, axum::Json(json!({"error": error})))
    };
    // Client authentication, the way the discovery document announced it.
    let authenticated = if post_only {
        authorization.is_none()
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
    } else {
        let decoded = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let pair = decoded.as_deref().and_then(|d| d.split_once(':'));
        !form.contains_key("client_secret")
            && pair.is_some_and(|(id, secret)| {
                form_decode(id) == CLIENT_ID && form_decode(secret) == CLIENT_SECRET
            })
    };
    if !authenticated {
        return refuse(&mut state, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse(
            &mut state,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        );
    }
    let Some(pending) = form.get("code").and_then(|c| state.codes.remove(c)) else {
        return refuse(&mut state, StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if b64_sha256(&verifier) != pending.challenge
        || form.get("redirect_uri") != Some(&pending.redirect_uri)
    {
        return refuse(&mut state, StatusCode::BAD_REQUEST, "invalid_grant");
    }
    state.requests.push(TokenRequest {
        authorization,
        form,
        outcome: "ok",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".to_owned());
    let now = signalbox_server::clock::now_secs();
    let mut claims = json!({
        "iss": shared.url, "aud": CLIENT_ID, "sub": "ext-1",
        "email": "olivia@example.com", "email_verified": true,
        "nonce": pending.nonce, "iat": now, "exp": now + 300,
    });
    for (k, v) in pending.extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let id_token = jsonwebtoken::encode(&header, &claims, &shared.key).unwrap();
    (
        StatusCode::OK,
        axum::Json(json!({
            "access_token": "provider-access", "token_type": "Bearer",
            "expires_in": 300, "id_token": id_token,
        })),
    )
}

impl FakeProvider {
    /// A provider; `token_url` replaces its token endpoint in discovery (to simulate an outage).
    async fn start(methods: &[&str], token_url: Option<&str>) -> FakeProvider {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("keys/es256.pem")).unwrap();
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        jwk.common.key_id = Some("k1".to_owned());
        let state = Arc::new(Mutex::new(ProviderState {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            ..ProviderState::default()
        }));
        let mut discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/keys"),
            "authorization_endpoint": format!("{url}/auth?prompt=consent"),
            "token_endpoint": token_url.map_or_else(|| format!("{url}/token"), str::to_owned),
        });
        if !methods.is_empty() {
            discovery["token_endpoint_auth_methods_supported"] = json!(methods);
        }
        let shared = Arc::new(Shared {
            url: url.clone(),
            key,
            state: state.clone(),
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
                )
                .route("/token", post(token_endpoint))
                .with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeProvider { url, state }
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn oidc_config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        discovery_url: None,
        jwks_url: None,
        audience: None,
        user_claim: "email".into(),
        auto_create_users: true,
        jwks_cache_ttl: std::time::Duration::from_secs(3600),
        jwks_min_refresh_interval: std::time::Duration::ZERO,
        client_id: Some(CLIENT_ID.into()),
        scopes: "email profile".into(),
        provider_name: None,
    }
}

async fn start_app(backend: Backend, provider: &FakeProvider) -> TestApp {
    let issuer = provider.url.clone();
    TestApp::start_with(backend, |c| {
        c.oidc = Some(oidc_config(&issuer));
        c.oidc_client.client_secret = Some(ClientSecret::new(CLIENT_SECRET));
        c.rate_limit.enabled = false;
    })
    .await
}

/// The browser: no redirects followed, every response kept (to look for the secret).
struct Browser {
    http: reqwest::Client,
    base: String,
    seen: Vec<String>,
}

/// A response as the browser saw it.
struct Seen {
    status: u16,
    location: Option<String>,
    cookies: HashMap<String, String>,
    set_cookie: Vec<String>,
    body: String,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.url.clone(),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Seen {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let mut record = format!("{status}\n");
        for (name, value) in &headers {
            record.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        record.push_str(&body);
        self.seen.push(record);
        let set_cookie: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let cookies = set_cookie
            .iter()
            .filter_map(|c| c.split(';').next()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Seen {
            status,
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            cookies,
            set_cookie,
            body,
        }
    }

    async fn get(&mut self, path: &str, cookie: Option<&str>) -> Seen {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }

    async fn post(&mut self, path: &str, cookie: Option<&str>) -> Seen {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }
}

/// An authorization request that reached the provider.
struct Authorized {
    state: String,
    flow_cookie: String,
    code: String,
    nonce: String,
}

/// `start`, then the provider "signs the user in" and issues `code` for these claims.
async fn authorize(
    browser: &mut Browser,
    provider: &FakeProvider,
    app: &TestApp,
    extra: Value,
) -> Authorized {
    let started = browser.get("/api/auth/oidc/start", None).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let location = reqwest::Url::parse(started.location.as_deref().unwrap()).unwrap();
    assert_eq!(
        location.as_str().split('?').next().unwrap(),
        format!("{}/auth", provider.url)
    );
    let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(
        params["prompt"], "consent",
        "the endpoint's own query is kept"
    );
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert_eq!(
        params["redirect_uri"],
        format!("{}/api/auth/oidc/callback", app.url)
    );
    assert_eq!(params["scope"], "openid email profile");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert!(params["state"].len() >= 32 && params["nonce"].len() >= 32);
    let set_cookie = started
        .set_cookie
        .iter()
        .find(|c| c.starts_with("signalbox_oidc_flow="))
        .unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=600"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "plain http, no trusted proxy: {set_cookie}"
    );
    let flow_cookie = format!(
        "signalbox_oidc_flow={}",
        started.cookies["signalbox_oidc_flow"]
    );
    let code = format!("code-{}", uuid::Uuid::now_v7().simple());
    provider.state.lock().unwrap().codes.insert(
        code.clone(),
        Pending {
            challenge: params["code_challenge"].clone(),
            nonce: params["nonce"].clone(),
            redirect_uri: params["redirect_uri"].clone(),
            extra,
        },
    );
    Authorized {
        state: params["state"].clone(),
        flow_cookie,
        code,
        nonce: params["nonce"].clone(),
    }
}

fn callback_path(code: &str, state: &str) -> String {
    format!("/api/auth/oidc/callback?code={code}&state={state}&scope=openid")
}

/// The whole flow; returns the session endpoint's answer.
async fn sign_in(browser: &mut Browser, provider: &FakeProvider, app: &TestApp) -> Value {
    let auth = authorize(browser, provider, app, json!({})).await;
    let back = browser
        .get(
            &callback_path(&auth.code, &auth.state),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert_eq!(back.location.as_deref(), Some("/?signin=oidc"));
    let ticket = back.cookies["signalbox_oidc_ticket"].clone();
    let ticket_cookie = back
        .set_cookie
        .iter()
        .find(|c| c.starts_with("signalbox_oidc_ticket="))
        .unwrap();
    assert!(ticket_cookie.contains("HttpOnly"), "{ticket_cookie}");
    assert!(ticket_cookie.contains("Max-Age=60"), "{ticket_cookie}");
    assert!(ticket_cookie.contains("SameSite=Strict"), "{ticket_cookie}");
    assert_eq!(
        back.cookies.get("signalbox_oidc_flow").map(String::as_str),
        Some(""),
        "the flow cookie is deleted"
    );
    let cookie = format!("signalbox_oidc_ticket={ticket}");
    let session = browser.post("/api/auth/oidc/session", Some(&cookie)).await;
    assert_eq!(session.status, 200, "{}", session.body);
    // The ticket is single use.
    let again = browser.post("/api/auth/oidc/session", Some(&cookie)).await;
    assert_eq!(again.status, 401, "{}", again.body);
    serde_json::from_str(&session.body).unwrap()
}

async fn confidential_sign_in(backend: Backend) {
    let provider = FakeProvider::start(&[], None).await;
    let app = start_app(backend, &provider).await;
    let mut browser = Browser::new(&app);

    // The page learns that the service runs the flow.
    let (status, config) = app.get("/api/auth/config", None).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["oidc"]["flow"], "server");
    assert_eq!(config["oidc"]["start_url"], "/api/auth/oidc/start");
    let page = browser.get("/", None).await;
    assert_eq!(page.status, 200);

    let session = sign_in(&mut browser, &provider, &app).await;
    let access = session["access_token"].as_str().unwrap();
    assert_eq!(session["token_type"], "Bearer");
    let (status, body) = app.get("/api/notifications", Some(access)).await;
    assert_eq!(status, 200, "{body}");
    let (status, refreshed) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(
        app.state
            .db
            .user("olivia@example.com")
            .await
            .unwrap()
            .is_some()
    );

    // The token request came with client_secret_basic and the PKCE verifier.
    let requests = provider.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].outcome, "ok");
    assert!(
        requests[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );
    assert!(!requests[0].form.contains_key("client_secret"));
    assert_eq!(requests[0].form["code_verifier"].len(), 43);

    // The secret never reached the browser.
    for seen in &browser.seen {
        assert!(!seen.contains(CLIENT_SECRET), "{seen}");
        assert!(!seen.contains("s3cr3t"), "{seen}");
    }
}

on_both_backends!(confidential_sign_in);

#[tokio::test]
async fn client_secret_post_when_it_is_the_only_method() {
    let provider = FakeProvider::start(&["client_secret_post"], None).await;
    let app = start_app(Backend::Sqlite, &provider).await;
    let mut browser = Browser::new(&app);
    let session = sign_in(&mut browser, &provider, &app).await;
    assert!(session["access_token"].is_string());
    let requests = provider.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].authorization.is_none());
    assert_eq!(requests[0].form["client_secret"], CLIENT_SECRET);
    assert_eq!(requests[0].form["client_id"], CLIENT_ID);
    for seen in &browser.seen {
        assert!(!seen.contains(CLIENT_SECRET), "{seen}");
    }

    // Both methods listed: Basic, the default.
    let provider = FakeProvider::start(&["client_secret_post", "client_secret_basic"], None).await;
    let app = start_app(Backend::Sqlite, &provider).await;
    let mut browser = Browser::new(&app);
    sign_in(&mut browser, &provider, &app).await;
    assert!(provider.requests()[0].authorization.is_some());
}

#[tokio::test]
async fn state_must_be_known_unused_unexpired_and_of_this_browser() {
    let provider = FakeProvider::start(&[], None).await;
    let app = start_app(Backend::Sqlite, &provider).await;
    let mut browser = Browser::new(&app);
    let auth = authorize(&mut browser, &provider, &app, json!({})).await;

    // Missing cookie: refused, and the pending sign-in stays for its browser.
    let no_cookie = browser
        .get(&callback_path(&auth.code, &auth.state), None)
        .await;
    assert_eq!(no_cookie.status, 400, "{}", no_cookie.body);
    assert!(
        no_cookie.body.contains("missing_cookie"),
        "{}",
        no_cookie.body
    );
    assert!(
        no_cookie.body.contains("Sign-in failed"),
        "{}",
        no_cookie.body
    );
    // Another browser's cookie: refused too.
    let other = browser
        .get(
            &callback_path(&auth.code, &auth.state),
            Some("signalbox_oidc_flow=someone-elses-cookie"),
        )
        .await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert!(other.body.contains("invalid_state"), "{}", other.body);
    // Tampered state.
    let tampered = format!("{}x", auth.state);
    let bad = browser
        .get(
            &callback_path(&auth.code, &tampered),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("invalid_state"), "{}", bad.body);
    // No state at all.
    let none = browser
        .get(
            &format!("/api/auth/oidc/callback?code={}", auth.code),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(none.status, 400, "{}", none.body);

    // The genuine callback still works, once.
    let path = callback_path(&auth.code, &auth.state);
    let ok = browser.get(&path, Some(&auth.flow_cookie)).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location.as_deref(), Some("/?signin=oidc"));
    let replay = browser.get(&path, Some(&auth.flow_cookie)).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("invalid_state"), "{}", replay.body);
    assert_eq!(
        provider.requests().len(),
        1,
        "the replay never reached the provider"
    );

    // Expired: a pending sign-in stored eleven minutes ago.
    let now = signalbox_server::clock::now_ms();
    let state = "expired-state-value-0123456789abcdef";
    let flow = "expired-flow-cookie-0123456789abcdef";
    app.state
        .db
        .insert_sign_in_flow(&SignInFlowRow {
            key_hash: b64_sha256(state),
            kind: SignInFlowKind::State,
            binding_hash: b64_sha256(flow),
            data: format!("{}/api/auth/oidc/callback", app.url),
            created_at: now - 11 * 60_000,
            expires_at: now - 60_000,
        })
        .await
        .unwrap();
    let expired = browser
        .get(
            &callback_path("whatever", state),
            Some(&format!("signalbox_oidc_flow={flow}")),
        )
        .await;
    assert_eq!(expired.status, 400, "{}", expired.body);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    // A later start purges expired rows.
    let purge = app.state.db.purge_sign_in_flows(now).await.unwrap();
    assert_eq!(purge, 0, "the expired row was taken by its callback");

    // The session endpoint without a ticket.
    let no_ticket = browser.post("/api/auth/oidc/session", None).await;
    assert_eq!(no_ticket.status, 401, "{}", no_ticket.body);
    let forged = browser
        .post(
            "/api/auth/oidc/session",
            Some("signalbox_oidc_ticket=forged"),
        )
        .await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    // A state value is not a ticket.
    let as_ticket = browser
        .post(
            "/api/auth/oidc/session",
            Some(&format!("signalbox_oidc_ticket={}", auth.state)),
        )
        .await;
    assert_eq!(as_ticket.status, 401, "{}", as_ticket.body);
}

#[tokio::test]
async fn id_tokens_are_checked_and_failures_reach_the_page_as_codes() {
    let provider = FakeProvider::start(&[], None).await;
    let app = start_app(Backend::Sqlite, &provider).await;
    let mut browser = Browser::new(&app);
    for (case, extra, code) in [
        (
            "wrong nonce",
            json!({"nonce": "not-this-one"}),
            "invalid_id_token",
        ),
        ("no nonce", json!({"nonce": null}), "invalid_id_token"),
        (
            "another client",
            json!({"aud": "another-client"}),
            "invalid_id_token",
        ),
        (
            "azp of another client",
            json!({"azp": "another-client"}),
            "invalid_id_token",
        ),
        (
            "several audiences without azp",
            json!({"aud": [CLIENT_ID, "another-client"]}),
            "invalid_id_token",
        ),
        (
            "expired",
            json!({"exp": signalbox_server::clock::now_secs() - 120}),
            "invalid_id_token",
        ),
        (
            "unverified e-mail",
            json!({"email_verified": false}),
            "email_unverified",
        ),
    ] {
        let auth = authorize(&mut browser, &provider, &app, extra).await;
        let back = browser
            .get(
                &callback_path(&auth.code, &auth.state),
                Some(&auth.flow_cookie),
            )
            .await;
        assert_eq!(back.status, 303, "{case}: {}", back.body);
        assert_eq!(
            back.location.as_deref(),
            Some(format!("/?signin_error={code}").as_str()),
            "{case}"
        );
        assert!(
            !back.cookies.contains_key("signalbox_oidc_ticket"),
            "{case}"
        );
        assert!(!auth.nonce.is_empty());
    }
    // Several audiences with azp = this client: accepted.
    let auth = authorize(
        &mut browser,
        &provider,
        &app,
        json!({"aud": [CLIENT_ID, "another-client"], "azp": CLIENT_ID}),
    )
    .await;
    let back = browser
        .get(
            &callback_path(&auth.code, &auth.state),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(
        back.location.as_deref(),
        Some("/?signin=oidc"),
        "{}",
        back.body
    );

    // Consent denied at the provider.
    let auth = authorize(&mut browser, &provider, &app, json!({})).await;
    let denied = browser
        .get(
            &format!(
                "/api/auth/oidc/callback?error=access_denied&error_description=nope&state={}",
                auth.state
            ),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(denied.status, 303, "{}", denied.body);
    assert_eq!(
        denied.location.as_deref(),
        Some("/?signin_error=access_denied")
    );
    // A response naming another issuer (RFC 9207).
    let auth = authorize(&mut browser, &provider, &app, json!({})).await;
    let mixed = browser
        .get(
            &format!(
                "{}&iss=https%3A%2F%2Fevil.example.com",
                callback_path(&auth.code, &auth.state)
            ),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(
        mixed.location.as_deref(),
        Some("/?signin_error=provider_error")
    );
    // The token endpoint refuses an unknown code.
    let auth = authorize(&mut browser, &provider, &app, json!({})).await;
    let refused = browser
        .get(
            &callback_path("not-a-code", &auth.state),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(
        refused.location.as_deref(),
        Some("/?signin_error=token_rejected")
    );
    for seen in &browser.seen {
        assert!(!seen.contains(CLIENT_SECRET), "{seen}");
    }
}

#[tokio::test]
async fn provider_outages_are_reported_on_the_page() {
    // The token endpoint is down.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/token", listener.local_addr().unwrap())
    };
    let provider = FakeProvider::start(&[], Some(&closed)).await;
    let app = start_app(Backend::Sqlite, &provider).await;
    let mut browser = Browser::new(&app);
    let auth = authorize(&mut browser, &provider, &app, json!({})).await;
    let back = browser
        .get(
            &callback_path(&auth.code, &auth.state),
            Some(&auth.flow_cookie),
        )
        .await;
    assert_eq!(
        back.location.as_deref(),
        Some("/?signin_error=provider_unavailable"),
        "{}",
        back.body
    );

    // Discovery is unreachable: start sends the browser back to the page with a code.
    let issuer = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer));
        c.oidc_client.client_secret = Some(ClientSecret::new(CLIENT_SECRET));
    })
    .await;
    let mut browser = Browser::new(&app);
    let started = browser.get("/api/auth/oidc/start", None).await;
    assert_eq!(started.status, 303, "{}", started.body);
    assert_eq!(
        started.location.as_deref(),
        Some("/?signin_error=provider_unavailable")
    );
    for seen in &browser.seen {
        assert!(!seen.contains(CLIENT_SECRET), "{seen}");
    }
}

#[tokio::test]
async fn without_a_secret_the_page_runs_the_flow_itself() {
    let provider = FakeProvider::start(&[], None).await;
    let issuer = provider.url.clone();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer));
    })
    .await;
    let (_, config) = app.get("/api/auth/config", None).await;
    assert_eq!(config["oidc"]["flow"], "browser");
    assert_eq!(config["oidc"]["start_url"], Value::Null);
    let mut browser = Browser::new(&app);
    let started = browser.get("/api/auth/oidc/start", None).await;
    assert_eq!(started.status, 404, "{}", started.body);
    assert!(started.body.contains("not_configured"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_cookies_are_secure_and_the_redirect_uri_is_https() {
    let provider = FakeProvider::start(&[], None).await;
    let issuer = provider.url.clone();
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer));
        c.oidc_client.client_secret = Some(ClientSecret::new(CLIENT_SECRET));
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let mut browser = Browser::new(&app);
    let started = browser
        .send(
            browser
                .http
                .get(format!("{}/api/auth/oidc/start", app.url))
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "notify.example.com"),
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let location = reqwest::Url::parse(started.location.as_deref().unwrap()).unwrap();
    let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(
        params["redirect_uri"],
        "https://notify.example.com/api/auth/oidc/callback"
    );
    assert!(
        started.set_cookie.iter().any(|c| c.contains("; Secure")),
        "{:?}",
        started.set_cookie
    );

    // Not from a trusted proxy: the headers are ignored.
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.oidc = Some(oidc_config(&issuer));
        c.oidc_client.client_secret = Some(ClientSecret::new(CLIENT_SECRET));
        c.oidc_client.redirect_url = Some("https://configured.example.com/cb".into());
    })
    .await;
    let mut browser = Browser::new(&app);
    let started = browser
        .send(
            browser
                .http
                .get(format!("{}/api/auth/oidc/start", app.url))
                .header("x-forwarded-proto", "https"),
        )
        .await;
    let location = reqwest::Url::parse(started.location.as_deref().unwrap()).unwrap();
    let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(params["redirect_uri"], "https://configured.example.com/cb");
    assert!(
        !started.set_cookie.iter().any(|c| c.contains("Secure")),
        "{:?}",
        started.set_cookie
    );
}
