//! First run with zero configuration: the data directory's generated signing secret (created
//! 0600, reused by the server and `signalbox token issue`, an explicit secret wins,
//! `require_config` refuses), the one-time setup link (single use, expiry, concurrent submits,
//! wrong input keeps it usable) and the admin dashboard's account, registration and notification
//! API. The storage tests run on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::{Backend, PASSWORD, SECRET, TestApp};
use serde_json::{Value, json};
use signalbox_server::auth::accounts::NewUser;
use signalbox_server::auth::refresh::hash_token;
use signalbox_server::auth::tokens::TokenService;
use signalbox_server::clock::now_ms;
use signalbox_server::config::{Config, SigningAlgorithm};
use signalbox_server::data_dir::{self, DataDirError, SECRET_FILE, SecretSource};
use signalbox_server::setup::{LinkStatus, SetupLinks};

on_both_backends!(
    setup_link_creates_one_signed_in_admin,
    expired_and_unknown_links_are_refused,
    bad_input_keeps_the_link_usable,
    concurrent_submits_create_exactly_one_admin,
    no_link_once_an_admin_exists,
    admin_adds_users_toggles_registration_and_notifies,
);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "signalbox-first-run-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn links(app: &TestApp) -> SetupLinks {
    SetupLinks::for_config(app.state.db.clone(), &app.state.config)
}

async fn issue(app: &TestApp) -> String {
    links(app).issue().await.unwrap().expect("setup is needed")
}

async fn status(app: &TestApp, token: &str) -> String {
    let (code, body) = app
        .post("/api/setup/status", None, json!({"token": token}))
        .await;
    assert_eq!(code, 200, "{body}");
    body["status"].as_str().unwrap().to_owned()
}

async fn submit(app: &TestApp, token: &str, name: &str, password: &str) -> (u16, Value) {
    app.post(
        "/api/setup",
        None,
        json!({"token": token, "username": name, "password": password}),
    )
    .await
}

async fn admins(app: &TestApp) -> usize {
    let mut count = 0;
    for name in app.state.db.user_names().await.unwrap() {
        let user = app.state.db.user(&name).await.unwrap().unwrap();
        if user.roles.iter().any(|r| r == "admin") {
            count += 1;
        }
    }
    count
}

// ------------------------------------------------------------------ the data directory's secret

#[test]
fn the_generated_secret_is_private_reused_and_loses_to_an_explicit_one() {
    let dir = temp_dir("secret").join("signalbox-data");
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    assert!(config.auth.jwt_secret.is_none());
    let source = data_dir::resolve_secret(&mut config).unwrap();
    let path = dir.join(SECRET_FILE);
    assert_eq!(source, SecretSource::Created(path.clone()));
    let secret = config.auth.jwt_secret.clone().unwrap();
    assert!(secret.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    // Every later run with the same data directory gets the same secret.
    let mut again = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    assert_eq!(
        data_dir::resolve_secret(&mut again).unwrap(),
        SecretSource::Loaded(path.clone())
    );
    assert_eq!(again.auth.jwt_secret.as_deref(), Some(secret.as_str()));

    // An explicit secret wins (the file is not touched), and so does a private key.
    let mut explicit = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    explicit.auth.jwt_secret = Some(SECRET.to_owned());
    assert_eq!(
        data_dir::resolve_secret(&mut explicit).unwrap(),
        SecretSource::Configured
    );
    assert_eq!(explicit.auth.jwt_secret.as_deref(), Some(SECRET));
    let mut keyed = Config {
        data_dir: temp_dir("keyed"),
        ..Config::default()
    };
    keyed.auth.jwt_algorithm = SigningAlgorithm::ES256;
    assert_eq!(
        data_dir::resolve_secret(&mut keyed).unwrap(),
        SecretSource::Configured
    );
    assert!(keyed.auth.jwt_secret.is_none());
    assert!(!keyed.data_dir.join(SECRET_FILE).exists());

    // require_config refuses to fall back on the file, even when it exists.
    let mut strict = Config {
        data_dir: dir.clone(),
        require_config: true,
        ..Config::default()
    };
    let error = data_dir::resolve_secret(&mut strict).unwrap_err();
    assert!(matches!(error, DataDirError::RequireConfig), "{error}");
    assert!(
        error.to_string().contains("SIGNALBOX_JWT_SECRET"),
        "{error}"
    );
    assert!(strict.auth.jwt_secret.is_none());
    let mut strict_explicit = strict.clone();
    strict_explicit.auth.jwt_secret = Some(SECRET.to_owned());
    assert_eq!(
        data_dir::resolve_secret(&mut strict_explicit).unwrap(),
        SecretSource::Configured
    );

    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    let _ = std::fs::remove_dir_all(&keyed.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_signs_for_the_server_with_no_configuration() {
    let cwd = temp_dir("cli");
    let data_dir = cwd.join("signalbox-data");
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.auth.jwt_secret = None;
        config.data_dir = data_dir.clone();
        data_dir::resolve_secret(config).unwrap();
    })
    .await;
    app.user("alice", &[]).await;

    // `signalbox token issue` in the same directory, with an empty environment.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["token", "issue", "--sub", "alice"])
        .env_clear()
        .current_dir(&cwd)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, body) = app.get("/api/notifications", Some(&token)).await;
    assert_eq!(status, 200, "{body}");

    // Another data directory means another secret: refused.
    let elsewhere = temp_dir("cli-elsewhere");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["token", "issue", "--sub", "alice"])
        .env_clear()
        .current_dir(&elsewhere)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let foreign = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, _) = app.get("/api/notifications", Some(&foreign)).await;
    assert_eq!(status, 401);

    // --require-config refuses without an explicit secret, and says how to fix it.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["--require-config", "token", "issue", "--sub", "alice"])
        .env_clear()
        .current_dir(&cwd)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SIGNALBOX_JWT_SECRET"), "{stderr}");

    // A token signed in-process with the file's secret is the same thing.
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    data_dir::resolve_secret(&mut config).unwrap();
    let issued = TokenService::new(&config.auth)
        .unwrap()
        .issue("alice", &serde_json::Map::new(), None)
        .unwrap();
    let (status, _) = app.get("/api/notifications", Some(&issued.token)).await;
    assert_eq!(status, 200);

    drop(app);
    let _ = std::fs::remove_dir_all(cwd);
    let _ = std::fs::remove_dir_all(elsewhere);
}

