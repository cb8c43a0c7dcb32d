//! A chat server: an authenticated hub with a send method, groups, direct messages to users, a
//! method gated by a claim policy, and an HTTP endpoint that broadcasts through a `HubContext`.
//!
//! Run: `cargo run -p signalbox --example chat -- --listen 127.0.0.1:5000`
//! Get a token: `curl 'http://127.0.0.1:5000/token?user=alice'`
//! The JWT secret comes from `CHAT_JWT_SECRET`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::Value;
use signalbox::{Caller, Hub, HubContext, HubError, HubRouterExt, JwtAuth, Policy};

const DEFAULT_SECRET: &str = "signalbox-chat-example-development-secret-change-me";

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// HS256 secret for the tokens (at least 32 bytes).
    #[arg(long, env = "CHAT_JWT_SECRET", default_value = DEFAULT_SECRET, hide_env_values = true)]
    jwt_secret: String,
}

#[derive(Clone)]
struct AppState {
    auth: JwtAuth,
    secret: String,
    chat: HubContext,
}

fn user(caller: &Caller) -> String {
    caller.user_id().unwrap_or("anonymous").to_owned()
}

fn chat_hub(auth: JwtAuth) -> Hub {
    Hub::builder("chat")
        .authentication(auth)
        .authorize(Policy::authenticated())
        .method("Echo", |_caller: Caller, (value,): (Value,)| async move {
            Ok::<_, HubError>(value)
        })
        .method("WhoAmI", |caller: Caller, ()| async move { Ok::<_, HubError>(user(&caller)) })
        .method("GetConnectionId", |caller: Caller, ()| async move {
            Ok::<_, HubError>(caller.connection_id().to_owned())
        })
        .method("Send", |caller: Caller, (message,): (String,)| async move {
            caller.clients().all().send("ReceiveMessage", (user(&caller), message)).await?;
            Ok::<_, HubError>(())
        })
        .method("SendToOthers", |caller: Caller, (message,): (String,)| async move {
            caller.clients().others().send("ReceiveMessage", (user(&caller), message)).await?;
            Ok::<_, HubError>(())
        })
        .method("JoinGroup", |caller: Caller, (group,): (String,)| async move {
            caller.groups().add(caller.connection_id(), &group).await?;
            Ok::<_, HubError>(())
        })
        .method("LeaveGroup", |caller: Caller, (group,): (String,)| async move {
            caller.groups().remove(caller.connection_id(), &group).await?;
            Ok::<_, HubError>(())
        })
        .method("SendToGroup", |caller: Caller, (group, message): (String, String)| async move {
            let clients = caller.clients();
            clients.group(group.clone()).send("GroupMessage", (group, user(&caller), message)).await?;
            Ok::<_, HubError>(())
        })
        .method("SendToUser", |caller: Caller, (to, message): (String, String)| async move {
            caller.clients().user(to).send("DirectMessage", (user(&caller), message)).await?;
            Ok::<_, HubError>(())
        })
        .method("Moderate", |_caller: Caller, (_message,): (String,)| async move {
            Ok::<_, HubError>("ok")
        })
        .method_policy("Moderate", Policy::require_claim_value("permission", ["moderate"]))
        .method("Fail", |_caller: Caller, (message,): (String,)| async move {
            Err::<(), _>(HubError::new(message))
        })
        .method("Crash", |_caller: Caller, ()| async move {
            Err::<(), _>(HubError::internal("this detail stays on the server"))
        })
        .build()
}

#[derive(Deserialize)]
struct TokenQuery {
    user: String,
    permission: Option<String>,
}

async fn issue_token(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> impl IntoResponse {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = serde_json::json!({"sub": q.user, "iat": now, "exp": now + 300});
    if let Some(permission) = q.permission {
        claims["permission"] = Value::String(permission);
    }
    let Ok(key) = jsonwebtoken::EncodingKey::from_secret(state.secret.as_bytes()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    ) {
        Ok(token) => token.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    // Header only: `access_token` in the query is accepted on hub routes alone.
    match state.auth.authenticate(&headers, None, false) {
        Ok(principal) => principal
            .user_id()
            .unwrap_or_default()
            .to_owned()
            .into_response(),
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[derive(Deserialize)]
struct Broadcast {
    message: String,
}

async fn broadcast(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Broadcast>,
) -> impl IntoResponse {
    if state.auth.authenticate(&headers, None, false).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    match state
        .chat
        .clients()
        .all()
        .send("ReceiveMessage", ("server", body.message))
        .await
    {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let auth = JwtAuth::hs256(&args.jwt_secret).context("invalid CHAT_JWT_SECRET")?;
    let hub = chat_hub(auth.clone());
    let context = hub.context();
    let state = AppState {
        auth,
        secret: args.jwt_secret,
        chat: hub.context(),
    };
    let app = Router::new()
        .route("/token", get(issue_token))
        .route("/api/whoami", get(whoami))
        .route("/api/broadcast", post(broadcast))
        .with_state(state)
        .map_hub("/hubs/chat", hub);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("Now listening on: http://{addr}");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Tell every client to reconnect (elsewhere, or here after the restart), then stop.
            let left = context.shutdown(std::time::Duration::from_secs(10)).await;
            tracing::info!(left, "hub connections closed; shutting down");
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
