//! Remote key sets: the signing keys an identity provider publishes as a JWKS document, found
//! through OpenID Connect discovery or at a fixed URL, cached, and refetched when the provider
//! rotates its keys.
//!
//! * Nothing is fetched when a [`KeySet`] is built: the first lookup (or
//!   [`KeySet::prefetch`]) fetches, so a provider that is down at start delays nothing.
//! * Keys are cached for the response's `Cache-Control: max-age`, else for the configured TTL
//!   (default [`DEFAULT_TTL`]), clamped between the minimum refresh interval and [`MAX_TTL`].
//! * A token naming an unknown `kid` (the provider rotated) or a lookup after the cache expired
//!   refetches, at most once per minimum refresh interval (default
//!   [`DEFAULT_MIN_REFRESH_INTERVAL`]), and concurrent callers share one fetch: a flood of tokens
//!   with forged key ids costs one request to the provider per interval.
//! * A failed fetch keeps the last good keys; a successful one replaces them, so a key the
//!   provider removed stops verifying tokens.
//! * Each key's algorithm is pinned: the JWK's `alg` when present, else RS256 for RSA, ES256 for
//!   EC P-256, ES384 for EC P-384 and EdDSA for OKP Ed25519. Symmetric (`oct`) keys, encryption
//!   keys (`use: enc`) and keys whose `alg` does not fit their type are ignored.
//! * A key without `kid` is used only when it is the only key of the set, and a token without
//!   `kid` is verified only when the set holds exactly one key.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http::header::CACHE_CONTROL;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

/// How long keys are cached when the response has no `Cache-Control: max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
/// The shortest time between two fetches of a key set.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The default timeout of one HTTP request to the provider.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest time keys are cached, whatever the provider or the configuration says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest discovery or JWKS document accepted, in bytes.
pub const MAX_DOCUMENT_LENGTH: usize = 1024 * 1024;

/// Why a key set could not be fetched or a key could not be found. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The request failed (connection, timeout, body).
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// The cause.
        message: String,
    },
    /// The provider answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The document is not what was expected (not JSON, too large, a field missing).
    #[error("invalid document at {url}: {message}")]
    InvalidDocument {
        /// What was fetched.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The discovery document names another issuer.
    #[error("the discovery document at {url} names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The discovery URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The issuer of the document.
        found: String,
    },
    /// The key set was built from a JWKS URL, so it has no discovery document.
    #[error("this key set has no discovery document (it was built from a JWKS URL)")]
    NoDiscovery,
    /// The set holds no key for this key id (after a refetch, when one was allowed).
    #[error("no key with id {0:?}")]
    UnknownKey(Option<String>),
    /// No key is cached: the set was never fetched successfully, or it holds no usable key.
    #[error("no key available")]
    NoKeys,
}

/// One verification key of a [`KeySet`], with its pinned algorithm.
pub struct PublishedKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl PublishedKey {
    /// The key id (`kid`), if the JWK has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The only algorithm tokens verified with this key may use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key, for [`jsonwebtoken::decode`].
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for PublishedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// An OpenID Connect discovery document (`/.well-known/openid-configuration`), whose issuer was
/// checked against the configured one.
#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    issuer: String,
    jwks_uri: String,
    raw: Value,
}

impl ProviderMetadata {
    /// The issuer, as the document spells it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the provider publishes its keys.
    pub fn jwks_uri(&self) -> &str {
        &self.jwks_uri
    }

    /// Where a browser is sent to sign in (`authorization_endpoint`).
    pub fn authorization_endpoint(&self) -> Option<&str> {
        self.raw
            .get("authorization_endpoint")
            .and_then(Value::as_str)
    }

    /// Where codes are exchanged for tokens (`token_endpoint`).
    pub fn token_endpoint(&self) -> Option<&str> {
        self.raw.get("token_endpoint").and_then(Value::as_str)
    }

