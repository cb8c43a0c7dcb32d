//! Running several nodes: the node id, the backplane, the connection token secret, heartbeats.

use std::time::Duration;

use super::ConfigError;
use super::settings as s;
use super::values::Values;
use crate::clock::format_duration;

/// Node heartbeats: each node records a heartbeat every `heartbeat_interval`; a node silent for
/// `node_timeout` is dead, and its connections are removed (its users go offline).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this node records its heartbeat. Default 5 seconds.
    pub heartbeat_interval: Duration,
    /// How long a node may be silent before it is considered dead. Default 15 seconds.
    pub node_timeout: Duration,
    /// Prefix of the backplane's channels; clusters sharing one Redis or NATS server need
    /// different prefixes. Default `signalbox`.
    pub channel_prefix: String,
    /// The base URL at which the other nodes reach this one, to forward requests of Server-Sent
    /// Events and long polling. `None`: `http://LISTEN` once bound, when that is a concrete
    /// address (see `crate::cluster::directory::advertised_url`).
    pub advertise_url: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: s::HEARTBEAT_INTERVAL.fallback(),
            node_timeout: s::NODE_TIMEOUT.fallback(),
            channel_prefix: s::CHANNEL_PREFIX.fallback(),
            advertise_url: None,
        }
    }
}

/// The host name and 8 random hex digits: unique per process, readable in presence rows.
pub(super) fn generated_node() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "signalbox".to_owned());
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::process::id().to_be_bytes();
    }
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{suffix}")
}

/// The default of `node_id`.
pub(super) fn generated_node_id(_: &Values) -> Option<String> {
    Some(generated_node())
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_node_id(node: &String) -> Result<(), String> {
    let node = node.trim();
    if node.is_empty()
        || node.len() > 128
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{node:?} is not 1 to 128 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// `none`, `memory` or nothing: no backplane.
fn is_none(backplane: &str) -> bool {
    matches!(backplane.trim(), "" | "none" | "memory")
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_backplane(backplane: &String) -> Result<(), String> {
    if is_none(backplane) {
        return Ok(());
    }
    match crate::cluster::backplane::Kind::of(backplane.trim()) {
        Some(kind) if kind.is_compiled() => return Ok(()),
        Some(kind) => return Err(kind.not_compiled()),
        None => {}
    }
    Err(format!(
        "{:?} is not supported: use redis://HOST:PORT, rediss://…, nats://HOST:PORT or none",
        super::report::redact_urls(backplane)
    ))
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_connection_token_secret(secret: &String) -> Result<(), String> {
    match super::auth::weakness(secret) {
        Some(reason) => Err(format!(
            "too weak: {reason}; use at least {} random bytes, e.g. `openssl rand -base64 48`",
            super::MIN_SECRET_LENGTH
        )),
        None => Ok(()),
    }
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_channel_prefix(prefix: &String) -> Result<(), String> {
    let prefix = prefix.trim();
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'))
    {
        return Err(format!(
            "{prefix:?} is not letters, digits, '-', '_' or ':'"
        ));
    }
    Ok(())
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_advertise_url(url: &String) -> Result<(), String> {
    let url = url.trim();
    let valid = url
        .strip_prefix("http://")
        .filter(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#']))
        .is_some_and(|_| url.parse::<http::Uri>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not an http:// URL such as http://10.0.0.7:8080"
        ))
    }
}

/// The node id, the backplane, the connection token secret and the heartbeat settings.
pub(super) fn resolve(
    values: &Values,
) -> Result<(String, Option<String>, Option<String>, ClusterConfig), ConfigError> {
    let node = values.value(&s::NODE_ID)?.trim().to_owned();
    let backplane = values
        .get(&s::BACKPLANE)?
        .map(|b| b.trim().to_owned())
        .filter(|b| !is_none(b));
    let connection_token_secret = values.get(&s::CONNECTION_TOKEN_SECRET)?;
    if connection_token_secret.is_none() && backplane.is_some() {
        return Err(s::CONNECTION_TOKEN_SECRET.invalid(
            "a backplane needs a connection token secret shared by every node (at least 32 random bytes, e.g. `openssl rand -base64 48`), so WebSockets may connect to any node",
        ));
    }
    let cluster = ClusterConfig {
        heartbeat_interval: values.value(&s::HEARTBEAT_INTERVAL)?,
        node_timeout: values.value(&s::NODE_TIMEOUT)?,
        channel_prefix: values.value(&s::CHANNEL_PREFIX)?.trim().to_owned(),
        advertise_url: values
            .get(&s::ADVERTISE_URL)?
            .map(|url| url.trim().trim_end_matches('/').to_owned()),
    };
    if cluster.node_timeout < cluster.heartbeat_interval * 2 {
        return Err(s::NODE_TIMEOUT.invalid(format!(
            "{} is shorter than two heartbeat intervals ({} each)",
            format_duration(cluster.node_timeout),
            format_duration(cluster.heartbeat_interval)
        )));
    }
    Ok((node, backplane, connection_token_secret, cluster))
}

#[cfg(test)]
mod tests {
    use super::check_backplane;

    #[test]
    fn a_backplane_needs_its_driver_compiled_in() {
        for (url, compiled, feature) in [
            ("redis://127.0.0.1:6379", cfg!(feature = "redis"), "redis"),
            ("nats://127.0.0.1:4222", cfg!(feature = "nats"), "nats"),
        ] {
            match check_backplane(&url.to_owned()) {
                Ok(()) => assert!(compiled, "{url} accepted without its driver"),
                Err(error) => {
                    assert!(!compiled, "{url} refused: {error}");
                    assert_eq!(
                        error,
                        format!(
                            "backplane '{feature}' is not compiled into this binary; \
                             rebuild with --features {feature}"
                        )
                    );
                }
            }
        }
        assert!(check_backplane(&"none".to_owned()).is_ok());
        assert!(check_backplane(&"amqp://h".to_owned()).is_err());
    }
}
