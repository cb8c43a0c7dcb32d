//! Server-side sign-in with the external OpenID Connect provider, as a confidential client
//! (Google "Web application" clients, Entra ID, Keycloak): the service holds the client secret,
//! so the authorization code is exchanged here, never in the browser.
//!
//! 1. `GET /api/auth/oidc/start` stores the pending request (hashes only) and redirects to the
//!    provider with `state`, `nonce` and a PKCE S256 challenge. The browser gets an HttpOnly
//!    `SameSite=Lax` cookie (`Secure` over https) whose random value binds the request to it;
//!    the PKCE verifier and the nonce are derived from that value, so nothing secret is stored.
//! 2. `GET /api/auth/oidc/callback` takes the pending request (single use, 10 minutes), exchanges
//!    the code at the token endpoint with client authentication (`client_secret_basic`, or
//!    `client_secret_post` when the provider supports only that) and the PKCE verifier,
//!    validates the ID token (signature, `iss`, `exp`, `aud`, `azp`, `nonce`, `email_verified`),
//!    maps it to a local user like `POST /api/auth/external`, and redirects to `/?signin=oidc` with a
//!    one-time ticket in an HttpOnly cookie (60 seconds). Failures before the request is
//!    matched answer a 400 page; later ones redirect to `/?signin_error=CODE` (a code only).
//! 3. `POST /api/auth/oidc/session` spends the ticket and answers the session's tokens, like
//!    `POST /api/auth/login`. Tokens never appear in a URL.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::external::{IdTokenRefusal, sign_in_with_id_token};
use super::routes::{TokenResponse, session};
use super::store::{SignInFlowKind, SignInFlowRow};
use crate::api::error::{ApiError, ErrorBody};
use crate::auth::oidc::OidcVerifier;
use crate::client_ip::TrustedProxies;
use crate::clock::{duration_ms, now_ms};
use crate::config::{ClientSecret, OidcConfig};
use crate::state::AppState;

