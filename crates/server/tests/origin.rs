//! The `Origin` check on hub requests: foreign origins are refused with 403 on negotiate, the
//! WebSocket upgrade and long polling; the service's own origin, the allowed origins and
//! requests without `Origin` pass; `cors.check_origin = false` turns it off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, TestApp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ALLOWED: &str = "https://app.example.com";

async fn negotiate(app: &TestApp, token: &str, origin: Option<&str>) -> u16 {
    let mut request = app.negotiate_request(None, token);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The status of a WebSocket upgrade of a fresh negotiation (101 when it succeeds).
async fn websocket(app: &TestApp, token: &str, origin: Option<&str>) -> u16 {
    let negotiated: serde_json::Value = app
        .negotiate_request(None, token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = negotiated["connectionToken"].as_str().unwrap();
    let mut request = format!("ws://{}/hubs/notifications?id={id}", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("WebSocket failed: {other}"),
    }
}

#[tokio::test]
async fn foreign_origins_are_refused_on_hub_requests() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.cors.allowed_origins = vec![ALLOWED.to_owned()];
    })
    .await;
    app.user("alice", &[]).await;
    let token = app.token("alice").await;
    let own = format!("http://{}", app.addr);

    assert_eq!(negotiate(&app, &token, None).await, 200, "no Origin");
    assert_eq!(negotiate(&app, &token, Some(ALLOWED)).await, 200);
    assert_eq!(negotiate(&app, &token, Some(&own)).await, 200, "own origin");
    assert_eq!(
        negotiate(&app, &token, Some("https://evil.example")).await,
        403
    );
    assert_eq!(negotiate(&app, &token, Some("null")).await, 403);

    assert_eq!(websocket(&app, &token, None).await, 101);
    assert_eq!(websocket(&app, &token, Some(&own)).await, 101);
    assert_eq!(
        websocket(&app, &token, Some("https://evil.example")).await,
        403
    );

    // Long polling (and every other hub request) too.
    let poll = app
        .http
        .get(format!("{}/hubs/notifications?id=unknown", app.url))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 403);
    let body: serde_json::Value = poll.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");

    // The REST API is CORS's business, not this check's.
    let (status, _) = app.get("/health/live", None).await;
    assert_eq!(status, 200);
    let rest = app
        .http
        .get(format!("{}/api/notifications", app.url))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
}

#[tokio::test]
async fn the_origin_check_can_be_turned_off() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.cors.check_origin = false;
    })
    .await;
    app.user("alice", &[]).await;
    let token = app.token("alice").await;
    assert_eq!(
        negotiate(&app, &token, Some("https://evil.example")).await,
        200
    );
    assert_eq!(
        websocket(&app, &token, Some("https://evil.example")).await,
        101
    );
}
