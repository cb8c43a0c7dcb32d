//! Rate limits over real sockets: the per-IP bucket of the sign-in endpoints, the per-account
//! login backoff, the per-IP negotiate bucket, and `X-Forwarded-For` believed only from trusted
//! proxies. Clients bind their own source address (127.0.0.1, 127.0.0.2, …) so that each is a
//! different client to the server. Limits are set small and slow in each test; no test asserts
//! a timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Backend, PASSWORD, TestApp};
use serde_json::{Value, json};
use signalbox_server::config::Config;

/// A client whose connections come from `source`.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Status, `Retry-After` and JSON body of a response.
async fn parts(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let text = response.text().await.unwrap();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn login(
    app: &TestApp,
    client: &reqwest::Client,
    forwarded_for: Option<&str>,
    name: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let mut request = client
        .post(format!("{}/api/auth/login", app.url))
        .json(&json!({"username": name, "password": password}));
    if let Some(forwarded) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded);
    }
    parts(request.send().await.unwrap()).await
}

async fn negotiate(app: &TestApp, client: &reqwest::Client, token: &str) -> (u16, Option<u64>) {
    let response = app
        .negotiate_request(Some(client), token)
        .send()
        .await
        .unwrap();
    let (status, retry_after, _) = parts(response).await;
    (status, retry_after)
}

fn assert_rate_limited((status, retry_after, body): &(u16, Option<u64>, Value)) {
    assert_eq!(*status, 429, "{body}");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After in whole seconds: {retry_after:?}"
    );
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Small sign-in bucket that does not refill during a test, no account backoff.
fn small_auth_bucket(config: &mut Config) {
    config.rate_limit.auth_burst = 3;
    config.rate_limit.auth_per_second = 1.0 / 3600.0;
    config.rate_limit.login_failures = 0;
    config.auth.registration = true;
}

#[tokio::test]
async fn sign_in_endpoints_share_a_per_ip_bucket() {
    let app = TestApp::start_with(Backend::Sqlite, small_auth_bucket).await;
    app.user("alice", &[]).await;
    let first = client_from("127.0.0.1");

    for _ in 0..3 {
        let (status, _, body) = login(&app, &first, None, "alice", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
    }
    let refused = login(&app, &first, None, "alice", PASSWORD).await;
    assert_rate_limited(&refused);

    // The same bucket covers register and refresh.
    let register = first
        .post(format!("{}/api/auth/register", app.url))
        .json(&json!({"username": "mallory", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_rate_limited(&parts(register).await);
    let refresh = first
        .post(format!("{}/api/auth/refresh", app.url))
        .json(&json!({"refresh_token": "whatever"}))
        .send()
        .await
        .unwrap();
    assert_rate_limited(&parts(refresh).await);

    // Another address is unaffected; so are routes outside the sign-in group.
    let second = client_from("127.0.0.2");
    let (status, _, body) = login(&app, &second, None, "alice", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let list = first
        .get(format!("{}/api/notifications", app.url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);

    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("signalbox_rate_limited_total{endpoint=\"login\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_success_resets() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        // The per-IP limit is out of the way: only the account backoff is exercised.
        config.rate_limit.auth_burst = 1000;
        config.rate_limit.auth_per_second = 1000.0;
        config.rate_limit.login_failures = 3;
        // Long enough that the refusals below are seen on a loaded machine; the end of the
        // backoff is polled for, not slept through.
        config.rate_limit.login_backoff = Duration::from_secs(1);
        config.rate_limit.login_backoff_max = Duration::from_secs(2);
    })
    .await;
    app.user("alice", &[]).await;
    app.user("bob", &[]).await;
    let client = client_from("127.0.0.1");

    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        assert_eq!(login(&app, &client, None, "alice", "wrong").await.0, 401);
    }
    assert_eq!(login(&app, &client, None, "alice", PASSWORD).await.0, 200);

    // Three failures: the account backs off, even for the right password.
    for _ in 0..3 {
        assert_eq!(login(&app, &client, None, "alice", "wrong").await.0, 401);
    }
    let refused = login(&app, &client, None, "alice", PASSWORD).await;
    assert_rate_limited(&refused);
    assert!(
        refused.2["message"]
            .as_str()
            .unwrap()
            .contains("failed logins"),
        "{}",
        refused.2
    );
    // Case variants of the name are the same account to the backoff.
    assert_eq!(login(&app, &client, None, "ALICE", PASSWORD).await.0, 429);

    // Names no account can have are not tracked (nor kept in memory).
    for _ in 0..5 {
        assert_eq!(
            login(&app, &client, None, "not a valid name", "wrong")
                .await
                .0,
            401
        );
    }

    // Another account from the same address is governed by the per-IP limit only.
    assert_eq!(login(&app, &client, None, "bob", PASSWORD).await.0, 200);

    // When the backoff has passed, the right password works and resets the count.
    let status = common::eventually_some("the login backoff to pass", || async {
        let status = login(&app, &client, None, "alice", PASSWORD).await.0;
        (status != 429).then_some(status)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(login(&app, &client, None, "alice", "wrong").await.0, 401);
    assert_eq!(login(&app, &client, None, "alice", PASSWORD).await.0, 200);

    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("signalbox_rate_limited_total{endpoint=\"login_account\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn negotiate_is_limited_per_ip() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.rate_limit.negotiate_burst = 2;
        config.rate_limit.negotiate_per_second = 1.0 / 3600.0;
    })
    .await;
    app.user("alice", &[]).await;
    let token = app.token("alice").await;
    let first = client_from("127.0.0.1");
    for _ in 0..2 {
        assert_eq!(negotiate(&app, &first, &token).await.0, 200);
    }
    let (status, retry_after) = negotiate(&app, &first, &token).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // Another client is unaffected.
    let second = client_from("127.0.0.2");
    assert_eq!(negotiate(&app, &second, &token).await.0, 200);
    // Sign-in is a separate bucket.
    assert_eq!(login(&app, &first, None, "alice", PASSWORD).await.0, 200);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        small_auth_bucket(config);
        config.rate_limit.auth_burst = 1;
        config.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    app.user("alice", &[]).await;

    // Not a proxy: the header is ignored, every request counts against the peer.
    let direct = client_from("127.0.0.1");
    let spoofed = login(&app, &direct, Some("203.0.113.1"), "alice", PASSWORD).await;
    assert_eq!(spoofed.0, 200, "{}", spoofed.2);
    let spoofed = login(&app, &direct, Some("203.0.113.2"), "alice", PASSWORD).await;
    assert_rate_limited(&spoofed);

    // The trusted proxy: each forwarded client has its own bucket, the proxy none of its own.
    let proxy = client_from("127.0.0.2");
    assert_eq!(
        login(&app, &proxy, Some("203.0.113.1"), "alice", PASSWORD)
            .await
            .0,
        200
    );
    assert_rate_limited(&login(&app, &proxy, Some("203.0.113.1"), "alice", PASSWORD).await);
    // A client cannot escape by prepending an address: the proxy appends the real one.
    assert_rate_limited(
        &login(
            &app,
            &proxy,
            Some("198.51.100.9, 203.0.113.1"),
            "alice",
            PASSWORD,
        )
        .await,
    );
    assert_eq!(
        login(&app, &proxy, Some("203.0.113.3"), "alice", PASSWORD)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        small_auth_bucket(config);
        config.rate_limit.enabled = false;
    })
    .await;
    app.user("alice", &[]).await;
    let client = client_from("127.0.0.1");
    for _ in 0..6 {
        assert_eq!(login(&app, &client, None, "alice", PASSWORD).await.0, 200);
    }
}
