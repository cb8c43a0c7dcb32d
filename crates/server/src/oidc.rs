//! Tokens of an external OpenID Connect issuer (Google, Entra ID, Keycloak, …): the discovery
//! document gives the JWKS URL; keys are cached and refetched when a token names an unknown
//! `kid` (key rotation) or the cache is older than its lifetime.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use signalbox::Principal;
use signalbox::auth::AuthError;

use crate::config::OidcConfig;

/// Fetching the issuer's keys failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// HTTP failure.
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// The cause.
        message: String,
    },
    /// The discovery document has no `jwks_uri` or names another issuer.
    #[error("invalid discovery document at {0}")]
    Discovery(String),
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The provider endpoints a browser needs for the authorization code flow.
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserEndpoints {
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the browser exchanges the code (with its PKCE verifier) for tokens.
    pub token_endpoint: String,
}

struct CachedKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

struct Cache {
    keys: HashMap<String, CachedKey>,
    fetched: Option<Instant>,
}

/// Validates the external issuer's tokens.
#[derive(Clone)]
pub struct OidcVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    http: reqwest::Client,
    jwks_url: tokio::sync::OnceCell<String>,
    endpoints: tokio::sync::OnceCell<BrowserEndpoints>,
    cache: RwLock<Cache>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.inner.config.issuer)
            .finish_non_exhaustive()
    }
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return asymmetric_algorithm(&alg.to_string());
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(_) => Some(Algorithm::ES256),
        _ => None,
    }
}

/// Only asymmetric algorithms: an issuer's published key must never act as an HMAC secret.
fn asymmetric_algorithm(text: &str) -> Option<Algorithm> {
    let alg: Algorithm = text.parse().ok()?;
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
    )
    .then_some(alg)
}

impl OidcVerifier {
    /// A verifier for `config` (nothing is fetched until needed or [`OidcVerifier::prefetch`]).
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Fetch {
                url: config.issuer.clone(),
                message: e.to_string(),
            })?;
        let jwks_url = tokio::sync::OnceCell::new_with(config.jwks_url.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                jwks_url,
                endpoints: tokio::sync::OnceCell::new(),
                cache: RwLock::new(Cache {
                    keys: HashMap::new(),
                    fetched: None,
                }),
                refresh: tokio::sync::Mutex::new(()),
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

    /// The local user name a principal maps to (the configured claim).
    pub fn local_name(&self, principal: &Principal) -> Option<String> {
        principal
            .claim_values(&self.inner.config.user_claim)
            .into_iter()
            .next()
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let fail = |message: String| OidcError::Fetch {
            url: url.to_owned(),
            message,
        };
        let response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?
            .error_for_status()
            .map_err(|e| fail(e.to_string()))?;
        response.json().await.map_err(|e| fail(e.to_string()))
    }

    fn discovery_url(&self) -> String {
        self.inner.config.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.inner.config.issuer
            )
        })
    }

    /// The authorization and token endpoints from the discovery document (read once, then
    /// cached; a failure is retried at the next call).
    pub async fn browser_endpoints(&self) -> Result<BrowserEndpoints, OidcError> {
        self.inner
            .endpoints
            .get_or_try_init(|| async {
                let url = self.discovery_url();
                let doc: Value = self.get_json(&url).await?;
                if doc
                    .get("issuer")
                    .and_then(Value::as_str)
                    .map(|i| i.trim_end_matches('/'))
                    != Some(self.inner.config.issuer.as_str())
                {
                    return Err(OidcError::Discovery(url));
                }
                serde_json::from_value(doc).map_err(|_| OidcError::Discovery(url))
            })
            .await
            .cloned()
    }

    async fn jwks_url(&self) -> Result<String, OidcError> {
        self.inner
            .jwks_url
            .get_or_try_init(|| async {
                let url = self.discovery_url();
                let doc: Discovery = self.get_json(&url).await?;
                if doc.issuer.trim_end_matches('/') != self.inner.config.issuer {
                    return Err(OidcError::Discovery(url));
                }
                Ok(doc.jwks_uri)
            })
            .await
            .cloned()
    }

    /// Fetches the keys now (at start, so that configuration errors show early).
    pub async fn prefetch(&self) -> Result<usize, OidcError> {
        self.refresh_keys().await
    }

    /// The current keys as (kid, key, algorithm), for validators that take a fixed key set.
    pub fn current_keys(&self) -> Vec<(String, DecodingKey, Algorithm)> {
        let cache = self
            .inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .keys
            .iter()
            .map(|(kid, k)| (kid.clone(), k.key.clone(), k.algorithm))
            .collect()
    }

    async fn refresh_keys(&self) -> Result<usize, OidcError> {
        let url = self.jwks_url().await?;
        let set: JwkSet = self.get_json(&url).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), algorithm_of(jwk))
            else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, CachedKey { key, algorithm });
            }
        }
        let count = keys.len();
        let mut cache = self
            .inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        tracing::debug!(issuer = %self.inner.config.issuer, keys = count, "OIDC keys fetched");
        Ok(count)
    }

    fn lookup(&self, kid: &str) -> (Option<(DecodingKey, Algorithm)>, bool, bool) {
        let cache = self
            .inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = cache
            .fetched
            .is_none_or(|t| t.elapsed() > self.inner.config.jwks_cache_ttl);
        let may_refetch = cache
            .fetched
            .is_none_or(|t| t.elapsed() >= self.inner.config.jwks_min_refresh_interval);
        (
            cache.keys.get(kid).map(|k| (k.key.clone(), k.algorithm)),
            stale,
            may_refetch,
        )
    }

    /// Validates a token of the external issuer: signature by a published key (by `kid`), `iss`,
    /// `aud` when configured, `exp`.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let (mut found, stale, may_refetch) = self.lookup(&kid);
        if (found.is_none() && may_refetch) || stale {
            let _one = self.inner.refresh.lock().await;
            // Another task may have refreshed while this one waited.
            let (again, stale_again, _) = self.lookup(&kid);
            if again.is_none() || stale_again {
                if let Err(error) = self.refresh_keys().await {
                    tracing::warn!(%error, "cannot refresh OIDC keys");
                }
                found = self.lookup(&kid).0;
            } else {
                found = again;
            }
        }
        let (key, algorithm) = found.ok_or(AuthError::UnknownKey)?;
        if header.alg != algorithm {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        validation.set_issuer(&[
            self.inner.config.issuer.as_str(),
            &format!("{}/", self.inner.config.issuer),
        ]);
        match &self.inner.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::InvalidAudience,
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        AuthError::InvalidSignature
                    }
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    _ => AuthError::Malformed,
                }
            })?;
        Ok(Principal::new(data.claims, "sub"))
    }
}
