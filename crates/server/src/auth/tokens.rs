//! Access tokens: short-lived JWTs signed with HS256 (a secret) or RS256/ES256 (a private key,
//! whose public half is published at `/.well-known/jwks.json`), and the validator that accepts
//! them on REST routes and on the hub.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};
use signalbox::JwtAuth;
use signalbox::auth::JwtAuthBuilder;

use crate::clock::now_secs;

/// The `typ` header of access tokens (RFC 9068 §2.1), required on locally issued tokens so that
/// no other kind of JWT signed with the same key passes for one (RFC 8725 §3.11).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
use crate::config::{AuthConfig, ConfigError, SigningAlgorithm};

/// Why the token service could not be set up or a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No secret or key is configured.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The private key file could not be read.
    #[error("cannot read the JWT private key {path}: {cause}")]
    ReadKey {
        /// The file.
        path: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The key is not usable for the algorithm.
    #[error("invalid JWT signing key: {0}")]
    Key(jsonwebtoken::errors::Error),
    /// The validator rejected the key.
    #[error("invalid JWT validation key: {0}")]
    Validator(#[from] signalbox::auth::JwtConfigError),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// A signed access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

/// Signs access tokens and knows how to check them.
pub struct TokenService {
    encoding: EncodingKey,
    header: Header,
    issuer: String,
    audience: Option<String>,
    ttl: Duration,
    jwks: JwkSet,
    /// The local verification key and its algorithm, for building validators.
    verification: Verification,
}

enum Verification {
    Secret(String),
    Public {
        key: Box<Jwk>,
        algorithm: Algorithm,
        kid: String,
    },
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("alg", &self.header.alg)
            .field("kid", &self.header.kid)
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Sets up signing from the configuration (the secret must be present for HS256).
    pub fn new(config: &AuthConfig) -> Result<Self, TokenError> {
        let (encoding, header, jwks, verification) = match config.jwt_algorithm {
            SigningAlgorithm::HS256 => {
                let secret = config
                    .jwt_secret
                    .clone()
                    .ok_or(ConfigError::MissingSecret)?;
                let encoding =
                    EncodingKey::from_secret(secret.as_bytes()).map_err(TokenError::Key)?;
                let mut header = Header::new(Algorithm::HS256);
                header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
                header.kid = config.jwt_key_id.clone();
                (
                    encoding,
                    header,
                    JwkSet { keys: Vec::new() },
                    Verification::Secret(secret),
                )
            }
            SigningAlgorithm::RS256 | SigningAlgorithm::ES256 => {
                let path = config
                    .jwt_private_key
                    .as_ref()
                    .ok_or(ConfigError::MissingSecret)?;
                let pem = std::fs::read(path).map_err(|cause| TokenError::ReadKey {
                    path: path.display().to_string(),
                    cause,
                })?;
                let (algorithm, encoding) = if config.jwt_algorithm == SigningAlgorithm::RS256 {
                    (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem))
                } else {
                    (Algorithm::ES256, EncodingKey::from_ec_pem(&pem))
                };
                let encoding = encoding.map_err(TokenError::Key)?;
                let kid = config
                    .jwt_key_id
                    .clone()
                    .unwrap_or_else(|| "signalbox-1".to_owned());
                let mut jwk =
                    Jwk::from_encoding_key(&encoding, algorithm).map_err(TokenError::Key)?;
                jwk.common.key_id = Some(kid.clone());
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                jwk.common.key_algorithm = Some(if algorithm == Algorithm::RS256 {
                    KeyAlgorithm::RS256
                } else {
                    KeyAlgorithm::ES256
                });
                let mut header = Header::new(algorithm);
                header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
                header.kid = Some(kid.clone());
                let jwks = JwkSet {
                    keys: vec![jwk.clone()],
                };
                (
                    encoding,
                    header,
                    jwks,
                    Verification::Public {
                        key: Box::new(jwk),
                        algorithm,
                        kid,
                    },
                )
            }
        };
        Ok(Self {
            encoding,
            header,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_token_ttl,
            jwks,
            verification,
        })
    }

    /// The default lifetime of access tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The public keys (empty for HS256).
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs a token for `sub` with `claims` (which must not set the registered claims) and the
    /// given lifetime (default: the configured one).
    pub fn issue(
        &self,
        sub: &str,
        claims: &Map<String, Value>,
        ttl: Option<Duration>,
    ) -> Result<AccessToken, TokenError> {
        let ttl = ttl.unwrap_or(self.ttl).as_secs().max(1);
        let now = now_secs();
        let mut payload = claims.clone();
        payload.insert("sub".into(), Value::from(sub));
        payload.insert("iss".into(), Value::from(self.issuer.as_str()));
        if let Some(aud) = &self.audience {
            payload.insert("aud".into(), Value::from(aud.as_str()));
        }
        payload.insert("iat".into(), Value::from(now));
        payload.insert("exp".into(), Value::from(now + ttl));
        payload.insert("jti".into(), Value::from(uuid::Uuid::now_v7().to_string()));
        let token = jsonwebtoken::encode(&self.header, &payload, &self.encoding)
            .map_err(TokenError::Sign)?;
        Ok(AccessToken {
            token,
            expires_in: ttl,
        })
    }

    /// A validator builder with the local key and issuer, requiring `typ: at+jwt` on tokens of
    /// the local key; add other issuers' keys (not bound to that type) before building.
    pub fn validator_builder(&self) -> Result<JwtAuthBuilder, TokenError> {
        let builder = JwtAuth::builder().issuer(self.issuer.clone());
        let builder = match &self.audience {
            Some(aud) => builder.audience(aud.clone()),
            None => builder,
        };
        Ok(match &self.verification {
            Verification::Secret(secret) => builder.hmac_secret(secret, &[Algorithm::HS256])?,
            Verification::Public {
                key,
                algorithm,
                kid,
            } => {
                let key = DecodingKey::from_jwk(key).map_err(TokenError::Key)?;
                builder.decoding_key(key, &[*algorithm], Some(kid))
            }
        }
        .required_type(ACCESS_TOKEN_TYPE))
    }

    /// The validator for locally issued tokens.
    pub fn validator(&self) -> Result<JwtAuth, TokenError> {
        Ok(self.validator_builder()?.build()?)
    }
}

/// Parses `K=V` pairs into claims: one value gives a string, repeated keys an array.
pub fn claims_from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Map<String, Value> {
    let mut claims = Map::new();
    for (key, value) in pairs {
        match claims.get_mut(key) {
            Some(Value::Array(items)) => items.push(Value::from(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::from(value)]);
            }
            None => {
                claims.insert(key.to_owned(), Value::from(value));
            }
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> AuthConfig {
        let mut config = Config::default();
        config.auth.jwt_secret = Some("a-test-secret-that-is-long-enough-0123456789".into());
        config.auth
    }

    #[test]
    fn issue_and_validate_hs256() {
        let service = TokenService::new(&config()).unwrap();
        let claims = claims_from_pairs([
            ("permission", "notify"),
            ("permission", "read"),
            ("team", "a"),
        ]);
        let token = service.issue("alice", &claims, None).unwrap();
        assert_eq!(token.expires_in, 900);
        let principal = service.validator().unwrap().validate(&token.token).unwrap();
        assert_eq!(principal.user_id(), Some("alice"));
        assert!(principal.has_claim("permission", "notify"));
        assert!(principal.has_claim("permission", "read"));
        assert!(principal.has_claim("team", "a"));
        assert!(service.jwks().keys.is_empty());
    }

    #[test]
    fn access_tokens_are_typed_and_untyped_ones_refused() {
        let service = TokenService::new(&config()).unwrap();
        let token = service.issue("alice", &Map::new(), None).unwrap();
        let header = jsonwebtoken::decode_header(&token.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(ACCESS_TOKEN_TYPE));
        // The same claims and key, but `typ: JWT` (any other kind of JWT): refused.
        let payload: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(&token.token).unwrap();
        let untyped = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &payload,
            &EncodingKey::from_secret(config().jwt_secret.unwrap().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            service.validator().unwrap().validate(&untyped).unwrap_err(),
            signalbox::auth::AuthError::InvalidType
        );
    }

    #[test]
    fn other_issuer_rejected() {
        let service = TokenService::new(&config()).unwrap();
        let mut other = config();
        other.issuer = "someone-else".into();
        let token = TokenService::new(&other)
            .unwrap()
            .issue("a", &Map::new(), None)
            .unwrap();
        assert!(service.validator().unwrap().validate(&token.token).is_err());
    }

    #[test]
    fn missing_secret() {
        let mut c = config();
        c.jwt_secret = None;
        assert!(matches!(
            TokenService::new(&c),
            Err(TokenError::Config(ConfigError::MissingSecret))
        ));
    }
}
