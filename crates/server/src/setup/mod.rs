//! First-run setup, like PocketBase: while no administrator exists (no enabled account has the
//! `admin.role` role), `signalbox serve` prints a one-time link (see [`first_run_link`]). The
//! link opens a page where the first administrator chooses a user name and password; the account
//! gets the admin role and the notify permission, and the page lands signed in on the admin
//! dashboard (the tokens come back in the response body, never in a URL). A link is valid for
//! an hour or until an administrator exists; each start prints a new one while setup is needed.
//!
//! | route | what |
//! |---|---|
//! | `GET /setup` | the page (the token is in the fragment: `/setup#token=…`) |
//! | `GET /setup/setup.js`, `/setup/setup.css` | its assets |
//! | `POST /api/setup/status` | `{token}` → `{status: ready \| complete \| expired \| invalid}` |
//! | `POST /api/setup` | `{token, username, password}` → the session's tokens (as a login), 409 once an administrator exists, 410 for an expired link, 403 for an unknown one |

pub mod links;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use links::{FirstAdmin, LINK_TTL, LinkStatus, SETUP_PATH, SetupError, SetupLinks};

use crate::api::ApiError;
use crate::api::error::ErrorBody;
use crate::auth::accounts::MIN_PASSWORD_LENGTH;
use crate::auth::routes::TokenResponse;
use crate::config::Config;
use crate::db::Db;
use crate::state::AppState;

const SETUP_HTML: &str = include_str!("setup.html");
const SETUP_JS: &str = include_str!("setup.js");
const SETUP_CSS: &str = include_str!("setup.css");

/// The page's Content-Security-Policy: this origin only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// A token to check.
#[derive(Debug, Deserialize)]
pub struct StatusRequest {
    /// The token from the link.
    pub token: String,
}

/// What the page shows for a link.
#[derive(Debug, Serialize)]
pub struct StatusResponse {
    /// `ready`, `complete`, `expired` or `invalid`.
    pub status: &'static str,
    /// The shortest password accepted.
    pub min_password_length: usize,
}

/// The first administrator's account.
#[derive(Debug, Deserialize)]
pub struct SetupRequest {
    /// The token from the link.
    pub token: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A new setup link for the service listening on `addr` while setup is needed; `None` once an
/// administrator exists. Each call stores a new token (the earlier ones stay valid until they
/// expire or setup completes).
pub async fn first_run_link(
    state: &AppState,
    addr: SocketAddr,
) -> Result<Option<String>, SetupError> {
    let links = SetupLinks::for_config(state.db.clone(), &state.config);
    Ok(links
        .issue()
        .await?
        .map(|token| links::link(&links::base_url(addr), &token)))
}

/// The setup page and its API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/setup/status", post(status))
        .route("/api/setup", post(complete))
        .route_layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::rate_limit::limit_auth,
        ));
    Router::new()
        .route(SETUP_PATH, get(page))
        .route(
            "/setup/setup.js",
            get(|| asset("text/javascript", SETUP_JS)),
        )
        .route("/setup/setup.css", get(|| asset("text/css", SETUP_CSS)))
        .merge(api)
        .with_state(state)
}

async fn page() -> Response {
    crate::web::html_page(SETUP_HTML, HeaderValue::from_static(CSP))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `POST /api/setup/status`.
async fn status(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    Json(body): Json<StatusRequest>,
) -> Result<Json<StatusResponse>, SetupError> {
    let links = SetupLinks::for_config(db, &config);
    let status = links.status(body.token.trim()).await?;
    Ok(Json(StatusResponse {
        status: status.as_str(),
        min_password_length: MIN_PASSWORD_LENGTH,
    }))
}

/// `POST /api/setup`: creates the first administrator and signs them in.
async fn complete(
    State(state): State<AppState>,
    Json(body): Json<SetupRequest>,
) -> Result<Response, SetupError> {
    let links = SetupLinks::for_config(state.db.clone(), &state.config);
    let user = links
        .complete(
            body.token.trim(),
            FirstAdmin {
                name: body.username.trim().to_owned(),
                password: body.password,
            },
        )
        .await?;
    tracing::info!(user = %user.name, "first administrator created through the setup link");
    let tokens: TokenResponse = match crate::auth::routes::session(&state, &user, None, None).await
    {
        Ok(tokens) => tokens,
        Err(error) => return Ok(error.into_response()),
    };
    let mut response = (StatusCode::CREATED, Json(tokens)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

impl IntoResponse for SetupError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            SetupError::Complete => (StatusCode::CONFLICT, "setup_complete"),
            SetupError::InvalidLink => (StatusCode::FORBIDDEN, "invalid_link"),
            SetupError::Expired => (StatusCode::GONE, "link_expired"),
            SetupError::Account(_)
            | SetupError::Store(_)
            | SetupError::Password(_)
            | SetupError::Random(_) => {
                let error = match self {
                    SetupError::Account(e) => ApiError::from(e),
                    SetupError::Store(e) => ApiError::from(e),
                    SetupError::Password(e) => ApiError::from(e),
                    other => ApiError::internal(other),
                };
                return error.into_response();
            }
        };
        (
            status,
            Json(ErrorBody {
                error: code,
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}
