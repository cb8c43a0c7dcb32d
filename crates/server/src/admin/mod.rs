//! The admin dashboard (`/admin`, a static page that logs in through `/api/auth/login`) and the
//! admin API under `/api/admin` (the admin role, `admin.role`, is required).
//!
//! | route | what |
//! |---|---|
//! | `GET /admin` | the dashboard (HTML, JS and CSS embedded in the binary) |
//! | `GET /api/admin/stats` | live counts, online users, groups, recent samples, recent errors |
//! | `GET /api/admin/users/{user}/connections` | a user's live connections, on every node |
//! | `DELETE /api/admin/connections/{id}` | closes a connection (wherever it is) |
//! | `PUT`/`DELETE /api/admin/groups/{group}/members/{user}` | adds / removes a group member |

pub mod api;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{delete, get, put};

use crate::api::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// Authenticates the request's bearer token and requires the admin role: 401 without a valid
/// token, 403 without the role.
pub async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let identity = state.identity.authenticate(headers).await?;
    if identity.principal.is_in_role(&state.config.admin.role) {
        Ok(identity)
    } else {
        Err(ApiError::Forbidden(format!(
            "the '{}' role is required",
            state.config.admin.role
        )))
    }
}

/// The dashboard page and the admin API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin", get(|| async { Html(DASHBOARD_HTML) }))
        .route("/admin/", get(|| async { Html(DASHBOARD_HTML) }))
        .route(
            "/admin/dashboard.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    DASHBOARD_JS,
                )
                    .into_response()
            }),
        )
        .route(
            "/admin/dashboard.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    DASHBOARD_CSS,
                )
                    .into_response()
            }),
        )
        .route("/api/admin/stats", get(api::stats))
        .route(
            "/api/admin/users/{user}/connections",
            get(api::user_connections),
        )
        .route("/api/admin/connections/{id}", delete(api::disconnect))
        .route(
            "/api/admin/groups/{group}/members/{user}",
            put(api::add_member).delete(api::remove_member),
        )
        .with_state(state)
}
