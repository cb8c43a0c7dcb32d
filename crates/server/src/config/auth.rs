//! Tokens and accounts: the signing key, token lifetimes, registration and permissions.

use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;

use super::ConfigError;
use super::setting::Kind;
use super::settings as s;
use super::values::Values;

/// Minimum length of an HMAC secret, in bytes.
pub const MIN_SECRET_LENGTH: usize = 32;

/// Algorithm used to sign access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum SigningAlgorithm {
    /// HMAC-SHA256 with `jwt_secret` (default).
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with `jwt_private_key`.
    RS256,
    /// ECDSA P-256 SHA-256 with `jwt_private_key`.
    ES256,
}

impl Kind for SigningAlgorithm {
    type Literal = Self;
    const ZERO: Self = Self::HS256;
    const NAME: &'static str = "signing algorithm";
    fn from_literal(literal: Self) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = value.as_str().unwrap_or_default();
        match text.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::HS256),
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            _ => Err(format!("{text:?} is not one of HS256, RS256, ES256")),
        }
    }
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

/// Tokens and accounts.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HMAC secret for HS256. `None` = the data directory's generated secret is used (see
    /// [`crate::data_dir::resolve_secret`]).
    pub jwt_secret: Option<String>,
    /// Signing algorithm. Default HS256.
    pub jwt_algorithm: SigningAlgorithm,
    /// PEM private key for RS256/ES256.
    pub jwt_private_key: Option<PathBuf>,
    /// `kid` of the signing key. Default: none for HS256, `signalbox-1` otherwise.
    pub jwt_key_id: Option<String>,
    /// `iss` of issued tokens (and required on local tokens). Default `signalbox`.
    pub issuer: String,
    /// `aud` of issued tokens, if any.
    pub audience: Option<String>,
    /// Access token lifetime. Default 15 minutes.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime. Default 30 days.
    pub refresh_token_ttl: Duration,
    /// Whether `POST /api/auth/register` is open. Default false.
    pub registration: bool,
    /// The claim that carries permissions. Default `permission`.
    pub permission_claim: String,
    /// The permission needed to send notifications. Default `notify`.
    pub notify_permission: String,
}

impl Default for AuthConfig {
    /// The declared defaults: HS256 without a secret.
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_algorithm: s::JWT_ALGORITHM.fallback(),
            jwt_private_key: None,
            jwt_key_id: None,
            issuer: s::ISSUER.fallback(),
            audience: None,
            access_token_ttl: s::ACCESS_TOKEN_TTL.fallback(),
            refresh_token_ttl: s::REFRESH_TOKEN_TTL.fallback(),
            registration: s::REGISTRATION.fallback(),
            permission_claim: s::PERMISSION_CLAIM.fallback(),
            notify_permission: s::NOTIFY_PERMISSION.fallback(),
        }
    }
}

/// Why an HMAC secret is too weak, if it is.
pub(super) fn weakness(secret: &str) -> Option<String> {
    let len = secret.len();
    if len < MIN_SECRET_LENGTH {
        return Some(format!(
            "it is {len} bytes long, at least {MIN_SECRET_LENGTH} are required"
        ));
    }
    let mut distinct: Vec<u8> = secret.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some(format!(
            "it uses only {} distinct characters",
            distinct.len()
        ));
    }
    None
}

/// Checks that an HMAC secret is long and varied enough.
pub fn check_secret(secret: &str) -> Result<(), ConfigError> {
    match weakness(secret) {
        Some(reason) => Err(ConfigError::WeakSecret(reason)),
        None => Ok(()),
    }
}

pub(super) fn resolve(values: &Values) -> Result<AuthConfig, ConfigError> {
    let jwt_algorithm = values.value(&s::JWT_ALGORITHM)?;
    let jwt_private_key = values.get(&s::JWT_PRIVATE_KEY)?;
    match (jwt_algorithm, &jwt_private_key) {
        (SigningAlgorithm::HS256, Some(_)) => {
            return Err(
                s::JWT_PRIVATE_KEY.invalid("a private key needs auth.jwt_algorithm RS256 or ES256")
            );
        }
        (SigningAlgorithm::RS256 | SigningAlgorithm::ES256, None) => {
            return Err(s::JWT_PRIVATE_KEY.invalid(format!(
                "{jwt_algorithm:?} needs the path of a PEM private key"
            )));
        }
        _ => {}
    }
    let jwt_secret = values.get(&s::JWT_SECRET)?;
    if let Some(secret) = &jwt_secret {
        check_secret(secret)?;
    }
    Ok(AuthConfig {
        jwt_secret,
        jwt_algorithm,
        jwt_private_key,
        jwt_key_id: values.get(&s::JWT_KEY_ID)?,
        issuer: values.value(&s::ISSUER)?,
        audience: values.get(&s::AUDIENCE)?,
        access_token_ttl: values.value(&s::ACCESS_TOKEN_TTL)?,
        refresh_token_ttl: values.value(&s::REFRESH_TOKEN_TTL)?,
        registration: values.value(&s::REGISTRATION)?,
        permission_claim: values.value(&s::PERMISSION_CLAIM)?,
        notify_permission: values.value(&s::NOTIFY_PERMISSION)?,
    })
}