    /// How clients may authenticate at the token endpoint
    /// (`token_endpoint_auth_methods_supported`; empty when absent).
    pub fn token_endpoint_auth_methods_supported(&self) -> Vec<&str> {
        self.raw
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|methods| methods.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The whole document.
    pub fn raw(&self) -> &Value {
        &self.raw
    }
}

#[derive(Debug)]
enum Source {
    Discovery { issuer: String, url: String },
    Jwks { url: String },
}

/// A clock that tests can move forward.
#[derive(Debug, Default)]
struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct State {
    keys: Arc<Vec<Arc<PublishedKey>>>,
    /// When the cached keys go stale (`None` until the first successful fetch).
    expires_at: Option<Instant>,
    /// When the last fetch (successful or not) started.
    last_attempt: Option<Instant>,
    /// Fetches finished so far: a caller that waited for another's fetch sees it changed.
    attempts: u64,
    /// The error of the last fetch, when it failed.
    last_error: Option<KeySetError>,
}

struct Inner {
    source: Source,
    http: reqwest::Client,
    http_timeout: Duration,
    ttl: Duration,
    min_refresh_interval: Duration,
    discovery: OnceCell<Arc<ProviderMetadata>>,
    state: RwLock<State>,
    /// Held while fetching: concurrent callers share one fetch.
    fetching: Mutex<()>,
    clock: Clock,
}

/// The keys of a remote issuer (JWKS), followed through the provider's rotations. Cheap to
/// clone; clones share the cache. Use it with
/// [`JwtAuthBuilder::key_set`](super::JwtAuthBuilder::key_set).
///
/// ```no_run
/// use signalbox::auth::{JwtAuth, KeySet};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = KeySet::discover("https://login.example.com").build()?;
/// keys.prefetch().await?; // optional: fail early on a misconfiguration
/// let auth = JwtAuth::builder()
///     .key_set(keys)
///     .issuer("https://login.example.com")
///     .audience("my-api")
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("KeySet")
            .field("source", &self.inner.source)
            .field("keys", &state.keys.len())
            .field("ttl", &self.inner.ttl)
            .field("min_refresh_interval", &self.inner.min_refresh_interval)
            .finish_non_exhaustive()
    }
}

/// Builder for [`KeySet`].
pub struct KeySetBuilder {
    source: Source,
    http: Option<reqwest::Client>,
    http_timeout: Duration,
    ttl: Duration,
    min_refresh_interval: Duration,
}

impl fmt::Debug for KeySetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySetBuilder")
            .field("source", &self.source)
            .field("ttl", &self.ttl)
            .field("min_refresh_interval", &self.min_refresh_interval)
            .finish_non_exhaustive()
    }
}

impl KeySetBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            http: None,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            ttl: DEFAULT_TTL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
        }
    }

    /// Reads the discovery document at `url` instead of `{issuer}/.well-known/openid-configuration`
    /// (its `issuer` must still match). No effect on a set built from a JWKS URL.
    pub fn discovery_url(mut self, url: impl Into<String>) -> Self {
        if let Source::Discovery { url: current, .. } = &mut self.source {
            *current = url.into();
        }
        self
    }

    /// How long keys are cached when the provider sends no `Cache-Control: max-age`. Defaults to
    /// [`DEFAULT_TTL`]; clamped between the minimum refresh interval and [`MAX_TTL`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The shortest time between two fetches, whatever triggers them (unknown key ids, expiry,
    /// failures). Defaults to [`DEFAULT_MIN_REFRESH_INTERVAL`].
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// The timeout of each request to the provider. Defaults to [`DEFAULT_HTTP_TIMEOUT`].
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Uses this HTTP client (proxies, custom roots). The timeout of
    /// [`KeySetBuilder::http_timeout`] still applies to each request.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Finishes the key set. Fetches nothing.
    pub fn build(self) -> Result<KeySet, KeySetError> {
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .timeout(self.http_timeout)
                .build()
                .map_err(|e| KeySetError::Client(e.to_string()))?,
        };
        Ok(KeySet {
            inner: Arc::new(Inner {
                source: self.source,
                http,
                http_timeout: self.http_timeout,
                ttl: self.ttl,
                min_refresh_interval: self.min_refresh_interval,
                discovery: OnceCell::new(),
                state: RwLock::new(State::default()),
                fetching: Mutex::new(()),
                clock: Clock::default(),
            }),
        })
    }
}

fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// `max-age` of a `Cache-Control` value (`no-cache` and `no-store` count as 0).
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, value)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
            && let Ok(secs) = value.trim().trim_matches('"').parse::<u64>()
        {
            age = Some(Duration::from_secs(secs));
        }
    }
    age
}

/// The algorithm a JWK verifies: its `alg` when it fits the key type, else inferred from the key
/// type. `None` for keys this library does not verify with (symmetric, P-521, encryption).
fn pinned_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let Some(declared) = jwk.common.key_algorithm else {
        return Some(inferred);
    };
    let declared: Algorithm = declared.to_string().parse().ok()?;
    let fits = match inferred {
        Algorithm::RS256 => matches!(
            declared,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        other => declared == other,
    };
    fits.then_some(declared)
}

