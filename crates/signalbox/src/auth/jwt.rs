//! JWT bearer authentication: validating tokens and reading them from requests.
//!
//! Tokens come from `Authorization: Bearer …` on every route, and additionally from the
//! `access_token` query parameter on hub routes only (browsers cannot set headers on WebSocket and
//! EventSource requests). Algorithms are pinned per key and `none` is never accepted.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

#[cfg(feature = "jwks")]
use super::key_set::{KeySet, KeySetError, PublishedKey};
use super::principal::Principal;

/// Default upper bound on the length of a token, in bytes.
pub const DEFAULT_MAX_TOKEN_LENGTH: usize = 8 * 1024;

/// Why a token was refused. The variant names are safe to log; the token never is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("no bearer token")]
    Missing,
    /// The token is longer than the configured maximum.
    #[error("token too large")]
    TooLarge,
    /// The token is not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// The token's algorithm is not allowed for any configured key. (`alg: none` is not an
    /// algorithm the decoder knows: such a token is [`AuthError::Malformed`].)
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The token names a key id that is not configured.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf`).
    #[error("token not yet valid")]
    NotYetValid,
    /// The issuer is not accepted.
    #[error("invalid issuer")]
    InvalidIssuer,
    /// The audience is not accepted.
    #[error("invalid audience")]
    InvalidAudience,
    /// A required claim is missing or has the wrong type.
    #[error("invalid claims")]
    InvalidClaims,
    /// The header's `typ` is not the one required for the key (RFC 8725 §3.11 explicit
    /// typing; see [`JwtAuthBuilder::required_type`]).
    #[error("invalid token type")]
    InvalidType,
    /// The token is valid but its session or account has ended (an application authenticator's
    /// verdict).
    #[error("session or account revoked")]
    Revoked,
    /// The token is valid but names no known user (an application authenticator's verdict).
    #[error("unknown user")]
    UnknownUser,
    /// The key set could not be fetched and no key is cached, so the token cannot be checked.
    #[error("verification keys unavailable")]
    KeysUnavailable,
    /// Refused by an application authenticator for its own reason: a short stable label (for
    /// metrics, so keep the set of labels small), returned by [`AuthError::reason`].
    #[error("rejected: {0}")]
    Rejected(&'static str),
}

impl AuthError {
    /// A short stable label, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed => "algorithm",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::InvalidSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::InvalidIssuer => "issuer",
            AuthError::InvalidAudience => "audience",
            AuthError::InvalidClaims => "claims",
            AuthError::InvalidType => "type",
            AuthError::Revoked => "revoked",
            AuthError::UnknownUser => "unknown_user",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::Rejected(reason) => reason,
        }
    }
}

/// Errors building a [`JwtAuth`] from configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// A key could not be parsed.
    #[error("invalid {kind} key: {source}")]
    InvalidKey {
        /// Which kind of key.
        kind: &'static str,
        /// The parser's error.
        source: jsonwebtoken::errors::Error,
    },
    /// An HMAC secret is shorter than 32 bytes.
    #[error("the HMAC secret must be at least 32 bytes long (got {0})")]
    WeakSecret(usize),
    /// An algorithm was configured for a key of another family.
    #[error("algorithm {0:?} does not match the key type")]
    AlgorithmMismatch(Algorithm),
    /// No key (and no key set) was configured.
    #[error("no verification key configured")]
    NoKeys,
    /// [`JwtAuthBuilder::required_type`] was called before any key was added, so it would
    /// apply to no key.
    #[error("required_type was set before any key was added")]
    TypeBeforeKeys,
    /// [`JwtAuthBuilder::required_type`] was given an empty type.
    #[error("the required token type is empty")]
    EmptyType,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// The `typ` header tokens verified with this key must carry (normalised, see
    /// [`normalise_type`]), if any.
    required_type: Option<String>,
}

/// A media type as `typ` compares it: without an `application/` prefix, in lower case
/// (RFC 7515 §4.1.9 allows omitting the prefix; media types compare case-insensitively).
fn normalise_type(typ: &str) -> String {
    let typ = typ.trim().to_ascii_lowercase();
    match typ.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => typ,
    }
}

/// Whether a header `typ` satisfies a key's requirement.
fn type_matches(header_typ: Option<&str>, required: Option<&str>) -> bool {
    match required {
        None => true,
        Some(required) => header_typ.is_some_and(|typ| normalise_type(typ) == required),
    }
}

/// A remote key set and the `typ` its tokens must carry.
#[cfg(feature = "jwks")]
struct KeySetEntry {
    set: KeySet,
    required_type: Option<String>,
}

struct Inner {
    keys: Vec<Key>,
    #[cfg(feature = "jwks")]
    key_sets: Vec<KeySetEntry>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_secs: u64,
    user_id_claim: String,
    max_token_length: usize,
    require_exp: bool,
}

/// Validates JWT bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct JwtAuth {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("JwtAuth");
        debug.field("keys", &self.inner.keys.len());
        #[cfg(feature = "jwks")]
        debug.field(
            "key_sets",
            &self
                .inner
                .key_sets
                .iter()
                .map(|entry| &entry.set)
                .collect::<Vec<_>>(),
        );
        debug
            .field("issuers", &self.inner.issuers)
            .field("audiences", &self.inner.audiences)
            .field("leeway_secs", &self.inner.leeway_secs)
            .field("user_id_claim", &self.inner.user_id_claim)
            .finish()
    }
}

impl JwtAuth {
    /// A validator for HS256 tokens signed with `secret` (at least 32 bytes), with default settings.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, JwtConfigError> {
        JwtAuth::builder()
            .hmac_secret(secret, &[Algorithm::HS256])?
            .build()
    }

    /// Starts a builder.
    pub fn builder() -> JwtAuthBuilder {
        JwtAuthBuilder::default()
    }

    /// The claim that names the user (default `sub`).
    pub fn user_id_claim(&self) -> &str {
        &self.inner.user_id_claim
    }

    /// Validates a token with the static keys and returns its principal.
    ///
    /// Synchronous: with key sets (`JwtAuthBuilder::key_set`) it only consults their *cached*
    /// keys (never fetches, and the cache may be stale), so a token of a key not cached yet is
    /// refused with [`AuthError::UnknownKey`]. Use [`JwtAuth::validate_async`] (or the [`Authenticator`]
    /// implementation) when key sets are configured.
    ///
    /// [`Authenticator`]: super::Authenticator
    pub fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let header = self.header(token)?;
        let result = self.validate_static(token, &header);
        #[cfg(feature = "jwks")]
        if self.try_key_sets(&result) {
            let mut error = AuthError::UnknownKey;
            for entry in &self.inner.key_sets {
                if let Some(key) = found(entry.set.cached_key(header.kid.as_deref()), &mut error) {
                    return self.verify_published(token, &header, &key, entry);
                }
            }
            return Err(error);
        }
        result
    }

    /// Validates a token and returns its principal: with the static keys, then with the
    /// key sets (`JwtAuthBuilder::key_set`), fetching them when a token names a key not cached yet
    /// or the cache has expired.
    pub async fn validate_async(&self, token: &str) -> Result<Principal, AuthError> {
        let header = self.header(token)?;
        let result = self.validate_static(token, &header);
        #[cfg(feature = "jwks")]
        if self.try_key_sets(&result) {
            let mut error = AuthError::UnknownKey;
            for entry in &self.inner.key_sets {
                let key = entry.set.key(header.kid.as_deref()).await;
                if let Some(key) = found(key, &mut error) {
                    return self.verify_published(token, &header, &key, entry);
                }
            }
            return Err(error);
        }
        result
    }

    fn header(&self, token: &str) -> Result<jsonwebtoken::Header, AuthError> {
        if token.len() > self.inner.max_token_length {
            return Err(AuthError::TooLarge);
        }
        jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)
    }

    /// Whether a refusal by the static keys leaves the key sets to try.
    #[cfg(feature = "jwks")]
    fn try_key_sets(&self, result: &Result<Principal, AuthError>) -> bool {
        !self.inner.key_sets.is_empty()
            && matches!(
                result,
                Err(AuthError::AlgorithmNotAllowed | AuthError::UnknownKey)
            )
    }

    #[cfg(feature = "jwks")]
    fn verify_published(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        key: &PublishedKey,
        entry: &KeySetEntry,
    ) -> Result<Principal, AuthError> {
        // The key's algorithm is pinned: the token's `alg` must be that one.
        if header.alg != key.algorithm() {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if !type_matches(header.typ.as_deref(), entry.required_type.as_deref()) {
            return Err(AuthError::InvalidType);
        }
        jsonwebtoken::decode::<Map<String, Value>>(
            token,
            key.decoding_key(),
            &self.validation(key.algorithm()),
        )
        .map(|data| Principal::new(data.claims, &self.inner.user_id_claim))
        .map_err(|err| map_error(err.kind()))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let inner = &*self.inner;
        let mut validation = Validation::new(alg);
        validation.leeway = inner.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_exp = inner.require_exp;
        if inner.require_exp {
            validation.set_required_spec_claims(&["exp"]);
        } else {
            validation.required_spec_claims.clear();
        }
        if inner.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&inner.issuers);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if inner.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&inner.audiences);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        validation
    }

    fn validate_static(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Principal, AuthError> {
        let inner = &*self.inner;
        let mut candidates = inner
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) if inner.keys.iter().any(|k| k.kid.is_some()) => {
                let matching: Vec<&Key> = candidates
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if matching.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                matching
            }
            _ => candidates.collect(),
        };

        let validation = self.validation(header.alg);
        let mut last = AuthError::InvalidSignature;
        let mut wrong_type = false;
        for key in candidates {
            if !type_matches(header.typ.as_deref(), key.required_type.as_deref()) {
                wrong_type = true;
                continue;
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(Principal::new(data.claims, &inner.user_id_claim)),
                Err(err) => {
                    last = map_error(err.kind());
                    if last != AuthError::InvalidSignature {
                        break;
                    }
                }
            }
        }
        if wrong_type && last == AuthError::InvalidSignature {
            // A key that would have been tried requires another `typ`: say so rather than
            // blaming the signature of a key the token was not made for.
            return Err(AuthError::InvalidType);
        }
        Err(last)
    }

    /// Reads and validates the bearer token of a request with [`JwtAuth::validate`] (so, with
    /// key sets, from their cached keys only). With `allow_query` the `access_token` query
    /// parameter is accepted when no `Authorization` header is present (hub routes only).
    ///
    /// The [`Authenticator`](super::Authenticator) implementation is the asynchronous form that
    /// fetches key sets.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        allow_query: bool,
    ) -> Result<Principal, AuthError> {
        let token = bearer_token(headers, if allow_query { query } else { None })
            .ok_or(AuthError::Missing)?;
        self.validate(&token)
    }
}

/// The key a key set found; otherwise records why none was (an unknown key id unless a set could
/// not be fetched).
#[cfg(feature = "jwks")]
fn found(
    lookup: Result<Arc<PublishedKey>, KeySetError>,
    error: &mut AuthError,
) -> Option<Arc<PublishedKey>> {
    match lookup {
        Ok(key) => Some(key),
        Err(KeySetError::UnknownKey(_)) => None,
        Err(_) => {
            *error = AuthError::KeysUnavailable;
            None
        }
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::InvalidClaims
        }
        _ => AuthError::Malformed,
    }
}

/// The bearer token of a request: the `Authorization: Bearer` header, else (when `query` is given)
/// the `access_token` query parameter.
pub fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("access_token"))
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
}

/// Builder for [`JwtAuth`].
pub struct JwtAuthBuilder {
    keys: Vec<Key>,
    #[cfg(feature = "jwks")]
    key_sets: Vec<KeySetEntry>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway_secs: u64,
    user_id_claim: String,
    max_token_length: usize,
    require_exp: bool,
    config_error: Option<JwtConfigError>,
}

impl fmt::Debug for JwtAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthBuilder")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Default for JwtAuthBuilder {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            #[cfg(feature = "jwks")]
            key_sets: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_secs: 30,
            user_id_claim: "sub".to_owned(),
            max_token_length: DEFAULT_MAX_TOKEN_LENGTH,
            require_exp: true,
            config_error: None,
        }
    }
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];

fn check_family(algorithms: &[Algorithm], family: &[Algorithm]) -> Result<(), JwtConfigError> {
    match algorithms.iter().find(|a| !family.contains(a)) {
        Some(alg) => Err(JwtConfigError::AlgorithmMismatch(*alg)),
        None => Ok(()),
    }
}

impl JwtAuthBuilder {
    /// Adds an HMAC secret (at least 32 bytes) for the given HS* algorithms.
    pub fn hmac_secret(
        mut self,
        secret: impl AsRef<[u8]>,
        algorithms: &[Algorithm],
    ) -> Result<Self, JwtConfigError> {
        let secret = secret.as_ref();
        if secret.len() < 32 {
            return Err(JwtConfigError::WeakSecret(secret.len()));
        }
        check_family(algorithms, &HMAC)?;
        let key =
            DecodingKey::from_secret(secret).map_err(|source| JwtConfigError::InvalidKey {
                kind: "HMAC",
                source,
            })?;
        self.keys.push(Key {
            kid: None,
            key,
            algorithms: algorithms.to_vec(),
            required_type: None,
        });
        Ok(self)
    }

    /// Adds an RSA public key (PEM) for the given RS*/PS* algorithms, optionally with a key id.
    pub fn rsa_pem(
        mut self,
        pem: &[u8],
        algorithms: &[Algorithm],
        kid: Option<&str>,
    ) -> Result<Self, JwtConfigError> {
        check_family(algorithms, &RSA)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| JwtConfigError::InvalidKey {
            kind: "RSA",
            source,
        })?;
        self.keys.push(Key {
            kid: kid.map(str::to_owned),
            key,
            algorithms: algorithms.to_vec(),
            required_type: None,
        });
        Ok(self)
    }

    /// Adds an EC public key (PEM) for ES256 or ES384, optionally with a key id.
    pub fn ec_pem(
        mut self,
        pem: &[u8],
        algorithms: &[Algorithm],
        kid: Option<&str>,
    ) -> Result<Self, JwtConfigError> {
        check_family(algorithms, &EC)?;
        let key = DecodingKey::from_ec_pem(pem)
            .map_err(|source| JwtConfigError::InvalidKey { kind: "EC", source })?;
        self.keys.push(Key {
            kid: kid.map(str::to_owned),
            key,
            algorithms: algorithms.to_vec(),
            required_type: None,
        });
        Ok(self)
    }

    /// Adds a ready decoding key (for example from a JWKS document) for the given algorithms.
    pub fn decoding_key(
        mut self,
        key: DecodingKey,
        algorithms: &[Algorithm],
        kid: Option<&str>,
    ) -> Self {
        self.keys.push(Key {
            kid: kid.map(str::to_owned),
            key,
            algorithms: algorithms.to_vec(),
            required_type: None,
        });
        self
    }

    /// Verifies tokens with the keys of a remote key set (JWKS, usually found through OpenID
    /// Connect discovery), following the provider's rotations; together with static keys or
    /// instead of them. Tokens are tried with the static keys first. Each key's algorithm is
    /// pinned by the key set, so the algorithm of the token must be the key's.
    ///
    /// One `JwtAuth` trusts one issuer: set [`JwtAuthBuilder::issuer`] (and
    /// [`JwtAuthBuilder::audience`]) to the provider's. Key sets need the asynchronous
    /// validation ([`JwtAuth::validate_async`], the [`Authenticator`](super::Authenticator)
    /// implementation); [`JwtAuth::validate`] only sees keys already cached.
    #[cfg(feature = "jwks")]
    pub fn key_set(mut self, key_set: KeySet) -> Self {
        self.key_sets.push(KeySetEntry {
            set: key_set,
            required_type: None,
        });
        self
    }

    /// Requires explicit typing (RFC 8725 §3.11, RFC 9068 §2.1) on the tokens verified with the
    /// keys (and key sets) added **so far**: their `typ` header must be `typ`, compared
    /// case-insensitively and with or without the `application/` prefix (`at+jwt` matches
    /// `application/AT+JWT`). A token without `typ` or with another one is refused with
    /// [`AuthError::InvalidType`]. Keys added after this call (another issuer's, whose tokens are
    /// typed differently) are not affected.
    ///
    /// [`JwtAuthBuilder::build`] fails with [`JwtConfigError::TypeBeforeKeys`] when no key was
    /// added before this call, and with [`JwtConfigError::EmptyType`] for an empty type.
    pub fn required_type(mut self, typ: impl AsRef<str>) -> Self {
        let typ = normalise_type(typ.as_ref());
        if typ.is_empty() {
            self.config_error.get_or_insert(JwtConfigError::EmptyType);
        } else if !self.has_keys() {
            self.config_error
                .get_or_insert(JwtConfigError::TypeBeforeKeys);
        } else {
            for key in &mut self.keys {
                key.required_type = Some(typ.clone());
            }
            #[cfg(feature = "jwks")]
            for entry in &mut self.key_sets {
                entry.required_type = Some(typ.clone());
            }
        }
        self
    }

    /// Accepts only tokens whose `iss` is one of these (and requires `iss`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts only tokens whose `aud` contains one of these (and requires `aud`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Clock-skew leeway for `exp` and `nbf`, in seconds. Defaults to 30.
    pub fn leeway_secs(mut self, leeway: u64) -> Self {
        self.leeway_secs = leeway;
        self
    }

    /// The claim used as the user id. Defaults to `sub`.
    pub fn user_id_claim(mut self, claim: impl Into<String>) -> Self {
        self.user_id_claim = claim.into();
        self
    }

    /// Maximum token length in bytes. Defaults to 8 KiB.
    pub fn max_token_length(mut self, max: usize) -> Self {
        self.max_token_length = max;
        self
    }

    /// Whether tokens must carry `exp`. Defaults to `true`.
    pub fn require_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    fn has_keys(&self) -> bool {
        #[cfg(feature = "jwks")]
        if !self.key_sets.is_empty() {
            return true;
        }
        !self.keys.is_empty()
    }

    /// Finishes the validator.
    pub fn build(self) -> Result<JwtAuth, JwtConfigError> {
        if let Some(error) = self.config_error {
            return Err(error);
        }
        if !self.has_keys() {
            return Err(JwtConfigError::NoKeys);
        }
        Ok(JwtAuth {
            inner: Arc::new(Inner {
                keys: self.keys,
                #[cfg(feature = "jwks")]
                key_sets: self.key_sets,
                issuers: self.issuers,
                audiences: self.audiences,
                leeway_secs: self.leeway_secs,
                user_id_claim: self.user_id_claim,
                max_token_length: self.max_token_length,
                require_exp: self.require_exp,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    fn auth() -> JwtAuth {
        JwtAuth::hs256(SECRET).unwrap()
    }

    #[test]
    fn accepts_a_valid_token() {
        let t = token(
            &json!({"sub": "alice", "exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        let p = auth().validate(&t).unwrap();
        assert_eq!(p.user_id(), Some("alice"));
    }

    #[test]
    fn rejects_bad_tokens_with_reasons() {
        let a = auth();
        let expired = token(
            &json!({"sub": "a", "exp": now() - 120}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(a.validate(&expired), Err(AuthError::Expired));
        let wrong = token(
            &json!({"sub": "a", "exp": now() + 60}),
            Algorithm::HS256,
            b"another-secret-another-secret-another",
        );
        assert_eq!(a.validate(&wrong), Err(AuthError::InvalidSignature));
        let hs512 = token(
            &json!({"sub": "a", "exp": now() + 60}),
            Algorithm::HS512,
            SECRET,
        );
        assert_eq!(a.validate(&hs512), Err(AuthError::AlgorithmNotAllowed));
        let early = token(
            &json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(a.validate(&early), Err(AuthError::NotYetValid));
        let no_exp = token(&json!({"sub": "a"}), Algorithm::HS256, SECRET);
        assert_eq!(a.validate(&no_exp), Err(AuthError::InvalidClaims));
        assert_eq!(a.validate("garbage"), Err(AuthError::Malformed));
        assert_eq!(a.validate(&"a".repeat(10_000)), Err(AuthError::TooLarge));
    }

    #[test]
    fn rejects_alg_none() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60));
        let t = format!("{header}.{claims}.");
        assert!(auth().validate(&t).is_err());
    }

    #[test]
    fn leeway_tolerates_small_skew() {
        let t = token(
            &json!({"sub": "a", "exp": now() - 5}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(auth().validate(&t).is_ok());
    }

    #[test]
    fn issuer_and_audience() {
        let a = JwtAuth::builder()
            .hmac_secret(SECRET, &[Algorithm::HS256])
            .unwrap()
            .issuer("me")
            .audience("api")
            .build()
            .unwrap();
        let ok = token(
            &json!({"sub": "a", "exp": now() + 60, "iss": "me", "aud": "api"}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(a.validate(&ok).is_ok());
        let bad_iss = token(
            &json!({"sub": "a", "exp": now() + 60, "iss": "x", "aud": "api"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(a.validate(&bad_iss), Err(AuthError::InvalidIssuer));
        let bad_aud = token(
            &json!({"sub": "a", "exp": now() + 60, "iss": "me", "aud": "x"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(a.validate(&bad_aud), Err(AuthError::InvalidAudience));
        let no_iss = token(
            &json!({"sub": "a", "exp": now() + 60, "aud": "api"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(a.validate(&no_iss), Err(AuthError::InvalidClaims));
    }

    #[test]
    fn weak_secret_and_mismatched_algorithms_are_config_errors() {
        assert!(matches!(
            JwtAuth::hs256(b"short"),
            Err(JwtConfigError::WeakSecret(5))
        ));
        assert!(matches!(
            JwtAuth::builder().hmac_secret(SECRET, &[Algorithm::RS256]),
            Err(JwtConfigError::AlgorithmMismatch(Algorithm::RS256))
        ));
        assert!(matches!(
            JwtAuth::builder().build(),
            Err(JwtConfigError::NoKeys)
        ));
    }

    fn typed_token(claims: &Value, typ: Option<&str>, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    #[test]
    fn required_type_is_checked_case_insensitively_with_or_without_prefix() {
        let a = JwtAuth::builder()
            .hmac_secret(SECRET, &[Algorithm::HS256])
            .unwrap()
            .required_type("at+jwt")
            .build()
            .unwrap();
        let claims = json!({"sub": "a", "exp": now() + 60});
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            let t = typed_token(&claims, Some(typ), SECRET);
            assert!(a.validate(&t).is_ok(), "{typ}");
        }
        for typ in [Some("JWT"), Some("jwt"), Some(""), Some("at+jwt2"), None] {
            let t = typed_token(&claims, typ, SECRET);
            assert_eq!(a.validate(&t), Err(AuthError::InvalidType), "{typ:?}");
        }
        assert_eq!(AuthError::InvalidType.reason(), "type");
        // The signature is still checked for typed tokens.
        let forged = typed_token(
            &claims,
            Some("at+jwt"),
            b"another-secret-another-secret-another",
        );
        assert_eq!(a.validate(&forged), Err(AuthError::InvalidSignature));
    }

    #[test]
    fn required_type_applies_to_the_keys_added_before_it() {
        const OTHER: &[u8] = b"a-second-issuer-secret-0123456789abcdef";
        let a = JwtAuth::builder()
            .hmac_secret(SECRET, &[Algorithm::HS256])
            .unwrap()
            .required_type("application/at+jwt")
            .hmac_secret(OTHER, &[Algorithm::HS256])
            .unwrap()
            .build()
            .unwrap();
        let claims = json!({"sub": "a", "exp": now() + 60});
        // The second key's tokens need no particular type.
        assert!(
            a.validate(&typed_token(&claims, Some("JWT"), OTHER))
                .is_ok()
        );
        assert!(a.validate(&typed_token(&claims, None, OTHER)).is_ok());
        // The first key's do.
        assert!(
            a.validate(&typed_token(&claims, Some("at+jwt"), SECRET))
                .is_ok()
        );
        assert_eq!(
            a.validate(&typed_token(&claims, Some("JWT"), SECRET)),
            Err(AuthError::InvalidType)
        );
        // Without the option, `typ` is not looked at.
        assert!(
            auth()
                .validate(&typed_token(&claims, Some("whatever"), SECRET))
                .is_ok()
        );
    }

    #[test]
    fn required_type_misuse_is_a_config_error() {
        assert!(matches!(
            JwtAuth::builder()
                .required_type("at+jwt")
                .hmac_secret(SECRET, &[Algorithm::HS256])
                .unwrap()
                .build(),
            Err(JwtConfigError::TypeBeforeKeys)
        ));
        assert!(matches!(
            JwtAuth::builder()
                .hmac_secret(SECRET, &[Algorithm::HS256])
                .unwrap()
                .required_type(" ")
                .build(),
            Err(JwtConfigError::EmptyType)
        ));
    }

    #[test]
    fn bearer_token_sources() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            bearer_token(&headers, Some("access_token=abc&x=1")),
            Some("abc".into())
        );
        assert_eq!(bearer_token(&headers, None), None);
        headers.insert(AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(
            bearer_token(&headers, Some("access_token=abc")),
            Some("xyz".into())
        );
        headers.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer_token(&headers, None), None);
    }
}
