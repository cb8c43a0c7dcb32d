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
//! | `GET /api/admin/users` | the accounts (name, roles, notify permission, disabled) |
//! | `POST /api/admin/users` | `{username, password, notify}`: creates an account |
//! | `GET`/`PUT /api/admin/registration` | whether `POST /api/auth/register` is open; `{enabled}` sets it |
//! | `POST /api/admin/notifications` | `{user?, message}`: a notification to anyone (default: the admin) |
//! | `GET /api/admin/webhooks` | the webhook delivery log (see [`crate::webhooks::admin`]) |
//! | `POST /api/admin/webhooks/{id}/retry` | one more attempt of a failed webhook event |
//!
//! Registration: once an administrator sets it on the dashboard, the stored value (table
//! `settings`, shared by every node, kept across restarts) decides; until then, or after
//! `{"enabled": null}`, the configuration's `auth.registration` does.

pub mod routes;
pub mod store;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{delete, get, post, put};

use crate::config::Config;
use crate::db::{Db, StoreError};
use crate::state::AppState;

/// The `settings` row of the dashboard's registration switch (`true` / `false`).
pub const REGISTRATION_SETTING: &str = "auth.registration";

/// Whether registration is open: the dashboard's stored value when there is one, else the
/// configuration's `auth.registration`.
pub async fn registration(
    db: &Db,
    config: &Config,
) -> Result<routes::RegistrationState, StoreError> {
    let configured = config.auth.registration;
    Ok(match db.setting(REGISTRATION_SETTING).await? {
        Some(value) => routes::RegistrationState {
            enabled: value == "true",
            source: "dashboard",
            configured,
        },
        None => routes::RegistrationState {
            enabled: configured,
            source: "configuration",
            configured,
        },
    })
}

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");

/// The dashboard page and the admin API.
pub fn routes() -> Router<AppState> {
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
        .route("/api/admin/stats", get(routes::stats))
        .route(
            "/api/admin/users/{user}/connections",
            get(routes::user_connections),
        )
        .route("/api/admin/connections/{id}", delete(routes::disconnect))
        .route(
            "/api/admin/groups/{group}/members/{user}",
            put(routes::add_member).delete(routes::remove_member),
        )
        .route(
            "/api/admin/users",
            get(routes::list_users).post(routes::create_user),
        )
        .route(
            "/api/admin/registration",
            get(routes::get_registration).put(routes::set_registration),
        )
        .route("/api/admin/notifications", post(routes::send_notification))
}