/// The path of the callback (the redirect URI registered at the provider ends with it).
pub const CALLBACK_PATH: &str = "/api/auth/oidc/callback";
/// The path that starts a sign-in.
pub const START_PATH: &str = "/api/auth/oidc/start";
/// Where a successful callback sends the browser: the page, told to collect its session.
const SIGNED_IN_PAGE: &str = "/?signin=oidc";
/// The cookie binding a pending sign-in to the browser that started it.
const FLOW_COOKIE: &str = "signalbox_oidc_flow";
/// The cookie carrying the one-time ticket of a finished sign-in.
const TICKET_COOKIE: &str = "signalbox_oidc_ticket";
/// Both cookies are sent only to the sign-in routes.
const COOKIE_PATH: &str = "/api/auth/oidc";
/// How long the provider may take to send the browser back.
const FLOW_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the page has to collect its session.
const TICKET_TTL: Duration = Duration::from_secs(60);
/// Timeout of the token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server-side sign-in failed. [`SignInError::code`] is what the page gets.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No client secret (or no provider) is configured.
    #[error("sign-in through the service is not configured")]
    NotConfigured,
    /// The callback came without the cookie of its sign-in.
    #[error("this sign-in was not started in this browser, or its cookie has expired")]
    MissingCookie,
    /// The `state` is unknown, altered, already used or of another browser.
    #[error("this sign-in response is not valid (unknown, altered or already used)")]
    InvalidState,
    /// The pending sign-in expired.
    #[error("this sign-in took too long; start again")]
    Expired,
    /// No redirect URI could be derived from the request.
    #[error("cannot tell this service's address; set oidc.redirect_url")]
    NoRedirectUrl,
    /// The user refused consent at the provider.
    #[error("sign-in was cancelled at the provider")]
    AccessDenied,
    /// The provider answered the authorization request with another error.
    #[error("the provider refused the sign-in")]
    ProviderError,
    /// Discovery or the token endpoint could not be reached.
    #[error("the provider cannot be reached")]
    ProviderUnavailable,
    /// The token endpoint refused the code or answered nonsense.
    #[error("the provider did not accept the sign-in")]
    TokenRejected,
    /// The ID token is invalid for this client or this sign-in.
    #[error("the provider's ID token is not valid here")]
    InvalidIdToken,
    /// `email_verified` is false.
    #[error("the provider has not verified this e-mail address")]
    EmailUnverified,
    /// No local user, and none may be created.
    #[error("there is no account for this identity")]
    NoAccount,
    /// Storage or randomness failed (logged).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SignInError {
    /// The stable code in `?signin_error=` (and in the error page).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::MissingCookie => "missing_cookie",
            Self::InvalidState => "invalid_state",
            Self::Expired => "expired",
            Self::NoRedirectUrl => "no_redirect_url",
            Self::AccessDenied => "access_denied",
            Self::ProviderError => "provider_error",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::TokenRejected => "token_rejected",
            Self::InvalidIdToken => "invalid_id_token",
            Self::EmailUnverified => "email_unverified",
            Self::NoAccount => "no_account",
            Self::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Internal(_) => "something went wrong; the server log has the details".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<crate::db::StoreError> for SignInError {
    fn from(error: crate::db::StoreError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<IdTokenRefusal> for SignInError {
    fn from(refusal: IdTokenRefusal) -> Self {
        match refusal {
            IdTokenRefusal::Invalid(_) | IdTokenRefusal::Nonce => Self::InvalidIdToken,
            IdTokenRefusal::UnverifiedEmail => Self::EmailUnverified,
            IdTokenRefusal::Identity(crate::auth::identity::IdentityError::Store(e))
            | IdTokenRefusal::Store(e) => e.into(),
            IdTokenRefusal::Identity(_) | IdTokenRefusal::Gone => Self::NoAccount,
        }
    }
}

/// The callback's query: the provider's answer.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// The client registration the flow needs.
struct Client<'a> {
    verifier: &'a OidcVerifier,
    config: &'a OidcConfig,
    client_id: &'a str,
    secret: &'a ClientSecret,
}

fn client(state: &AppState) -> Result<Client<'_>, SignInError> {
    let verifier = state.identity.oidc().ok_or(SignInError::NotConfigured)?;
    let config = state
        .config
        .oidc
        .as_ref()
        .ok_or(SignInError::NotConfigured)?;
    let client_id = config
        .browser_client_id()
        .ok_or(SignInError::NotConfigured)?;
    let secret = state
        .config
        .oidc_client
        .client_secret
        .as_ref()
        .ok_or(SignInError::NotConfigured)?;
    Ok(Client {
        verifier,
        config,
        client_id,
        secret,
    })
}

/// Whether the page signs in through the service (a client secret is configured).
pub fn server_side(state: &AppState) -> bool {
    client(state).is_ok()
}

