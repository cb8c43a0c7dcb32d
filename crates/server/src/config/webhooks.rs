//! Lifecycle webhooks: the receiver's URL, the signing secret, the events sent, the debounce of
//! offline events, and how deliveries are retried and kept.

use std::time::Duration;

use super::ConfigError;
use super::settings as s;
use super::values::Values;
use crate::webhooks::EventType;

/// Lifecycle webhooks (see docs/webhooks.md). Off unless a URL is configured.
#[derive(Clone)]
pub struct WebhooksConfig {
    /// Where events are POSTed (`http://` or `https://`). `None` (default): webhooks are off.
    pub url: Option<String>,
    /// The HMAC-SHA256 key of the `X-Signalbox-Signature` header; required with a URL.
    pub secret: Option<String>,
    /// The events sent. Default: every [`EventType`].
    pub events: Vec<EventType>,
    /// How long a user stays offline before `user.offline` is sent; coming back within it (a
    /// page reload) sends nothing. Default 3 seconds.
    pub debounce: Duration,
    /// Timeout of one attempt. Default 10 seconds.
    pub timeout: Duration,
    /// Attempts per event, the first included. Default 12.
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it. Default 1 second.
    pub backoff: Duration,
    /// The longest delay between two attempts. Default 10 minutes.
    pub backoff_max: Duration,
    /// How long delivered and failed events are kept in the delivery log. Default 7 days.
    pub retention: Duration,
}

impl WebhooksConfig {
    /// Whether webhooks are on (a URL is configured).
    pub fn is_enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Whether events of type `event` are sent.
    pub fn sends(&self, event: EventType) -> bool {
        self.is_enabled() && self.events.contains(&event)
    }
}

impl Default for WebhooksConfig {
    /// The declared defaults: off.
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: EventType::ALL.to_vec(),
            debounce: s::WEBHOOKS_DEBOUNCE.fallback(),
            timeout: s::WEBHOOKS_TIMEOUT.fallback(),
            max_attempts: s::WEBHOOKS_MAX_ATTEMPTS.fallback(),
            backoff: s::WEBHOOKS_BACKOFF.fallback(),
            backoff_max: s::WEBHOOKS_BACKOFF_MAX.fallback(),
            retention: s::WEBHOOKS_RETENTION.fallback(),
        }
    }
}

/// The secret never shows.
impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("url", &self.url.as_deref().map(super::report::redact_urls))
            .field(
                "secret",
                &self.secret.as_ref().map(|_| super::report::REDACTED),
            )
            .field("events", &self.events)
            .field("debounce", &self.debounce)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("backoff_max", &self.backoff_max)
            .field("retention", &self.retention)
            .finish()
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_url(url: &String) -> Result<(), String> {
    let url = url.trim();
    match reqwest::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https")
                && parsed.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{:?} is not an http:// or https:// URL such as https://hooks.example.com/signalbox",
            super::report::redact_urls(url)
        )),
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_secret(secret: &String) -> Result<(), String> {
    match super::auth::weakness(secret) {
        Some(reason) => Err(format!(
            "too weak: {reason}; use at least {} random bytes, e.g. `openssl rand -hex 32`",
            super::MIN_SECRET_LENGTH
        )),
        None => Ok(()),
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_events(events: &Vec<String>) -> Result<(), String> {
    for event in events {
        if EventType::parse(event).is_none() {
            return Err(format!(
                "{event:?} is not an event; use some of {}",
                EventType::NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

pub(super) fn check_max_attempts(attempts: &u32) -> Result<(), String> {
    if *attempts == 0 {
        return Err("at least 1 attempt is needed".to_owned());
    }
    Ok(())
}

/// The webhook settings.
pub(super) fn resolve(values: &Values) -> Result<WebhooksConfig, ConfigError> {
    let url = values
        .get(&s::WEBHOOKS_URL)?
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty());
    let secret = values.get(&s::WEBHOOKS_SECRET)?;
    if url.is_some() && secret.is_none() {
        return Err(s::WEBHOOKS_SECRET.invalid(
            "webhooks.url is set: requests are signed with this secret (at least 32 random bytes, e.g. `openssl rand -hex 32`), which the receiver checks",
        ));
    }
    let mut events: Vec<EventType> = match values.get(&s::WEBHOOKS_EVENTS)? {
        Some(names) => names.iter().filter_map(|n| EventType::parse(n)).collect(),
        None => EventType::ALL.to_vec(),
    };
    events.sort_unstable();
    events.dedup();
    let config = WebhooksConfig {
        url,
        secret,
        events,
        debounce: values.value(&s::WEBHOOKS_DEBOUNCE)?,
        timeout: values.value(&s::WEBHOOKS_TIMEOUT)?,
        max_attempts: values.value(&s::WEBHOOKS_MAX_ATTEMPTS)?,
        backoff: values.value(&s::WEBHOOKS_BACKOFF)?,
        backoff_max: values.value(&s::WEBHOOKS_BACKOFF_MAX)?,
        retention: values.value(&s::WEBHOOKS_RETENTION)?,
    };
    if config.backoff_max < config.backoff {
        return Err(s::WEBHOOKS_BACKOFF_MAX.invalid(format!(
            "{} is shorter than webhooks.backoff ({})",
            crate::clock::format_duration(config.backoff_max),
            crate::clock::format_duration(config.backoff)
        )));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        assert!(check_url(&"https://hooks.example.com/signalbox".to_owned()).is_ok());
        assert!(check_url(&"http://127.0.0.1:9000/".to_owned()).is_ok());
        assert!(check_url(&"hooks.example.com".to_owned()).is_err());
        assert!(check_url(&"ftp://hooks.example.com".to_owned()).is_err());
        let message = check_url(&"ftp://u:hunter2@x".to_owned()).err().unwrap();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn secrets_and_events() {
        assert!(check_secret(&"0123456789abcdef0123456789abcdef".to_owned()).is_ok());
        let message = check_secret(&"short-secret".to_owned()).err().unwrap();
        assert!(!message.contains("short-secret"), "{message}");
        assert!(check_events(&vec!["user.online".to_owned()]).is_ok());
        assert!(check_events(&vec!["user.away".to_owned()]).is_err());
        assert!(check_max_attempts(&0).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = WebhooksConfig {
            url: Some("https://u:pw@hooks.example.com/x".to_owned()),
            secret: Some("SECRET-0123456789abcdef0123456789".to_owned()),
            ..WebhooksConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("pw@"), "{shown}");
    }
}
