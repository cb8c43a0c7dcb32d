//! An external OpenID Connect issuer whose tokens are accepted, and the service's own client
//! registration there for the server-side sign-in.

use std::time::Duration;

use super::ConfigError;
use super::settings as s;
use super::values::Values;

/// An external OpenID Connect issuer.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer (`iss`), e.g. `https://accounts.google.com`.
    pub issuer: String,
    /// Discovery document URL. Default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// JWKS URL; skips discovery when set.
    pub jwks_url: Option<String>,
    /// Required `aud` (the client id).
    pub audience: Option<String>,
    /// The claim naming the local user. Default `email`.
    pub user_claim: String,
    /// Create a local account (no password) on first sign-in. Default false.
    pub auto_create_users: bool,
    /// How long fetched keys are trusted before a refresh. Default 1 hour.
    pub jwks_cache_ttl: Duration,
    /// Shortest interval between refetches caused by an unknown `kid`. Default 30 seconds.
    pub jwks_min_refresh_interval: Duration,
    /// The client id the web page's sign-in button uses (authorization code + PKCE). Default
    /// `audience`; without either the page shows no external sign-in.
    pub client_id: Option<String>,
    /// Scopes the web page asks for. Default `openid email profile`.
    pub scopes: String,
    /// The provider's name on the page's button. Default `Google` for Google's issuer, else
    /// the issuer's host.
    pub provider_name: Option<String>,
}

impl OidcConfig {
    /// The settings for `issuer` with every other setting at its default (no audience, users
    /// mapped by a verified `email`, no accounts created, keys trusted for an hour, refetched
    /// at most every 30 seconds for an unknown `kid`).
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            discovery_url: None,
            jwks_url: None,
            audience: None,
            user_claim: s::OIDC_USER_CLAIM.fallback(),
            auto_create_users: s::OIDC_AUTO_CREATE_USERS.fallback(),
            jwks_cache_ttl: s::OIDC_JWKS_CACHE_TTL.fallback(),
            jwks_min_refresh_interval: s::OIDC_JWKS_MIN_REFRESH_INTERVAL.fallback(),
            client_id: None,
            scopes: s::OIDC_SCOPES.fallback(),
            provider_name: None,
        }
    }

    /// The client id of the web page: `client_id`, else `audience`.
    pub fn browser_client_id(&self) -> Option<&str> {
        self.client_id.as_deref().or(self.audience.as_deref())
    }
}

/// A client secret: its `Debug` never shows it; read it with [`ClientSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// The service's own client registration at the OpenID Connect issuer, for the server-side
/// authorization code flow (`/api/auth/oidc/start` → `/api/auth/oidc/callback`).
#[derive(Debug, Clone, Default)]
pub struct OidcClientConfig {
    /// The client secret (`oidc.client_secret` or the trimmed contents of
    /// `oidc.client_secret_file`). When set, the page signs in through the service (a
    /// confidential client) instead of running the code flow in the browser.
    pub client_secret: Option<ClientSecret>,
    /// The callback URL registered at the provider. Default: derived from each request,
    /// `{scheme}://{host}/api/auth/oidc/callback` (scheme `https` when a trusted proxy says
    /// `X-Forwarded-Proto: https`).
    pub redirect_url: Option<String>,
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_redirect_url(text: &String) -> Result<(), String> {
    let text = text.trim();
    let valid = reqwest::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.fragment().is_none()
    });
    if valid {
        return Ok(());
    }
    Err(format!(
        "{text:?} is not a URL such as https://notify.example.com/api/auth/oidc/callback"
    ))
}

/// The client secret (inline or from a file, not both) and the redirect URL.
fn resolve_client(values: &Values) -> Result<OidcClientConfig, ConfigError> {
    let inline = values.get(&s::OIDC_CLIENT_SECRET)?;
    let file = values.get(&s::OIDC_CLIENT_SECRET_FILE)?;
    let client_secret = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(s::OIDC_CLIENT_SECRET_FILE
                .invalid("set either oidc.client_secret or oidc.client_secret_file, not both"));
        }
        (Some(secret), None) => Some(secret.trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|cause| {
                s::OIDC_CLIENT_SECRET_FILE.invalid(format!("cannot read {path:?}: {cause}"))
            })?;
            Some(text.trim().to_owned())
        }
        (None, None) => None,
    };
    if client_secret.as_ref().is_some_and(String::is_empty) {
        return Err(s::OIDC_CLIENT_SECRET.invalid("the client secret is empty"));
    }
    Ok(OidcClientConfig {
        client_secret: client_secret.map(ClientSecret),
        redirect_url: values
            .get(&s::OIDC_REDIRECT_URL)?
            .map(|u| u.trim().to_owned()),
    })
}

/// The issuer's settings (when `oidc.issuer` is set) and the confidential client's.
pub(super) fn resolve(
    values: &Values,
) -> Result<(Option<OidcConfig>, OidcClientConfig), ConfigError> {
    let client = resolve_client(values)?;
    let oidc = match values.get(&s::OIDC_ISSUER)? {
        Some(issuer) => Some(OidcConfig {
            issuer: issuer.trim_end_matches('/').to_owned(),
            discovery_url: values.get(&s::OIDC_DISCOVERY_URL)?,
            jwks_url: values.get(&s::OIDC_JWKS_URL)?,
            audience: values.get(&s::OIDC_AUDIENCE)?,
            user_claim: values.value(&s::OIDC_USER_CLAIM)?,
            auto_create_users: values.value(&s::OIDC_AUTO_CREATE_USERS)?,
            jwks_cache_ttl: values.value(&s::OIDC_JWKS_CACHE_TTL)?,
            jwks_min_refresh_interval: values.value(&s::OIDC_JWKS_MIN_REFRESH_INTERVAL)?,
            client_id: values.get(&s::OIDC_CLIENT_ID)?,
            scopes: values.value(&s::OIDC_SCOPES)?,
            provider_name: values.get(&s::OIDC_PROVIDER_NAME)?,
        }),
        None => {
            let dependent = [
                s::OIDC_DISCOVERY_URL.info.key,
                s::OIDC_JWKS_URL.info.key,
                s::OIDC_AUDIENCE.info.key,
                s::OIDC_CLIENT_ID.info.key,
            ];
            if dependent.iter().any(|key| values.is_set(key))
                || client.client_secret.is_some()
                || client.redirect_url.is_some()
            {
                return Err(s::OIDC_ISSUER.invalid("the other oidc settings need oidc.issuer"));
            }
            None
        }
    };
    if client.client_secret.is_some()
        && oidc
            .as_ref()
            .is_some_and(|o| o.browser_client_id().is_none())
    {
        return Err(s::OIDC_CLIENT_SECRET.invalid(
            "a client secret needs oidc.client_id (or oidc.audience): the client it belongs to",
        ));
    }
    Ok((oidc, client))
}