/// The usable keys of a JWKS document. Keys that do not parse are skipped, not fatal.
fn parse_jwks(url: &str, document: &Value) -> Result<Vec<Arc<PublishedKey>>, KeySetError> {
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err(KeySetError::InvalidDocument {
            url: url.to_owned(),
            message: "no `keys` array".to_owned(),
        });
    };
    let mut keys: Vec<Arc<PublishedKey>> = Vec::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            tracing::debug!(target: "signalbox::auth", %url, "skipping a JWK that does not parse");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        let Some(algorithm) = pinned_algorithm(&jwk) else {
            tracing::debug!(target: "signalbox::auth", %url, ?kid, "skipping a JWK that is not an asymmetric signing key");
            continue;
        };
        let key = match DecodingKey::from_jwk(&jwk) {
            Ok(key) => key,
            Err(error) => {
                tracing::debug!(target: "signalbox::auth", %url, ?kid, %error, "skipping an invalid JWK");
                continue;
            }
        };
        if kid.is_some() && keys.iter().any(|k| k.kid == kid) {
            tracing::debug!(target: "signalbox::auth", %url, ?kid, "skipping a JWK with a duplicate key id");
            continue;
        }
        keys.push(Arc::new(PublishedKey {
            kid,
            algorithm,
            key,
        }));
    }
    Ok(keys)
}

/// The key for a token's `kid` (see the module documentation for keys and tokens without one).
fn find(keys: &[Arc<PublishedKey>], kid: Option<&str>) -> Option<Arc<PublishedKey>> {
    let sole = || match keys {
        [only] => Some(only.clone()),
        _ => None,
    };
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .cloned()
            .or_else(|| sole().filter(|k| k.kid.is_none())),
        None => sole(),
    }
}

impl KeySet {
    /// A key set found through OpenID Connect discovery at
    /// `{issuer}/.well-known/openid-configuration` (a trailing slash on `issuer` is tolerated);
    /// the document's `issuer` must match.
    pub fn discover(issuer: impl Into<String>) -> KeySetBuilder {
        let issuer = issuer.into();
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        KeySetBuilder::new(Source::Discovery { issuer, url })
    }

    /// A key set read from a JWKS URL directly (no discovery document).
    pub fn jwks(url: impl Into<String>) -> KeySetBuilder {
        KeySetBuilder::new(Source::Jwks { url: url.into() })
    }