/// SHA-256, base64url.
fn hash(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

/// A value derived from the browser's flow cookie (which never leaves the browser and this
/// service): the PKCE verifier and the nonce, so that neither needs storing.
fn derive(label: &str, flow: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(label.as_bytes());
    digest.update([0]);
    digest.update(flow.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.finalize())
}

fn random_value() -> Result<String, SignInError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SignInError::Internal(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A cookie of the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value for the sign-in routes; `max_age` 0 deletes it.
fn set_cookie(
    name: &str,
    value: &str,
    max_age: Duration,
    secure: bool,
    same_site: &str,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    let mut value = HeaderValue::from_str(&format!(
        "{name}={value}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite={same_site}{secure}",
        max_age.as_secs()
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The first value of a header a trusted proxy set.
fn forwarded<'a>(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &'a HeaderMap,
    name: &str,
) -> Option<&'a str> {
    let peer = peer?;
    if !TrustedProxies::new(state.config.trusted_proxies.clone()).contains(peer.ip()) {
        return None;
    }
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split(',')
        .next()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Whether the browser talks https to us: only a trusted proxy's `X-Forwarded-Proto` says so.
fn is_https(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    forwarded(state, peer, headers, "x-forwarded-proto")
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// `oidc.redirect_url`, else `{scheme}://{host}/api/auth/oidc/callback` from the request.
fn redirect_url(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<String, SignInError> {
    if let Some(url) = &state.config.oidc_client.redirect_url {
        return Ok(url.clone());
    }
    let host = forwarded(state, peer, headers, "x-forwarded-host")
        .or_else(|| headers.get(header::HOST)?.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .ok_or(SignInError::NoRedirectUrl)?;
    let scheme = if is_https(state, peer, headers) {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}{CALLBACK_PATH}"))
}

/// Headers every response of the flow carries.
fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    no_store(&mut response);
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small self-contained error page (no script, no external resource).
fn error_page(status: StatusCode, error: &SignInError) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed</title></head>\n<body>\n<main>\n<h1>Sign-in failed</h1>\n\
         <p id=\"signin-error\" data-code=\"{code}\">{message}</p>\n\
         <p><a href=\"/\">Back to sign-in</a></p>\n</main>\n</body>\n</html>\n",
        code = error.code(),
        message = escape(&error.message()),
    );
    let mut response = (status, axum::response::Html(html)).into_response();
    no_store(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Back to the page with an error code (and only that) in the query.
fn page_error(error: &SignInError) -> Response {
    if let SignInError::Internal(cause) = error {
        tracing::error!(%cause, "server-side sign-in failed");
    }
    redirect(&format!("/?signin_error={}", error.code()))
}

/// The configured scopes, with `openid` always.
fn scopes(config: &OidcConfig) -> String {
    let mut scopes: Vec<&str> = config.scopes.split_whitespace().collect();
    if !scopes.contains(&"openid") {
        scopes.insert(0, "openid");
    }
    scopes.join(" ")
}

fn http() -> Option<&'static reqwest::Client> {
    static HTTP: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TOKEN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()
    })
    .as_ref()
}

fn peer_of(connect: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<SocketAddr> {
    connect.map(|Extension(ConnectInfo(addr))| addr)
}

/// Starts a server-side sign-in: redirects to the provider's authorization endpoint.
#[utoipa::path(
    get, path = "/api/auth/oidc/start", tag = "auth",
    responses(
        (status = 303, description = "To the provider's authorization endpoint (sets the HttpOnly cookie `signalbox_oidc_flow`), or back to `/?signin_error=provider_unavailable`"),
        (status = 404, description = "No client secret is configured (an HTML page)"),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    match start_flow(&state, peer_of(connect), &headers).await {
        Ok(response) => response,
        Err(error @ SignInError::NotConfigured) => error_page(StatusCode::NOT_FOUND, &error),
        Err(error @ SignInError::NoRedirectUrl) => error_page(StatusCode::BAD_REQUEST, &error),
        Err(error) => page_error(&error),
    }
}

async fn start_flow(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, SignInError> {
    let client = client(state)?;
    let redirect_uri = redirect_url(state, peer, headers)?;
    let endpoints = client.verifier.browser_endpoints().await.map_err(|error| {
        tracing::warn!(%error, "server-side sign-in: the provider's discovery document is unavailable");
        SignInError::ProviderUnavailable
    })?;
    let mut authorize = reqwest::Url::parse(&endpoints.authorization_endpoint).map_err(|_| {
        tracing::warn!("server-side sign-in: the authorization endpoint is not a URL");
        SignInError::ProviderUnavailable
    })?;

    let now = now_ms();
    if let Err(error) = state.db.purge_sign_in_flows(now).await {
        tracing::warn!(%error, "cannot purge expired sign-in flows");
    }
    let flow = random_value()?;
    let state_value = random_value()?;
    let verifier = derive("pkce-verifier", &flow);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    state
        .db
        .insert_sign_in_flow(&SignInFlowRow {
            key_hash: hash(&state_value),
            kind: SignInFlowKind::State,
            binding_hash: hash(&flow),
            data: redirect_uri.clone(),
            created_at: now,
            expires_at: now.saturating_add(duration_ms(FLOW_TTL)),
        })
        .await?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &scopes(client.config))
        .append_pair("state", &state_value)
        .append_pair("nonce", &derive("nonce", &flow))
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut response = redirect(authorize.as_str());
    let secure = is_https(state, peer, headers);
    if let Some(cookie) = set_cookie(FLOW_COOKIE, &flow, FLOW_TTL, secure, "Lax") {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    tracing::debug!("server-side sign-in started");
    Ok(response)
}

/// The provider sends the browser back here: checks `state`, exchanges the code, validates the
/// ID token and redirects to `/` with a one-time ticket cookie.
#[utoipa::path(
    get, path = "/api/auth/oidc/callback", tag = "auth",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The `state` of the authorization request"),
        ("error" = Option<String>, Query, description = "The provider's error, e.g. `access_denied`"),
    ),
    responses(
        (status = 303, description = "Signed in: to `/?signin=oidc` with the HttpOnly cookie `signalbox_oidc_ticket`; or to `/?signin_error=CODE`"),
        (status = 400, description = "Missing cookie, or unknown, altered, replayed or expired `state` (an HTML page)"),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let peer = peer_of(connect);
    let secure = is_https(&state, peer, &headers);
    let mut response = match finish_flow(&state, &headers, params).await {
        Ok(ticket) => {
            let mut response = redirect(SIGNED_IN_PAGE);
            if let Some(cookie) = set_cookie(TICKET_COOKIE, &ticket, TICKET_TTL, secure, "Strict") {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(
            error @ (SignInError::MissingCookie
            | SignInError::InvalidState
            | SignInError::Expired
            | SignInError::NotConfigured),
        ) => {
            tracing::info!(
                reason = error.code(),
                "server-side sign-in callback refused"
            );
            let status = if matches!(error, SignInError::NotConfigured) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error_page(status, &error)
        }
        Err(error) => page_error(&error),
    };
    // The flow cookie has done its work (or is useless): drop it.
    if cookie(&headers, FLOW_COOKIE).is_some()
        && let Some(cookie) = set_cookie(FLOW_COOKIE, "", Duration::ZERO, secure, "Lax")
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The callback's work: on success, the ticket for the page.
async fn finish_flow(
    state: &AppState,
    headers: &HeaderMap,
    params: CallbackParams,
) -> Result<String, SignInError> {
    let client = client(state)?;
    let flow = cookie(headers, FLOW_COOKIE).ok_or(SignInError::MissingCookie)?;
    let state_value = params.state.as_deref().ok_or(SignInError::InvalidState)?;
    let taken = state
        .db
        .take_sign_in_flow(SignInFlowKind::State, &hash(state_value), &hash(flow))
        .await?
        .ok_or(SignInError::InvalidState)?;
    if taken.expires_at <= now_ms() {
        return Err(SignInError::Expired);
    }
    let redirect_uri = taken.data;

    if let Some(error) = params.error.as_deref() {
        tracing::info!(error = %error.chars().take(64).collect::<String>(), "the provider answered the sign-in with an error");
        return Err(if error == "access_denied" {
            SignInError::AccessDenied
        } else {
            SignInError::ProviderError
        });
    }
    // RFC 9207: when the provider names itself, it must be our issuer.
    if let Some(iss) = params.iss.as_deref()
        && iss.trim_end_matches('/') != client.verifier.issuer().trim_end_matches('/')
    {
        tracing::info!("server-side sign-in refused: the response names another issuer");
        return Err(SignInError::ProviderError);
    }
    let code = params
        .code
        .as_deref()
        .filter(|code| !code.is_empty())
        .ok_or(SignInError::ProviderError)?;

    let id_token = exchange(&client, code, &redirect_uri, &derive("pkce-verifier", flow)).await?;
    let nonce = derive("nonce", flow);
    let user = sign_in_with_id_token(
        state,
        client.verifier,
        client.config,
        client.client_id,
        &id_token,
        Some(&nonce),
    )
    .await?;

    let ticket = random_value()?;
    let now = now_ms();
    state
        .db
        .insert_sign_in_flow(&SignInFlowRow {
            key_hash: hash(&ticket),
            kind: SignInFlowKind::Ticket,
            binding_hash: hash(&ticket),
            data: user.name.clone(),
            created_at: now,
            expires_at: now.saturating_add(duration_ms(TICKET_TTL)),
        })
        .await?;
    tracing::info!(user = %user.name, "signed in through the external provider (server-side code flow)");
    Ok(ticket)
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic authentication.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenErrorAnswer {
    error: Option<String>,
}

/// The code exchange at the token endpoint: the ID token.
async fn exchange(
    client: &Client<'_>,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<String, SignInError> {
    let endpoints = client.verifier.browser_endpoints().await.map_err(|error| {
        tracing::warn!(%error, "server-side sign-in: the provider's discovery document is unavailable");
        SignInError::ProviderUnavailable
    })?;
    let methods = &endpoints.token_endpoint_auth_methods_supported;
    let post = methods.iter().any(|m| m == "client_secret_post")
        && !methods.iter().any(|m| m == "client_secret_basic");
    let http = http().ok_or_else(|| SignInError::Internal("no HTTP client".to_owned()))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let mut request = http
        .post(&endpoints.token_endpoint)
        .header(header::ACCEPT, "application/json");
    if post {
        form.push(("client_id", client.client_id));
        form.push(("client_secret", client.secret.expose()));
    } else {
        let credentials = STANDARD.encode(format!(
            "{}:{}",
            form_encode(client.client_id),
            form_encode(client.secret.expose())
        ));
        let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| SignInError::Internal("unusable client credentials".to_owned()))?;
        value.set_sensitive(true);
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = request.form(&form).send().await.map_err(|error| {
        // reqwest's error names the URL, never the body or the headers.
        tracing::warn!(error = %error.without_url(), endpoint = %endpoints.token_endpoint, "server-side sign-in: the token endpoint cannot be reached");
        SignInError::ProviderUnavailable
    })?;
    let status = response.status();
    if !status.is_success() {
        let error = response
            .json::<TokenErrorAnswer>()
            .await
            .ok()
            .and_then(|answer| answer.error)
            .unwrap_or_default();
        tracing::warn!(
            status = status.as_u16(),
            error = %error.chars().take(64).collect::<String>(),
            method = if post { "client_secret_post" } else { "client_secret_basic" },
            "server-side sign-in: the token endpoint refused the code"
        );
        return Err(if status.is_server_error() {
            SignInError::ProviderUnavailable
        } else {
            SignInError::TokenRejected
        });
    }
    let answer: TokenAnswer = response.json().await.map_err(|_| {
        tracing::warn!("server-side sign-in: the token endpoint's answer is not JSON");
        SignInError::TokenRejected
    })?;
    answer.id_token.ok_or_else(|| {
        tracing::warn!("server-side sign-in: the token endpoint returned no ID token");
        SignInError::TokenRejected
    })
}

/// Spends the one-time ticket that the callback left in an HttpOnly cookie and answers the
/// session's tokens (the same as `POST /api/auth/login`).
#[utoipa::path(
    post, path = "/api/auth/oidc/session", tag = "auth",
    responses(
        (status = 200, description = "Signed in; the ticket cookie is deleted", body = TokenResponse),
        (status = 401, description = "No ticket, or an expired or spent one", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn collect_session(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let no_ticket = || ApiError::Unauthorized("no sign-in to complete; sign in again".to_owned());
    let ticket = cookie(&headers, TICKET_COOKIE).ok_or_else(no_ticket)?;
    let key = hash(ticket);
    let taken = state
        .db
        .take_sign_in_flow(SignInFlowKind::Ticket, &key, &key)
        .await?
        .ok_or_else(no_ticket)?;
    if taken.expires_at <= now_ms() {
        return Err(ApiError::Unauthorized(
            "the sign-in took too long to complete; sign in again".to_owned(),
        ));
    }
    let user = state
        .db
        .user(&taken.data)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".to_owned()))?;
    let tokens = session(&state, &user, None, None).await?;
    tracing::info!(user = %user.name, "session handed to the page after the server-side sign-in");
    let mut response = Json(tokens).into_response();
    no_store(&mut response);
    let secure = is_https(&state, peer_of(connect), &headers);
    if let Some(cookie) = set_cookie(TICKET_COOKIE, "", Duration::ZERO, secure, "Strict") {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; signalbox_oidc_flow=abc; b=2"),
        );
        assert_eq!(cookie(&headers, FLOW_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, TICKET_COOKIE), None);
    }

    #[test]
    fn derived_values_are_valid_pkce_verifiers_and_differ() {
        let verifier = derive("pkce-verifier", "flow");
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, derive("nonce", "flow"));
        assert_ne!(verifier, derive("pkce-verifier", "other"));
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("a b:c/d~"), "a%20b%3Ac%2Fd~");
    }

    #[test]
    fn error_pages_escape() {
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
