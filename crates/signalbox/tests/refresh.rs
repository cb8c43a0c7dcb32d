//! Authentication refresh (ASP.NET Core 11): `tokenLifetimeSeconds` in negotiate, `POST
//! {hub}/refresh?id={token}` and its error codes, the new principal seen by later invocations and
//! policies, close at the new expiry, and a refresh landing on a node that does not hold the
//! connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use common::{Client, HttpResponse, SECRET, http, now, serve, token, ws_connect};
use serde_json::{Value, json};
use signalbox::lifetime::{MemoryBus, ScaledOptions};
use signalbox::protocol::{CompletionOutcome, HubMessage, Payload, Protocol};
use signalbox::{
    Caller, ConnectionOptions, Hub, HubError, HubLifetimeManager, HubRouterExt, JwtAuth, Policy,
    ScaledLifetimeManager,
};

fn hub(options: ConnectionOptions, lifetime: Option<Arc<dyn HubLifetimeManager>>) -> Hub {
    let mut builder = Hub::builder("refresh")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .authorize(Policy::require_claim_value("scope", ["hub"]))
        .connection_options(options)
        .method("Claim", |c: Caller, (name,): (String,)| async move {
            Ok::<_, HubError>(c.principal().and_then(|p| p.claim(&name).cloned()))
        })
        .method("Gated", |_c: Caller, ()| async move {
            Ok::<_, HubError>("granted")
        })
        .method_policy("Gated", Policy::require_claim_value("level", ["2"]));
    if let Some(lifetime) = lifetime {
        builder = builder.lifetime_manager(lifetime);
    }
    builder.build()
}

fn enabled() -> ConnectionOptions {
    ConnectionOptions::default().enable_authentication_refresh(true)
}

async fn server(options: ConnectionOptions) -> SocketAddr {
    serve(Router::new().map_hub("/hub", hub(options, None))).await
}

/// A token of the hub's scope for `sub`, with more claims.
fn user_token(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "scope": "hub"});
    let Value::Object(extra) = extra else {
        panic!("extra claims must be an object")
    };
    for (k, v) in extra {
        claims[k] = v;
    }
    token(claims)
}

async fn negotiate(addr: SocketAddr, bearer: &str, query: &str) -> HttpResponse {
    let auth = format!("Bearer {bearer}");
    http(
        addr,
        "POST",
        &format!("/hub/negotiate{query}"),
        &[("Authorization", &auth)],
        b"",
    )
    .await
}

/// Negotiates on `negotiate_on`, connects a WebSocket to `connect_to`; returns the client and its
/// connection token.
async fn connect_across(
    negotiate_on: SocketAddr,
    connect_to: SocketAddr,
    bearer: &str,
) -> (Client, String) {
    let response = negotiate(negotiate_on, bearer, "?negotiateVersion=1").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let connection_token = response.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = ws_connect(
        connect_to,
        &format!("/hub?id={connection_token}"),
        Some(bearer),
    )
    .await
    .unwrap();
    let mut client = Client::raw(ws, Protocol::Json);
    client.handshake(1).await.unwrap();
    (client, connection_token)
}

async fn connect(addr: SocketAddr, bearer: &str) -> (Client, String) {
    connect_across(addr, addr, bearer).await
}

async fn refresh(addr: SocketAddr, connection_token: &str, bearer: Option<&str>) -> HttpResponse {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(
        addr,
        "POST",
        &format!("/hub/refresh?id={connection_token}"),
        &headers,
        b"",
    )
    .await
}

fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{code}: {}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), json!({ "error": code }));
}