// ------------------------------------------------------------------ the setup link

async fn setup_link_creates_one_signed_in_admin(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = issue(&app).await;
    assert_eq!(status(&app, &token).await, "ready");

    let (code, tokens) = submit(&app, &token, "root", PASSWORD).await;
    assert_eq!(code, 201, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("sbr_")
    );
    let access = tokens["access_token"].as_str().unwrap();

    // An administrator who may send notifications, signed in with a real session.
    let (code, body) = app.get("/api/admin/stats", Some(access)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = app
        .post(
            "/api/notifications",
            Some(access),
            json!({"user": "root", "message": "hello me"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, refreshed) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(code, 200, "{refreshed}");
    let (code, _) = app.login("root", PASSWORD).await;
    assert_eq!(code, 200);
    let root = app.state.db.user("root").await.unwrap().unwrap();
    assert_eq!(root.roles, vec!["admin"]);
    assert_eq!(root.claims["permission"], vec!["notify"]);

    // The link works once.
    assert_eq!(status(&app, &token).await, "complete");
    let (code, body) = submit(&app, &token, "root2", PASSWORD).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "setup_complete");
    assert_eq!(admins(&app).await, 1);
    assert!(app.state.db.user("root2").await.unwrap().is_none());
}

async fn expired_and_unknown_links_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    // An expired link, as an hour-old start would have left it.
    let expired = "an-expired-setup-token-0123456789";
    let now = now_ms();
    app.state
        .db
        .insert_setup_token(&hash_token(expired), now - 7_200_000, now - 3_600_000)
        .await
        .unwrap();
    assert_eq!(status(&app, expired).await, "expired");
    let (code, body) = submit(&app, expired, "root", PASSWORD).await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["error"], "link_expired");

    let (code, body) = submit(&app, "not-a-token-anyone-issued", "root", PASSWORD).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"], "invalid_link");
    assert_eq!(status(&app, "").await, "invalid");
    assert_eq!(admins(&app).await, 0);

    // A fresh link still works (issuing purges the expired rows).
    let token = issue(&app).await;
    let (code, body) = submit(&app, &token, "root", PASSWORD).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        links(&app).status(expired).await.unwrap(),
        LinkStatus::Complete
    );
}

async fn bad_input_keeps_the_link_usable(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.user("bob", &[]).await;
    let token = issue(&app).await;
    let (code, body) = submit(&app, &token, "root", "short").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = submit(&app, &token, "has space", PASSWORD).await;
    assert_eq!(code, 400, "{body}");
    // A taken name: nothing changes, bob stays a plain user.
    let (code, body) = submit(&app, &token, "bob", PASSWORD).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    assert!(
        app.state
            .db
            .user("bob")
            .await
            .unwrap()
            .unwrap()
            .roles
            .is_empty()
    );
    assert_eq!(status(&app, &token).await, "ready");
    let (code, body) = submit(&app, &token, "root", PASSWORD).await;
    assert_eq!(code, 201, "{body}");
}

