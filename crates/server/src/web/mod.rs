//! The notification page at `/`: sign-in (password, or the external OpenID Connect provider:
//! through the service as a confidential client when `oidc.client_secret` is set — see
//! [`crate::auth::oidc_login`] — else authorization code + PKCE in the browser), live notifications, inbox, presence and a notify form. Its
//! HTML, JavaScript, CSS and the official `@microsoft/signalr` browser bundle are embedded in the
//! binary; nothing is loaded from elsewhere.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (with a Content-Security-Policy allowing only this origin, plus the provider's token endpoint when the browser runs the code flow itself) |
//! | `GET /assets/app.js`, `/assets/app.css`, `/assets/signalr.min.js` | its assets |
//! | `GET /api/auth/config` | what the page needs to know: the external provider (if any), the permission claim |

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// `@microsoft/signalr` 10.0.11, `dist/browser/signalr.min.js` (MIT), copied unchanged.
const SIGNALR_JS: &str = include_str!("assets/signalr.min.js");

/// The page's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(|| asset("text/javascript", APP_JS)))
        .route("/assets/app.css", get(|| asset("text/css", APP_CSS)))
        .route(
            "/assets/signalr.min.js",
            get(|| asset("text/javascript", SIGNALR_JS)),
        )
        .route("/api/auth/config", get(auth_config))
        .with_state(state)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let value = HeaderValue::from_str(&format!("{content_type}; charset=utf-8"))
        .unwrap_or(HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_TYPE, value);
    // The assets change with the binary: revalidate, but they are tiny.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The external provider as the page sees it.
#[derive(Debug, Serialize)]
pub struct ProviderConfig {
    /// Name for the button.
    pub name: String,
    /// The issuer.
    pub issuer: String,
    /// The page's client id.
    pub client_id: String,
    /// Where to send the browser.
    pub authorization_endpoint: String,
    /// Where the browser exchanges the code.
    pub token_endpoint: String,
    /// Scopes to ask for.
    pub scopes: String,
    /// Who runs the authorization code flow: `server` (a client secret is configured: the
    /// button navigates to `start_url`, and the page then calls `POST /api/auth/oidc/session`)
    /// or `browser` (a public client with PKCE, then `POST /api/auth/external`).
    pub flow: &'static str,
    /// Where the button navigates in the `server` flow.
    pub start_url: Option<&'static str>,
}

/// `GET /api/auth/config`.
#[derive(Debug, Serialize)]
pub struct PageConfig {
    /// The external provider, when one is configured with a client id and its discovery
    /// document could be read.
    pub oidc: Option<ProviderConfig>,
    /// The claim carrying permissions.
    pub permission_claim: String,
    /// Its value that allows sending notifications.
    pub notify_permission: String,
}

fn default_provider_name(issuer: &str) -> String {
    let host = reqwest::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| issuer.to_owned());
    if host == "accounts.google.com" {
        "Google".to_owned()
    } else {
        host
    }
}

async fn provider(state: &AppState) -> Option<ProviderConfig> {
    let config = state.config.oidc.as_ref()?;
    let client_id = config.browser_client_id()?.to_owned();
    let verifier = state.identity.oidc()?;
    let server_side = crate::auth::oidc_login::server_side(state);
    let endpoints = match verifier.browser_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            tracing::warn!(%error, "external sign-in unavailable on the page");
            return None;
        }
    };
    Some(ProviderConfig {
        name: config
            .provider_name
            .clone()
            .unwrap_or_else(|| default_provider_name(&config.issuer)),
        issuer: config.issuer.clone(),
        client_id,
        authorization_endpoint: endpoints.authorization_endpoint,
        token_endpoint: endpoints.token_endpoint,
        scopes: config.scopes.clone(),
        flow: if server_side { "server" } else { "browser" },
        start_url: server_side.then_some(crate::auth::oidc_login::START_PATH),
    })
}

async fn auth_config(State(state): State<AppState>) -> Json<PageConfig> {
    Json(PageConfig {
        oidc: provider(&state).await,
        permission_claim: state.config.auth.permission_claim.clone(),
        notify_permission: state.config.auth.notify_permission.clone(),
    })
}

fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// The page's Content-Security-Policy: only this origin, plus the provider's token endpoint for
/// the code exchange (the redirect to its authorization endpoint is a navigation).
fn content_security_policy(token_endpoint: Option<&str>) -> String {
    let mut connect = "'self'".to_owned();
    if let Some(origin) = token_endpoint.and_then(origin_of) {
        connect.push(' ');
        connect.push_str(&origin);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

async fn index(State(state): State<AppState>) -> Response {
    // The browser calls the provider's token endpoint only when it runs the code flow itself.
    let token_endpoint = provider(&state)
        .await
        .filter(|p| p.flow == "browser")
        .map(|p| p.token_endpoint);
    match HeaderValue::from_str(&content_security_policy(token_endpoint.as_deref())) {
        Ok(csp) => html_page(INDEX_HTML, csp),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An HTML page with the headers every page of the service carries: its Content-Security-Policy,
/// `nosniff`, no framing, no caching, and `no-referrer` (the sign-in callback's and the setup
/// link's URLs carry one-time credentials: never send them onwards).
pub(crate) fn html_page(html: &'static str, csp: HeaderValue) -> Response {
    let mut response = axum::response::Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_allows_only_self_and_the_token_endpoint_origin() {
        let csp = content_security_policy(Some("https://oauth2.googleapis.com/token"));
        assert!(
            csp.contains("connect-src 'self' https://oauth2.googleapis.com;"),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        let csp = content_security_policy(Some("javascript:alert(1)"));
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(content_security_policy(None).contains("frame-ancestors 'none'"));
    }

    #[test]
    fn provider_names() {
        assert_eq!(
            default_provider_name("https://accounts.google.com"),
            "Google"
        );
        assert_eq!(
            default_provider_name("http://127.0.0.1:4000/oidc"),
            "127.0.0.1"
        );
    }
}