    /// The configured issuer, for a set built with [`KeySet::discover`].
    pub fn issuer(&self) -> Option<&str> {
        match &self.inner.source {
            Source::Discovery { issuer, .. } => Some(issuer),
            Source::Jwks { .. } => None,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The discovery document (fetched once, then cached; a failure is retried at the next call).
    pub async fn discovery(&self) -> Result<Arc<ProviderMetadata>, KeySetError> {
        let Source::Discovery { issuer, url } = &self.inner.source else {
            return Err(KeySetError::NoDiscovery);
        };
        self.inner
            .discovery
            .get_or_try_init(|| async {
                let (document, _) = self.get_json(url).await?;
                let found = document
                    .get("issuer")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !same_issuer(found, issuer) {
                    return Err(KeySetError::IssuerMismatch {
                        url: url.clone(),
                        expected: issuer.clone(),
                        found: found.to_owned(),
                    });
                }
                let Some(jwks_uri) = document.get("jwks_uri").and_then(Value::as_str) else {
                    return Err(KeySetError::InvalidDocument {
                        url: url.clone(),
                        message: "no `jwks_uri`".to_owned(),
                    });
                };
                Ok(Arc::new(ProviderMetadata {
                    issuer: found.to_owned(),
                    jwks_uri: jwks_uri.to_owned(),
                    raw: document,
                }))
            })
            .await
            .cloned()
    }

    /// GETs a JSON document (bounded by [`MAX_DOCUMENT_LENGTH`]) and its `max-age`.
    async fn get_json(&self, url: &str) -> Result<(Value, Option<Duration>), KeySetError> {
        let fetch = |message: String| KeySetError::Fetch {
            url: url.to_owned(),
            message,
        };
        let mut response = self
            .inner
            .http
            .get(url)
            .timeout(self.inner.http_timeout)
            .send()
            .await
            .map_err(|e| fetch(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(KeySetError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let too_large = || KeySetError::InvalidDocument {
            url: url.to_owned(),
            message: format!("larger than {MAX_DOCUMENT_LENGTH} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_LENGTH as u64)
        {
            return Err(too_large());
        }
        let age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_LENGTH {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let document = serde_json::from_slice(&body).map_err(|e| KeySetError::InvalidDocument {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        Ok((document, age))
    }

    async fn download(&self) -> Result<(Vec<Arc<PublishedKey>>, Option<Duration>), KeySetError> {
        let url = match &self.inner.source {
            Source::Jwks { url } => url.clone(),
            Source::Discovery { .. } => self.discovery().await?.jwks_uri.clone(),
        };
        let (document, age) = self.get_json(&url).await?;
        Ok((parse_jwks(&url, &document)?, age))
    }

    fn cache_ttl(&self, max_age: Option<Duration>) -> Duration {
        let floor = self.inner.min_refresh_interval.min(MAX_TTL);
        max_age.unwrap_or(self.inner.ttl).clamp(floor, MAX_TTL)
    }

    /// Fetches now, unless another fetch finished since `seen_attempts` (then its result is
    /// shared). Call with `fetching` held.
    async fn fetch(&self, seen_attempts: Option<u64>) -> Result<usize, KeySetError> {
        if let Some(seen) = seen_attempts {
            let state = self.read();
            if state.attempts != seen {
                return match &state.last_error {
                    Some(error) => Err(error.clone()),
                    None => Ok(state.keys.len()),
                };
            }
        }
        let started = self.inner.clock.now();
        let result = self.download().await;
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        state.attempts += 1;
        state.last_attempt = Some(started);
        match result {
            Ok((keys, max_age)) => {
                let count = keys.len();
                let ttl = self.cache_ttl(max_age);
                state.keys = Arc::new(keys);
                state.expires_at = Some(started + ttl);
                state.last_error = None;
                tracing::debug!(target: "signalbox::auth", source = ?self.inner.source, keys = count, ?ttl, "key set fetched");
                Ok(count)
            }
            Err(error) => {
                tracing::warn!(target: "signalbox::auth", source = ?self.inner.source, %error, cached_keys = state.keys.len(), "cannot fetch the key set; keeping the last good keys");
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Fetches the keys now (for example at start, so that a misconfiguration shows early) and
    /// returns how many usable keys the set holds. Ignores the minimum refresh interval, but
    /// joins a fetch already under way.
    pub async fn prefetch(&self) -> Result<usize, KeySetError> {
        let seen = self.read().attempts;
        let _fetching = self.inner.fetching.lock().await;
        self.fetch(Some(seen)).await
    }

    /// The key for a token's `kid`, from the cache only (never fetches; the keys may be stale).
    pub fn cached_key(&self, kid: Option<&str>) -> Result<Arc<PublishedKey>, KeySetError> {
        let state = self.read();
        find(&state.keys, kid).ok_or_else(|| Self::not_found(&state, kid))
    }

    fn not_found(state: &State, kid: Option<&str>) -> KeySetError {
        if state.keys.is_empty() {
            state.last_error.clone().unwrap_or(KeySetError::NoKeys)
        } else {
            KeySetError::UnknownKey(kid.map(str::to_owned))
        }
    }

    /// The key for a token's `kid`. Fetches the set when the key is unknown or the cache has
    /// expired, at most once per minimum refresh interval, sharing a fetch under way; when the
    /// fetch fails, the last good keys answer.
    ///
    /// Errors: [`KeySetError::UnknownKey`] when keys are cached but none matches; otherwise
    /// (nothing cached) the last fetch error, or [`KeySetError::NoKeys`].
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<PublishedKey>, KeySetError> {
        let seen = {
            let state = self.read();
            let now = self.inner.clock.now();
            let found = find(&state.keys, kid);
            let stale = state.expires_at.is_none_or(|t| now >= t);
            let may_fetch = state
                .last_attempt
                .is_none_or(|t| now.duration_since(t) >= self.inner.min_refresh_interval);
            match found {
                Some(key) if !stale => return Ok(key),
                found if !may_fetch => {
                    return found.ok_or_else(|| Self::not_found(&state, kid));
                }
                _ => state.attempts,
            }
        };
        {
            let _fetching = self.inner.fetching.lock().await;
            // The error is logged and kept; the last good keys still answer.
            let _ = self.fetch(Some(seen)).await;
        }
        self.cached_key(kid)
    }

    /// How many usable keys are cached.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    /// Whether no usable key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, JwtAuth};
    use axum::Router;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::net::SocketAddr;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use tokio::sync::{Notify, watch};

    const RS256: &[u8] = include_bytes!("../../tests/keys/rs256-private.pem");
    const RS256_ROTATED: &[u8] = include_bytes!("../../tests/keys/rs256-rotated-private.pem");
    const ES256: &[u8] = include_bytes!("../../tests/keys/es256-private.pem");
    const ES384: &[u8] = include_bytes!("../../tests/keys/es384-private.pem");
    const ED25519: &[u8] = include_bytes!("../../tests/keys/ed25519-private.pem");

    /// A fake identity provider: discovery + JWKS, counting requests.
    struct Provider {
        addr: SocketAddr,
        issuer: StdMutex<String>,
        jwks: StdMutex<Value>,
        cache_control: StdMutex<Option<String>>,
        failing: AtomicBool,
        jwks_hits: AtomicUsize,
        discovery_hits: AtomicUsize,
        /// While `false`, JWKS requests wait (to hold a fetch in flight).
        gate: watch::Sender<bool>,
        entered: Notify,
    }

    async fn discovery(State(p): State<Arc<Provider>>) -> Response {
        p.discovery_hits.fetch_add(1, Ordering::SeqCst);
        if p.failing.load(Ordering::SeqCst) {
            return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let issuer = p.issuer.lock().unwrap().clone();
        axum::Json(json!({
            "issuer": issuer,
            "jwks_uri": format!("http://{}/jwks", p.addr),
            "authorization_endpoint": format!("http://{}/authorize", p.addr),
            "token_endpoint": format!("http://{}/token", p.addr),
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
        }))
        .into_response()
    }

    async fn jwks(State(p): State<Arc<Provider>>) -> Response {
        p.jwks_hits.fetch_add(1, Ordering::SeqCst);
        p.entered.notify_one();
        let mut gate = p.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        if p.failing.load(Ordering::SeqCst) {
            return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let body = p.jwks.lock().unwrap().clone();
        let mut response = axum::Json(body).into_response();
        if let Some(cc) = p.cache_control.lock().unwrap().clone() {
            response
                .headers_mut()
                .insert(CACHE_CONTROL, cc.parse().unwrap());
        }
        response
    }

    impl Provider {
        async fn start(keys: Value) -> Arc<Provider> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let provider = Arc::new(Provider {
                addr,
                issuer: StdMutex::new(format!("http://{addr}")),
                jwks: StdMutex::new(keys),
                cache_control: StdMutex::new(None),
                failing: AtomicBool::new(false),
                jwks_hits: AtomicUsize::new(0),
                discovery_hits: AtomicUsize::new(0),
                gate: watch::Sender::new(true),
                entered: Notify::new(),
            });
            let app = Router::new()
                .route("/.well-known/openid-configuration", get(discovery))
                .route("/jwks", get(jwks))
                .with_state(provider.clone());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            provider
        }

        fn issuer(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn hits(&self) -> usize {
            self.jwks_hits.load(Ordering::SeqCst)
        }

        fn publish(&self, keys: Value) {
            *self.jwks.lock().unwrap() = keys;
        }

        fn key_set(&self) -> KeySetBuilder {
            KeySet::discover(self.issuer())
        }
    }

    fn encoding_key(alg: Algorithm, pem: &[u8]) -> EncodingKey {
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem).unwrap(),
        }
    }

    /// The public JWK of a private key, with `alg` only when `with_alg`.
    fn jwk(alg: Algorithm, pem: &[u8], kid: Option<&str>, with_alg: bool) -> Value {
        let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, pem), alg).unwrap();
        jwk.common.key_id = kid.map(str::to_owned);
        if !with_alg {
            jwk.common.key_algorithm = None;
        }
        serde_json::to_value(jwk).unwrap()
    }

    fn jwks_of(keys: &[Value]) -> Value {
        json!({ "keys": keys })
    }

    fn token(alg: Algorithm, pem: &[u8], kid: Option<&str>, issuer: &str) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let claims = json!({
            "sub": "alice",
            "iss": issuer,
            "exp": jsonwebtoken::get_current_timestamp() + 300,
        });
        jsonwebtoken::encode(&header, &claims, &encoding_key(alg, pem)).unwrap()
    }

    fn auth(set: &KeySet, issuer: &str) -> JwtAuth {
        JwtAuth::builder()
            .key_set(set.clone())
            .issuer(issuer)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn rsa_ec_and_ed25519_tokens_are_verified_with_inferred_or_declared_algorithms() {
        let provider = Provider::start(jwks_of(&[
            jwk(Algorithm::RS256, RS256, Some("rsa"), false),
            jwk(Algorithm::ES256, ES256, Some("p256"), false),
            jwk(Algorithm::ES384, ES384, Some("p384"), false),
            jwk(Algorithm::EdDSA, ED25519, Some("ed"), false),
            jwk(Algorithm::PS256, RS256_ROTATED, Some("pss"), true),
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}),
        ]))
        .await;
        let set = provider.key_set().build().unwrap();
        // Nothing fetched before the first use; the symmetric key is ignored.
        assert_eq!(provider.hits(), 0);
        assert_eq!(set.prefetch().await, Ok(5));
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        for (alg, pem, kid) in [
            (Algorithm::RS256, RS256, "rsa"),
            (Algorithm::ES256, ES256, "p256"),
            (Algorithm::ES384, ES384, "p384"),
            (Algorithm::EdDSA, ED25519, "ed"),
            (Algorithm::PS256, RS256_ROTATED, "pss"),
        ] {
            let principal = auth
                .validate_async(&token(alg, pem, Some(kid), &issuer))
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(principal.user_id(), Some("alice"));
            assert_eq!(set.cached_key(Some(kid)).unwrap().algorithm(), alg);
            // The sync form sees the cached keys.
            assert!(auth.validate(&token(alg, pem, Some(kid), &issuer)).is_ok());
        }
        assert_eq!(
            set.cached_key(Some("hmac")).unwrap_err(),
            KeySetError::UnknownKey(Some("hmac".into()))
        );
        assert_eq!(provider.hits(), 1);
        assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_algorithm_is_pinned_by_the_key_never_by_the_token() {
        let provider = Provider::start(jwks_of(&[
            jwk(Algorithm::RS256, RS256, Some("rsa"), false),
            jwk(Algorithm::PS256, RS256_ROTATED, Some("pss"), true),
        ]))
        .await;
        let set = provider.key_set().build().unwrap();
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        // The same RSA key, another RSA algorithm.
        let rs384 = token(Algorithm::RS384, RS256, Some("rsa"), &issuer);
        assert_eq!(
            auth.validate_async(&rs384).await,
            Err(AuthError::AlgorithmNotAllowed)
        );
        let rs256_on_pss = token(Algorithm::RS256, RS256_ROTATED, Some("pss"), &issuer);
        assert_eq!(
            auth.validate_async(&rs256_on_pss).await,
            Err(AuthError::AlgorithmNotAllowed)
        );
        // HS256 "signed" with the public key as the secret (algorithm confusion).
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        let confused = jsonwebtoken::encode(
            &header,
            &json!({"sub": "mallory", "iss": issuer, "exp": jsonwebtoken::get_current_timestamp() + 60}),
            &EncodingKey::from_secret(b"n-and-e-of-the-public-key-n-and-e-of-the-public-key").unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth.validate_async(&confused).await,
            Err(AuthError::AlgorithmNotAllowed)
        );
        // A key whose declared `alg` does not fit its type is not used at all.
        assert_eq!(
            pinned_algorithm(
                &serde_json::from_value(json!({
                    "kty": "EC", "crv": "P-256", "alg": "RS256", "kid": "x",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
                }))
                .unwrap()
            ),
            None
        );
    }

    #[tokio::test]
    async fn concurrent_lookups_of_an_unknown_kid_share_one_fetch() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::ES256, ES256, Some("a"), false)])).await;
        // No minimum interval: only single flight can keep this to one fetch.
        let set = provider
            .key_set()
            .min_refresh_interval(Duration::ZERO)
            .build()
            .unwrap();
        set.discovery().await.unwrap();
        provider.gate.send_replace(false);
        let lookups: Vec<_> = (0..16)
            .map(|_| {
                let set = set.clone();
                tokio::spawn(async move { set.key(Some("a")).await.map(|k| k.algorithm()) })
            })
            .collect();
        // The first fetch is in flight (held by the gate) while every lookup waits for it.
        provider.entered.notified().await;
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
        provider.gate.send_replace(true);
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap(), Ok(Algorithm::ES256));
        }
        assert_eq!(provider.hits(), 1);
    }

    #[tokio::test]
    async fn a_flood_of_forged_kids_costs_one_fetch_per_interval() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::ES256, ES256, Some("a"), false)])).await;
        let set = provider.key_set().build().unwrap();
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        for i in 0..100 {
            let forged = token(
                Algorithm::ES256,
                ES256,
                Some(&format!("forged-{i}")),
                &issuer,
            );
            assert_eq!(
                auth.validate_async(&forged).await,
                Err(AuthError::UnknownKey)
            );
        }
        assert_eq!(provider.hits(), 1);
        set.advance_clock(DEFAULT_MIN_REFRESH_INTERVAL + Duration::from_secs(1));
        for i in 0..100 {
            let forged = token(
                Algorithm::ES256,
                ES256,
                Some(&format!("again-{i}")),
                &issuer,
            );
            assert_eq!(
                auth.validate_async(&forged).await,
                Err(AuthError::UnknownKey)
            );
        }
        assert_eq!(provider.hits(), 2);
        // The real key still works without a fetch.
        let good = token(Algorithm::ES256, ES256, Some("a"), &issuer);
        assert!(auth.validate_async(&good).await.is_ok());
        assert_eq!(provider.hits(), 2);
    }

    #[tokio::test]
    async fn the_last_good_keys_are_kept_while_the_provider_fails() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::RS256, RS256, Some("a"), true)])).await;
        let set = provider.key_set().build().unwrap();
        assert_eq!(set.prefetch().await, Ok(1));
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        provider.failing.store(true, Ordering::SeqCst);
        // Expired cache: the refetch fails, the cached key still answers.
        set.advance_clock(DEFAULT_TTL + Duration::from_secs(1));
        let good = token(Algorithm::RS256, RS256, Some("a"), &issuer);
        assert!(auth.validate_async(&good).await.is_ok());
        assert_eq!(provider.hits(), 2);
        assert!(matches!(
            set.prefetch().await,
            Err(KeySetError::Status { status: 500, .. })
        ));
        assert!(auth.validate_async(&good).await.is_ok());
        // An unknown kid is unknown, not "unavailable": keys are cached.
        let other = token(Algorithm::RS256, RS256, Some("b"), &issuer);
        set.advance_clock(DEFAULT_MIN_REFRESH_INTERVAL);
        assert_eq!(
            auth.validate_async(&other).await,
            Err(AuthError::UnknownKey)
        );
        assert_eq!(set.len(), 1);
    }

    #[tokio::test]
    async fn a_key_rotated_out_is_refused_after_the_refetch() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::RS256, RS256, Some("old"), true)])).await;
        let set = provider.key_set().build().unwrap();
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        let old = token(Algorithm::RS256, RS256, Some("old"), &issuer);
        let new = token(Algorithm::RS256, RS256_ROTATED, Some("new"), &issuer);
        assert!(auth.validate_async(&old).await.is_ok());
        provider.publish(jwks_of(&[jwk(
            Algorithm::RS256,
            RS256_ROTATED,
            Some("new"),
            true,
        )]));
        set.advance_clock(DEFAULT_MIN_REFRESH_INTERVAL);
        assert!(auth.validate_async(&new).await.is_ok());
        assert_eq!(provider.hits(), 2);
        assert_eq!(auth.validate_async(&old).await, Err(AuthError::UnknownKey));
        assert_eq!(auth.validate(&old), Err(AuthError::UnknownKey));
    }

    #[tokio::test]
    async fn cache_control_max_age_is_honoured_and_clamped() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::ES256, ES256, Some("a"), false)])).await;
        *provider.cache_control.lock().unwrap() = Some("public, max-age=120".into());
        let set = provider.key_set().build().unwrap();
        set.prefetch().await.unwrap();
        set.advance_clock(Duration::from_secs(119));
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 1);
        set.advance_clock(Duration::from_secs(2));
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 2, "stale after max-age");

        // Without max-age the configured TTL applies.
        *provider.cache_control.lock().unwrap() = None;
        let set = provider
            .key_set()
            .ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        set.prefetch().await.unwrap();
        set.advance_clock(Duration::from_secs(599));
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 3);
        set.advance_clock(Duration::from_secs(2));
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 4);

        // `no-store` is clamped to the minimum refresh interval, not a fetch per token.
        *provider.cache_control.lock().unwrap() = Some("no-store".into());
        let set = provider.key_set().build().unwrap();
        set.prefetch().await.unwrap();
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 5);
        set.advance_clock(DEFAULT_MIN_REFRESH_INTERVAL);
        set.key(Some("a")).await.unwrap();
        assert_eq!(provider.hits(), 6);

        assert_eq!(
            max_age("max-age=5, must-revalidate"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(max_age("Max-Age=\"7\""), Some(Duration::from_secs(7)));
        assert_eq!(max_age("private"), None);
        assert_eq!(set.cache_ttl(Some(Duration::from_secs(u64::MAX))), MAX_TTL);
    }

    #[tokio::test]
    async fn a_provider_down_at_start_is_retried_after_the_interval() {
        let provider =
            Provider::start(jwks_of(&[jwk(Algorithm::EdDSA, ED25519, Some("a"), false)])).await;
        provider.failing.store(true, Ordering::SeqCst);
        // Builds without the network.
        let set = provider.key_set().build().unwrap();
        let issuer = provider.issuer();
        let auth = auth(&set, &issuer);
        let good = token(Algorithm::EdDSA, ED25519, Some("a"), &issuer);
        assert_eq!(
            auth.validate_async(&good).await,
            Err(AuthError::KeysUnavailable)
        );
        assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), 1);
        assert!(matches!(
            set.key(Some("a")).await,
            Err(KeySetError::Status { status: 500, .. })
        ));
        // Within the interval: no new request.
        assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), 1);
        assert_eq!(auth.validate(&good), Err(AuthError::KeysUnavailable));
        provider.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            auth.validate_async(&good).await,
            Err(AuthError::KeysUnavailable)
        );
        set.advance_clock(DEFAULT_MIN_REFRESH_INTERVAL);
        assert!(auth.validate_async(&good).await.is_ok());
        assert_eq!(provider.discovery_hits.load(Ordering::SeqCst), 2);
        assert_eq!(provider.hits(), 1);
    }

    #[tokio::test]
    async fn discovery_checks_the_issuer_and_exposes_the_document() {
        let provider = Provider::start(jwks_of(&[jwk(Algorithm::ES256, ES256, None, false)])).await;
        // A trailing slash on either side is tolerated.
        let set = KeySet::discover(format!("{}/", provider.issuer()))
            .build()
            .unwrap();
        let metadata = set.discovery().await.unwrap();
        assert_eq!(metadata.issuer(), provider.issuer());
        assert_eq!(
            metadata.token_endpoint(),
            Some(format!("{}/token", provider.issuer()).as_str())
        );
        assert!(metadata.authorization_endpoint().is_some());
        assert_eq!(
            metadata.token_endpoint_auth_methods_supported(),
            ["none", "client_secret_basic"]
        );
        assert_eq!(metadata.raw()["jwks_uri"], metadata.jwks_uri());
        // A single key without kid serves tokens with or without one.
        assert!(set.key(None).await.is_ok());
        assert!(set.key(Some("whatever")).await.is_ok());

        *provider.issuer.lock().unwrap() = "https://evil.example".into();
        let set = provider.key_set().build().unwrap();
        assert!(matches!(
            set.discovery().await,
            Err(KeySetError::IssuerMismatch { .. })
        ));
        assert!(matches!(
            set.prefetch().await,
            Err(KeySetError::IssuerMismatch { .. })
        ));

        // A JWKS URL directly.
        let set = KeySet::jwks(format!("{}/jwks", provider.issuer()))
            .build()
            .unwrap();
        assert_eq!(set.discovery().await.unwrap_err(), KeySetError::NoDiscovery);
        assert_eq!(set.prefetch().await, Ok(1));
        assert_eq!(set.issuer(), None);
    }

    #[test]
    fn kidless_tokens_need_a_single_key() {
        let key = |kid: Option<&str>| {
            Arc::new(PublishedKey {
                kid: kid.map(str::to_owned),
                algorithm: Algorithm::ES256,
                key: DecodingKey::from_secret(b"unused").unwrap(),
            })
        };
        let two = [key(Some("a")), key(None)];
        assert!(find(&two, None).is_none());
        assert!(find(&two, Some("b")).is_none());
        assert_eq!(find(&two, Some("a")).unwrap().kid(), Some("a"));
        let one = [key(Some("a"))];
        assert_eq!(find(&one, None).unwrap().kid(), Some("a"));
        assert!(find(&one, Some("b")).is_none());
    }
}