async fn concurrent_submits_create_exactly_one_admin(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = issue(&app).await;
    let second = issue(&app).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = app.url.clone();
        let http = app.http.clone();
        // Six submits of one link and two of another, all at once.
        let token = if i < 6 { token.clone() } else { second.clone() };
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(format!("{url}/api/setup"))
                .json(
                    &json!({"token": token, "username": format!("admin{i}"), "password": PASSWORD}),
                )
                .send()
                .await
                .unwrap();
            let code = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (code, body)
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (code, body) = task.await.unwrap();
        match code {
            201 => created += 1,
            409 => assert_eq!(body["error"], "setup_complete", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(admins(&app).await, 1);
    assert_eq!(app.state.db.user_names().await.unwrap().len(), 1);
}

async fn no_link_once_an_admin_exists(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = issue(&app).await;
    // An administrator made another way (`signalbox user add --role admin`).
    app.state
        .accounts
        .create(NewUser {
            name: "ops".to_owned(),
            password: Some(PASSWORD.to_owned()),
            roles: vec!["viewer".to_owned(), "admin".to_owned()],
            claims: Default::default(),
        })
        .await
        .unwrap();
    assert!(links(&app).issue().await.unwrap().is_none());
    assert_eq!(status(&app, &token).await, "complete");
    let (code, _) = submit(&app, &token, "root", PASSWORD).await;
    assert_eq!(code, 409);

    // A disabled administrator does not count: setup is offered again.
    assert!(
        app.state
            .db
            .set_user_disabled("ops", true, now_ms())
            .await
            .unwrap()
    );
    let token = issue(&app).await;
    let (code, body) = submit(&app, &token, "root", PASSWORD).await;
    assert_eq!(code, 201, "{body}");
    assert!(links(&app).issue().await.unwrap().is_none());
}

// ------------------------------------------------------------------ the dashboard's API

async fn admin_adds_users_toggles_registration_and_notifies(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = issue(&app).await;
    let (_, tokens) = submit(&app, &token, "root", PASSWORD).await;
    let root = tokens["access_token"].as_str().unwrap().to_owned();

    // Add users, one with the notify permission.
    let (code, body) = app
        .post(
            "/api/admin/users",
            Some(&root),
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["can_notify"], false);
    let (code, _) = app
        .post(
            "/api/admin/users",
            Some(&root),
            json!({"username": "svc", "password": PASSWORD, "notify": true}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = app
        .post(
            "/api/admin/users",
            Some(&root),
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 409);
    let (code, _) = app
        .post(
            "/api/admin/users",
            Some(&root),
            json!({"username": "weak", "password": "short"}),
        )
        .await;
    assert_eq!(code, 400);
    let (code, users) = app.get("/api/admin/users", Some(&root)).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "root", "svc"]);
    assert_eq!(users[2]["can_notify"], true);
    assert_eq!(users[1]["roles"], json!(["admin"]));
    let (code, alice) = app.login("alice", PASSWORD).await;
    assert_eq!(code, 200);
    let alice = alice["access_token"].as_str().unwrap().to_owned();
    let (code, svc) = app.login("svc", PASSWORD).await;
    assert_eq!(code, 200);
    let (code, _) = app
        .post(
            "/api/notifications",
            svc["access_token"].as_str(),
            json!({"user": "alice", "message": "from svc"}),
        )
        .await;
    assert_eq!(code, 201);

    // Not for everyone.
    for path in ["/api/admin/users", "/api/admin/registration"] {
        let (code, _) = app.get(path, Some(&alice)).await;
        assert_eq!(code, 403, "{path}");
        let (code, _) = app.get(path, None).await;
        assert_eq!(code, 401, "{path}");
    }
    let (code, _) = app
        .post(
            "/api/admin/notifications",
            Some(&alice),
            json!({"user": "alice", "message": "x"}),
        )
        .await;
    assert_eq!(code, 403);

    // Registration: closed by the configuration, opened and closed from the dashboard.
    let register = |name: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/api/auth/register",
                None,
                json!({"username": name, "password": PASSWORD}),
            )
            .await
            .0
        }
    };
    let (_, state) = app.get("/api/admin/registration", Some(&root)).await;
    assert_eq!(
        state,
        json!({"enabled": false, "source": "configuration", "configured": false})
    );
    assert_eq!(register("carol").await, 403);
    let put = |enabled: Value| {
        let http = app.http.clone();
        let url = format!("{}/api/admin/registration", app.url);
        let root = root.clone();
        async move {
            let response = http
                .put(url)
                .bearer_auth(root)
                .json(&json!({ "enabled": enabled }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let state = put(json!(true)).await;
    assert_eq!(state["enabled"], true);
    assert_eq!(state["source"], "dashboard");
    assert_eq!(register("carol").await, 201);

    // A live notification from the dashboard, to alice and (by default) to the admin.
    let mut tab = app.connect(&alice).await;
    let (code, sent) = app
        .post(
            "/api/admin/notifications",
            Some(&root),
            json!({"user": "alice", "message": "test from the dashboard"}),
        )
        .await;
    assert_eq!(code, 201, "{sent}");
    assert_eq!(sent["user"], "alice");
    // (The unread "from svc" may be replayed first.)
    let mut args = tab.expect("Notification").await;
    if args[0]["message"] == "from svc" {
        args = tab.expect("Notification").await;
    }
    assert_eq!(args[0]["message"], "test from the dashboard");
    assert_eq!(args[0]["from"], "root");
    assert_eq!(args[0]["id"], sent["id"]);
    tab.close().await;
    let (code, sent) = app
        .post(
            "/api/admin/notifications",
            Some(&root),
            json!({"message": "to myself"}),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(sent["user"], "root");
    let (_, inbox) = app.get("/api/notifications", Some(&root)).await;
    assert!(
        inbox
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["message"] == "to myself")
    );
    let (code, _) = app
        .post(
            "/api/admin/notifications",
            Some(&root),
            json!({"user": "nobody", "message": "x"}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = app
        .post(
            "/api/admin/notifications",
            Some(&root),
            json!({"user": "alice", "message": "  "}),
        )
        .await;
    assert_eq!(code, 400);

    // The switch survives a restart; closing it closes registration; null hands it back.
    let config = app.state.config.as_ref().clone();
    let db = app.stop().await;
    let app = TestApp::start_on(db, config).await;
    let (code, again) = app.login("root", PASSWORD).await;
    assert_eq!(code, 200);
    let root = again["access_token"].as_str().unwrap().to_owned();
    let (_, state) = app.get("/api/admin/registration", Some(&root)).await;
    assert_eq!(state["enabled"], true);
    assert_eq!(
        app.post(
            "/api/auth/register",
            None,
            json!({"username": "dave", "password": PASSWORD})
        )
        .await
        .0,
        201
    );
    let set = |enabled: Value| {
        let http = app.http.clone();
        let url = format!("{}/api/admin/registration", app.url);
        let root = root.clone();
        async move {
            http.put(url)
                .bearer_auth(root)
                .json(&json!({ "enabled": enabled }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(set(json!(false)).await["enabled"], false);
    let register_erin = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "erin", "password": PASSWORD}),
        )
        .await
        .0;
    assert_eq!(register_erin, 403);
    let state = set(Value::Null).await;
    assert_eq!(
        state,
        json!({"enabled": false, "source": "configuration", "configured": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_decides_until_the_dashboard_does() {
    let app = TestApp::start_with(Backend::Sqlite, |config| config.auth.registration = true).await;
    app.state
        .accounts
        .create(NewUser {
            name: "root".to_owned(),
            password: Some(PASSWORD.to_owned()),
            roles: vec!["admin".to_owned()],
            claims: Default::default(),
        })
        .await
        .unwrap();
    let root = app.token("root").await;
    let (_, state) = app.get("/api/admin/registration", Some(&root)).await;
    assert_eq!(
        state,
        json!({"enabled": true, "source": "configuration", "configured": true})
    );
    let (code, _) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "frank", "password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 201);
    let response = app
        .http
        .put(format!("{}/api/admin/registration", app.url))
        .bearer_auth(&root)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (code, _) = app
        .post(
            "/api/auth/register",
            None,
            json!({"username": "gina", "password": PASSWORD}),
        )
        .await;
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_page_is_served_with_a_strict_policy() {
    let app = TestApp::start(Backend::Sqlite).await;
    for (path, kind, needle) in [
        ("/setup", "text/html", "setup-form"),
        ("/setup/setup.js", "text/javascript", "/api/setup"),
        ("/setup/setup.css", "text/css", ".card"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        if path == "/setup" {
            let csp = headers["content-security-policy"].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert_eq!(headers["referrer-policy"], "no-referrer");
            assert_eq!(headers["cache-control"], "no-store");
        }
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
}