async fn claim(client: &mut Client, name: &str) -> Value {
    match client
        .invoke("Claim", vec![Payload::new(name.to_owned())])
        .await
    {
        CompletionOutcome::Result(p) => p.deserialize().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

async fn gated(client: &mut Client) -> bool {
    match client.invoke("Gated", vec![]).await {
        CompletionOutcome::Result(_) => true,
        CompletionOutcome::Error(e) => {
            assert_eq!(e, "Failed to invoke 'Gated' because user is unauthorized");
            false
        }
        CompletionOutcome::Void => panic!("Gated returns a value"),
    }
}

#[tokio::test]
async fn negotiate_carries_the_token_lifetime_only_when_refresh_is_enabled() {
    let bearer = user_token("alice", json!({"exp": now() + 300}));
    let on = server(enabled()).await;
    let body = negotiate(on, &bearer, "?negotiateVersion=1").await.json();
    let lifetime = body["tokenLifetimeSeconds"].as_u64().unwrap();
    assert!((295..=300).contains(&lifetime), "{lifetime}");
    let off = server(ConnectionOptions::default()).await;
    let body = negotiate(off, &bearer, "?negotiateVersion=1").await.json();
    assert!(body.get("tokenLifetimeSeconds").is_none(), "{body}");
    assert!(body.get("connectionToken").is_some());
}

#[tokio::test]
async fn every_error_code() {
    let off = server(ConnectionOptions::default()).await;
    let alice = user_token("alice", json!({"v": 1}));
    let (_c, off_token) = connect(off, &alice).await;
    assert_error(
        &refresh(off, &off_token, Some(&alice)).await,
        404,
        "refresh_disabled",
    );

    let addr = server(enabled()).await;
    let (mut client, connection_token) = connect(addr, &alice).await;
    let missing = http(
        addr,
        "POST",
        "/hub/refresh",
        &[("Authorization", &format!("Bearer {alice}"))],
        b"",
    )
    .await;
    assert_error(&missing, 400, "missing_connection_token");
    assert_error(
        &refresh(addr, "no-such-connection", Some(&alice)).await,
        404,
        "connection_not_found",
    );
    // Negotiate version 0: the token is the public connection id.
    let v0 = negotiate(addr, &alice, "").await.json();
    let v0_id = v0["connectionId"].as_str().unwrap();
    assert!(v0.get("connectionToken").is_none());
    assert_error(
        &refresh(addr, v0_id, Some(&alice)).await,
        400,
        "unsupported_negotiate_version",
    );
    assert_error(
        &refresh(addr, &connection_token, None).await,
        401,
        "invalid_token",
    );
    assert_error(
        &refresh(addr, &connection_token, Some("not-a-jwt")).await,
        401,
        "invalid_token",
    );
    let expired = user_token("alice", json!({"exp": now() - 3600}));
    assert_error(
        &refresh(addr, &connection_token, Some(&expired)).await,
        401,
        "invalid_token",
    );
    // The token must come in the Authorization header, not the query.
    let in_query = http(
        addr,
        "POST",
        &format!("/hub/refresh?id={connection_token}&access_token={alice}"),
        &[],
        b"",
    )
    .await;
    assert_error(&in_query, 401, "invalid_token");
    // Another user's token, or one the hub's policy refuses: the principal stays.
    let mallory = user_token("mallory", json!({"v": 2}));
    assert_error(
        &refresh(addr, &connection_token, Some(&mallory)).await,
        403,
        "permission_change_rejected",
    );
    let unscoped = token(json!({"sub": "alice", "v": 3}));
    assert_error(
        &refresh(addr, &connection_token, Some(&unscoped)).await,
        403,
        "permission_change_rejected",
    );
    assert_eq!(claim(&mut client, "v").await, json!(1));
    assert_eq!(claim(&mut client, "sub").await, json!("alice"));

    // Other methods: 405.
    for method in ["GET", "PUT", "DELETE"] {
        let response = http(
            addr,
            method,
            &format!("/hub/refresh?id={connection_token}"),
            &[("Authorization", &format!("Bearer {alice}"))],
            b"",
        )
        .await;
        assert_eq!(response.status, 405, "{method}");
    }

    // And a refresh that works, answered with the new token's lifetime.
    let renewed = user_token("alice", json!({"v": 4, "exp": now() + 600}));
    let ok = refresh(addr, &connection_token, Some(&renewed)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("content-type"), Some("application/json"));
    let lifetime = ok.json()["tokenLifetimeSeconds"].as_u64().unwrap();
    assert!((595..=600).contains(&lifetime), "{lifetime}");
    assert_eq!(claim(&mut client, "v").await, json!(4));
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token_and_closes_at_the_new_expiry() {
    let addr = server(enabled().close_on_authentication_expiration(true)).await;
    let first_expiry = now() + 2;
    let first = user_token("alice", json!({"v": 1, "level": "1", "exp": first_expiry}));
    let (mut client, connection_token) = connect(addr, &first).await;
    assert!(!gated(&mut client).await);

    let second = user_token("alice", json!({"v": 2, "level": "2", "exp": now() + 6}));
    let refreshed_at = Instant::now();
    let response = refresh(addr, &connection_token, Some(&second)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let lifetime = response.json()["tokenLifetimeSeconds"].as_u64().unwrap();
    assert!((4..=6).contains(&lifetime), "{lifetime}");

    // Kept: nothing happens at the first token's expiry, and that absence is under test; wait
    // until just past it on the wall clock the token is checked against.
    let expired_at = UNIX_EPOCH + Duration::from_secs(first_expiry) + Duration::from_millis(250);
    if let Ok(left) = expired_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(claim(&mut client, "v").await, json!(2));
    assert!(
        gated(&mut client).await,
        "the method policy sees the new principal"
    );

    // Then closed at the new expiry, with allowReconnect.
    match client.recv_non_ping().await {
        Some(HubMessage::Close(close)) => {
            assert_eq!(close.error, None);
            assert!(close.allow_reconnect);
        }
        other => panic!("expected a Close, got {other:?}"),
    }
    let after = refreshed_at.elapsed();
    assert!(
        after >= Duration::from_millis(4500),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_refresh_reaching_another_node_is_forwarded_to_the_owner() {
    let bus = MemoryBus::new();
    let options = enabled()
        .connection_token_secret(Arc::from(&b"a connection token secret shared by nodes"[..]));
    let scaled = || -> Arc<dyn HubLifetimeManager> {
        Arc::new(ScaledLifetimeManager::with_options(
            bus.backplane(),
            "refresh",
            ScaledOptions::default().ack_timeout(Duration::from_millis(500)),
        ))
    };
    let a = serve(Router::new().map_hub("/hub", hub(options.clone(), Some(scaled())))).await;
    let b = serve(Router::new().map_hub("/hub", hub(options, Some(scaled())))).await;

    // Negotiated on A, running on B; the refresh goes to A, then B.
    let alice = user_token("alice", json!({"v": 1}));
    let (mut client, connection_token) = connect_across(a, b, &alice).await;
    assert_eq!(claim(&mut client, "v").await, json!(1));
    let renewed = user_token("alice", json!({"v": 2, "exp": now() + 600}));
    let response = refresh(a, &connection_token, Some(&renewed)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let lifetime = response.json()["tokenLifetimeSeconds"].as_u64().unwrap();
    assert!((595..=600).contains(&lifetime), "{lifetime}");
    assert_eq!(claim(&mut client, "v").await, json!(2));

    // The owner refuses another user.
    let mallory = user_token("mallory", json!({"v": 3}));
    assert_error(
        &refresh(a, &connection_token, Some(&mallory)).await,
        403,
        "permission_change_rejected",
    );
    assert_eq!(claim(&mut client, "v").await, json!(2));

    // Negotiated on A, running nowhere: nobody answers.
    let orphan = negotiate(a, &alice, "?negotiateVersion=1").await.json();
    let orphan = orphan["connectionToken"].as_str().unwrap();
    assert_error(
        &refresh(b, orphan, Some(&alice)).await,
        404,
        "connection_not_found",
    );
}
