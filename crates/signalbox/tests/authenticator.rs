//! Pluggable authentication: a hub with an application's async authenticator, a hub whose
//! `JwtAuth` follows a remote key set through a rotation, and the `Authenticated` extractor on a
//! plain axum route.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::get;
use futures_util::future::{BoxFuture, FutureExt};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signalbox::auth::{AuthError, AuthRequest, Authenticated, Authenticator, KeySet};
use signalbox::protocol::CompletionOutcome;
use signalbox::{
    Caller, Hub, HubError, HubRouterExt, JwtAuth, Policy, Principal, Protocol, SharedAuthenticator,
};

use common::{Client, http, now, serve};

const RS256_OLD: &[u8] = include_bytes!("keys/rs256-private.pem");
const RS256_NEW: &[u8] = include_bytes!("keys/rs256-rotated-private.pem");

/// Session tokens looked up in a map (as an application would in its database).
struct Sessions {
    users: Mutex<HashMap<String, String>>,
    lookups: AtomicUsize,
}

impl Authenticator for Sessions {
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, AuthError>> {
        async move {
            let token = request.bearer_token().ok_or(AuthError::Missing)?;
            // An await point, as a database lookup would have.
            tokio::task::yield_now().await;
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let user = self
                .users
                .lock()
                .unwrap()
                .get(&token)
                .cloned()
                .ok_or(AuthError::Revoked)?;
            let Value::Object(claims) = json!({ "sub": user }) else {
                unreachable!()
            };
            Ok(Principal::new(claims, "sub"))
        }
        .boxed()
    }
}

fn whoami_hub(auth: impl Authenticator) -> Hub {
    Hub::builder("who")
        .authentication(auth)
        .authorize(Policy::authenticated())
        .method("whoami", |caller: Caller, (): ()| async move {
            Ok::<_, HubError>(caller.user_id().unwrap_or_default().to_owned())
        })
        .build()
}

async fn whoami(addr: std::net::SocketAddr, token: &str) -> String {
    let mut client = Client::connect(addr, "/who", Some(token), Protocol::Json).await;
    match client.invoke("whoami", vec![]).await {
        CompletionOutcome::Result(p) => p.deserialize().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

async fn negotiate(addr: std::net::SocketAddr, token: Option<&str>) -> common::HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http(
        addr,
        "POST",
        "/who/negotiate?negotiateVersion=1",
        &headers,
        b"",
    )
    .await
}

#[tokio::test]
async fn a_hub_with_a_custom_async_authenticator() {
    let sessions = Arc::new(Sessions {
        users: Mutex::new(HashMap::from([(
            "session-1".to_owned(),
            "alice".to_owned(),
        )])),
        lookups: AtomicUsize::new(0),
    });
    let app = Router::new().map_hub("/who", whoami_hub(sessions.clone()));
    let addr = serve(app).await;

    assert_eq!(whoami(addr, "session-1").await, "alice");
    assert!(
        sessions.lookups.load(Ordering::SeqCst) >= 2,
        "negotiate and connect"
    );

    let refused = negotiate(addr, Some("session-2")).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.is_empty());
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let anonymous = negotiate(addr, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));

    // The query parameter is accepted on hub routes.
    let by_query = http(
        addr,
        "POST",
        "/who/negotiate?negotiateVersion=1&access_token=session-1",
        &[],
        b"",
    )
    .await;
    assert_eq!(by_query.status, 200);

    // Ending the session refuses the next connection.
    sessions.users.lock().unwrap().remove("session-1");
    assert_eq!(negotiate(addr, Some("session-1")).await.status, 401);
}

/// A JWKS endpoint whose keys the test replaces.
struct Provider {
    keys: Mutex<Value>,
    fetches: AtomicUsize,
}

async fn jwks(State(provider): State<Arc<Provider>>) -> axum::Json<Value> {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(provider.keys.lock().unwrap().clone())
}

fn jwks_of(pem: &[u8], kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    json!({ "keys": [jwk] })
}

