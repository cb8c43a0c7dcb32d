//! Tokens of an external OpenID Connect issuer (Google, Entra ID, Keycloak, …). The keys come
//! from the library's [`KeySet`] (discovery, then the JWKS; cached, refetched on an unknown `kid`
//! at most once per `oidc.jwks_min_refresh_interval`, the last good keys kept while the provider
//! is unreachable, a withdrawn key dropped at the next fetch). One [`JwtAuth`] holds them with
//! this issuer and its own audience, so the issuer is trusted only for that audience; the REST
//! API and the hub share it through the service's authenticator.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use signalbox::auth::{AuthError, KeySet, KeySetError};
use signalbox::{JwtAuth, Principal};

use crate::config::OidcConfig;

/// The timeout of each request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The external issuer is misconfigured, or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The key set or its validator could not be set up, or a fetch failed.
    #[error("OpenID Connect issuer: {0}")]
    Keys(#[from] KeySetError),
    /// The validator could not be built.
    #[error("OpenID Connect issuer: {0}")]
    Validator(#[from] signalbox::auth::JwtConfigError),
    /// The discovery document lacks an endpoint the sign-in needs.
    #[error("the discovery document of {issuer} has no {field}")]
    Discovery {
        /// The issuer.
        issuer: String,
        /// The missing field.
        field: &'static str,
    },
}

/// The provider endpoints a browser needs for the authorization code flow.
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserEndpoints {
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the browser exchanges the code (with its PKCE verifier) for tokens.
    pub token_endpoint: String,
    /// How a confidential client may authenticate at the token endpoint (discovery's
    /// `token_endpoint_auth_methods_supported`; empty when not published, which means
    /// `client_secret_basic`).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// Validates the external issuer's tokens.
#[derive(Clone)]
pub struct OidcVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    /// The keys, with the issuer and audience they are trusted for.
    auth: JwtAuth,
    keys: KeySet,
    /// The discovery document (the same set as `keys` unless `oidc.jwks_url` skips discovery).
    discovery: KeySet,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.inner.config.issuer)
            .finish_non_exhaustive()
    }
}

fn discovery_set(config: &OidcConfig) -> Result<KeySet, KeySetError> {
    let mut builder = KeySet::discover(config.issuer.clone())
        .ttl(config.jwks_cache_ttl)
        .min_refresh_interval(config.jwks_min_refresh_interval)
        .http_timeout(HTTP_TIMEOUT);
    if let Some(url) = &config.discovery_url {
        builder = builder.discovery_url(url.clone());
    }
    builder.build()
}

impl OidcVerifier {
    /// A verifier for `config` (nothing is fetched until needed or [`OidcVerifier::prefetch`]).
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        let discovery = discovery_set(&config)?;
        let keys = match &config.jwks_url {
            Some(url) => KeySet::jwks(url.clone())
                .ttl(config.jwks_cache_ttl)
                .min_refresh_interval(config.jwks_min_refresh_interval)
                .http_timeout(HTTP_TIMEOUT)
                .build()?,
            None => discovery.clone(),
        };
        let mut auth = JwtAuth::builder()
            .key_set(keys.clone())
            .issuer(config.issuer.clone())
            .issuer(format!("{}/", config.issuer));
        if let Some(audience) = &config.audience {
            auth = auth.audience(audience.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                auth: auth.build()?,
                config,
                keys,
                discovery,
            }),
        })
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }

    /// Whether unknown users get an account on first sign-in.
    pub fn auto_create_users(&self) -> bool {
        self.inner.config.auto_create_users
    }

    /// Whether this principal's token came from the external issuer.
    pub fn issued(&self, principal: &Principal) -> bool {
        principal
            .claim("iss")
            .and_then(Value::as_str)
            .is_some_and(|iss| iss.trim_end_matches('/') == self.inner.config.issuer)
    }

    /// Whether local users are found by the e-mail claim (which then must be verified).
    pub fn maps_by_email(&self) -> bool {
        self.inner.config.user_claim == "email"
    }

    /// The local user name a principal maps to (the configured claim).
    pub fn local_name(&self, principal: &Principal) -> Option<String> {
        principal
            .claim_values(&self.inner.config.user_claim)
            .into_iter()
            .next()
    }

    /// The authorization and token endpoints from the discovery document (read once, then
    /// cached; a failure is retried at the next call).
    pub async fn browser_endpoints(&self) -> Result<BrowserEndpoints, OidcError> {
        let metadata = self.inner.discovery.discovery().await?;
        let missing = |field| OidcError::Discovery {
            issuer: self.inner.config.issuer.clone(),
            field,
        };
        Ok(BrowserEndpoints {
            authorization_endpoint: metadata
                .authorization_endpoint()
                .ok_or_else(|| missing("authorization_endpoint"))?
                .to_owned(),
            token_endpoint: metadata
                .token_endpoint()
                .ok_or_else(|| missing("token_endpoint"))?
                .to_owned(),
            token_endpoint_auth_methods_supported: metadata
                .token_endpoint_auth_methods_supported()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Fetches the keys now (at start, so that configuration errors show early).
    pub async fn prefetch(&self) -> Result<usize, OidcError> {
        Ok(self.inner.keys.prefetch().await?)
    }

    /// Validates a token of the external issuer: signature by a key the issuer publishes now
    /// (by `kid`, with the key's own algorithm), `iss`, `aud` when configured, `exp`/`nbf`.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        self.inner.auth.validate_async(token).await
    }
}
