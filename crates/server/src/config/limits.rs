//! Rate limits on sign-in and negotiate, and the proxies whose `X-Forwarded-For` names the
//! client they apply to.

use std::time::Duration;

use super::ConfigError;
use super::settings as s;
use super::values::Values;
use crate::client_ip::IpBlock;
use crate::clock::format_duration;

/// Rate limits (see [`crate::rate_limit`]).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Whether any limit applies. Default true.
    pub enabled: bool,
    /// Per-IP burst of the sign-in endpoints (login, register, refresh, external), shared by
    /// the four; 0 turns the limit off. Default 20.
    pub auth_burst: u32,
    /// Tokens per second refilled into each sign-in bucket. Default 1.
    pub auth_per_second: f64,
    /// Per-IP burst of hub negotiate requests; 0 turns the limit off. Default 60.
    pub negotiate_burst: u32,
    /// Tokens per second refilled into each negotiate bucket. Default 20.
    pub negotiate_per_second: f64,
    /// Failed logins of one account before it backs off; 0 turns the backoff off. Default 5.
    pub login_failures: u32,
    /// The first backoff; doubled with each further failure. Default 1 second.
    pub login_backoff: Duration,
    /// The longest backoff. Default 5 minutes.
    pub login_backoff_max: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: s::RATE_LIMIT.fallback(),
            auth_burst: s::AUTH_BURST.fallback(),
            auth_per_second: s::AUTH_PER_SECOND.fallback(),
            negotiate_burst: s::NEGOTIATE_BURST.fallback(),
            negotiate_per_second: s::NEGOTIATE_PER_SECOND.fallback(),
            login_failures: s::LOGIN_FAILURES.fallback(),
            login_backoff: s::LOGIN_BACKOFF.fallback(),
            login_backoff_max: s::LOGIN_BACKOFF_MAX.fallback(),
        }
    }
}

/// At least one token an hour, so that a wait is always finite and short enough to say.
pub(super) fn check_rate(rate: &f64) -> Result<(), String> {
    if rate.is_finite() && *rate >= 1.0 / 3600.0 {
        return Ok(());
    }
    Err(format!(
        "{rate} is not a positive rate (tokens per second, at least 1/3600)"
    ))
}

/// The rate limits and the trusted proxies.
pub(super) fn resolve(values: &Values) -> Result<(RateLimitConfig, Vec<IpBlock>), ConfigError> {
    let config = RateLimitConfig {
        enabled: values.value(&s::RATE_LIMIT)?,
        auth_burst: values.value(&s::AUTH_BURST)?,
        auth_per_second: values.value(&s::AUTH_PER_SECOND)?,
        negotiate_burst: values.value(&s::NEGOTIATE_BURST)?,
        negotiate_per_second: values.value(&s::NEGOTIATE_PER_SECOND)?,
        login_failures: values.value(&s::LOGIN_FAILURES)?,
        login_backoff: values.value(&s::LOGIN_BACKOFF)?,
        login_backoff_max: values.value(&s::LOGIN_BACKOFF_MAX)?,
    };
    if config.login_backoff_max < config.login_backoff {
        return Err(s::LOGIN_BACKOFF_MAX.invalid(format!(
            "{} is shorter than rate_limit.login_backoff ({})",
            format_duration(config.login_backoff_max),
            format_duration(config.login_backoff)
        )));
    }
    let proxies = values.get(&s::TRUSTED_PROXIES)?.unwrap_or_default();
    Ok((config, proxies))
}