fn rs256(pem: &[u8], kid: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &json!({ "sub": sub, "aud": "signalbox-tests", "exp": now() + 300 }),
        &EncodingKey::from_rsa_pem(pem).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_hub_follows_the_key_rotation_of_its_provider() {
    let provider = Arc::new(Provider {
        keys: Mutex::new(jwks_of(RS256_OLD, "old")),
        fetches: AtomicUsize::new(0),
    });
    let provider_addr = serve(
        Router::new()
            .route("/jwks", get(jwks))
            .with_state(provider.clone()),
    )
    .await;
    let keys = KeySet::jwks(format!("http://{provider_addr}/jwks"))
        // Every unknown kid may refetch, so the test needs no clock.
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let auth = JwtAuth::builder()
        .key_set(keys)
        .audience("signalbox-tests")
        .build()
        .unwrap();
    let addr = serve(Router::new().map_hub("/who", whoami_hub(auth))).await;

    let old = rs256(RS256_OLD, "old", "alice");
    assert_eq!(whoami(addr, &old).await, "alice");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);

    // The provider rotates: the hub is not restarted.
    *provider.keys.lock().unwrap() = jwks_of(RS256_NEW, "new");
    let new = rs256(RS256_NEW, "new", "bob");
    assert_eq!(whoami(addr, &new).await, "bob");
    assert!(provider.fetches.load(Ordering::SeqCst) >= 2);

    let refused = negotiate(addr, Some(&old)).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.is_empty());
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    // A token with the right kid but signed by another key is refused too.
    let forged = rs256(RS256_OLD, "new", "mallory");
    assert_eq!(negotiate(addr, Some(&forged)).await.status, 401);
}

#[derive(Clone)]
struct AppState {
    auth: SharedAuthenticator,
}

impl FromRef<AppState> for SharedAuthenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

async fn me(Authenticated(principal): Authenticated) -> String {
    principal.user_id().unwrap_or_default().to_owned()
}

async fn hello(caller: Option<Authenticated>) -> String {
    match caller {
        Some(Authenticated(principal)) => format!("hello {}", principal.user_id().unwrap_or("?")),
        None => "hello stranger".to_owned(),
    }
}

#[tokio::test]
async fn the_extractor_authenticates_plain_routes_from_the_header_only() {
    let auth = SharedAuthenticator::from(JwtAuth::hs256(common::SECRET).unwrap());
    // The same authenticator serves a hub and the REST routes.
    let app = Router::new()
        .route("/me", get(me))
        .route("/hello", get(hello))
        .with_state(AppState { auth: auth.clone() })
        .map_hub("/who", whoami_hub(auth));
    let addr = serve(app).await;
    let token = common::token(json!({ "sub": "carol" }));
    let bearer = format!("Bearer {token}");

    let ok = http(addr, "GET", "/me", &[("Authorization", &bearer)], b"").await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "carol"));
    assert_eq!(whoami(addr, &token).await, "carol");

    let missing = http(addr, "GET", "/me", &[], b"").await;
    assert_eq!(missing.status, 401);
    assert!(missing.body.is_empty());
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    // Never from the query string on a plain route.
    let by_query = http(addr, "GET", &format!("/me?access_token={token}"), &[], b"").await;
    assert_eq!(by_query.status, 401);
    assert_eq!(by_query.header("www-authenticate"), Some("Bearer"));

    let bad = http(
        addr,
        "GET",
        "/me",
        &[("Authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    // Optional: anonymous is fine, a bad token is still refused.
    let anonymous = http(addr, "GET", "/hello", &[], b"").await;
    assert_eq!(anonymous.text(), "hello stranger");
    let known = http(addr, "GET", "/hello", &[("Authorization", &bearer)], b"").await;
    assert_eq!(known.text(), "hello carol");
    let bad = http(
        addr,
        "GET",
        "/hello",
        &[("Authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(bad.status, 401);
}
