//! Cross-origin requests.

use super::ConfigError;
use super::settings as s;
use super::values::Values;

/// Cross-origin requests.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`); empty = no cross-origin access.
    pub allowed_origins: Vec<String>,
    /// Whether credentials (cookies, `Authorization`) may be sent. Default true.
    pub allow_credentials: bool,
    /// Refuse hub requests (negotiate, WebSocket, SSE, long polling) whose `Origin` is neither
    /// the service's own nor an allowed origin (see [`crate::origin`]). Default true.
    pub check_origin: bool,
}

impl CorsConfig {
    /// The declared defaults (`Default` leaves everything off).
    pub(super) fn declared() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: s::CORS_CREDENTIALS.fallback(),
            check_origin: s::CORS_CHECK_ORIGIN.fallback(),
        }
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_origins(origins: &Vec<String>) -> Result<(), String> {
    for origin in origins {
        if origin != "*"
            && (!(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/') != origin
                || http::HeaderValue::from_str(origin).is_err())
        {
            return Err(format!(
                "{origin:?} is not an origin such as https://app.example.com"
            ));
        }
    }
    Ok(())
}

pub(super) fn resolve(values: &Values) -> Result<CorsConfig, ConfigError> {
    let cors = CorsConfig {
        allowed_origins: values.get(&s::CORS_ORIGINS)?.unwrap_or_default(),
        allow_credentials: values.value(&s::CORS_CREDENTIALS)?,
        check_origin: values.value(&s::CORS_CHECK_ORIGIN)?,
    };
    if cors.allow_credentials && cors.allowed_origins.iter().any(|o| o == "*") {
        return Err(ConfigError::WildcardWithCredentials);
    }
    Ok(cors)
}
