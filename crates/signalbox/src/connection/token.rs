//! Self-describing connection tokens: with a secret shared by every node, a token from negotiate on
//! one node is accepted by a request to another. A WebSocket runs wherever it lands; the requests
//! of Server-Sent Events and long polling are forwarded to the node named in the token (see
//! `forward.rs`), so no transport needs sticky sessions.
//!
//! Format: `{connection id}.{issued at, unix seconds}.{owner}.{base64url HMAC-SHA256 of the rest}`,
//! where `{owner}` is the base64url id of the node that negotiated (node ids may contain dots).
//! Tokens without an owner (`{id}.{issued at}.{mac}`, signed by nodes of earlier versions, or by
//! nodes that have no id configured) are still accepted: a WebSocket is adopted as before, and
//! the other transports are served only by the node that holds the connection. Nodes of earlier
//! versions refuse tokens that name an owner (404: the client negotiates again), which a rolling
//! upgrade meets at most once per connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn mac(secret: &[u8], message: &str) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(message.as_bytes());
    Some(mac)
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenClaims {
    /// The public connection id.
    pub(crate) id: String,
    /// The node that negotiated the connection, when the token names one.
    pub(crate) owner: Option<String>,
}

/// A token for connection `id` negotiated on node `owner` (when given), signed with `secret`.
pub(crate) fn sign(secret: &[u8], id: &str, owner: Option<&str>) -> Option<String> {
    let message = match owner {
        Some(owner) => format!(
            "{id}.{}.{}",
            now_secs(),
            URL_SAFE_NO_PAD.encode(owner.as_bytes())
        ),
        None => format!("{id}.{}", now_secs()),
    };
    let tag = mac(secret, &message)?.finalize().into_bytes();
    Some(format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag)))
}

/// The claims of a token signed with `secret` no longer than `max_age` ago.
pub(crate) fn verify_claims(secret: &[u8], token: &str, max_age: Duration) -> Option<TokenClaims> {
    let (message, tag) = token.rsplit_once('.')?;
    let mut parts = message.split('.');
    let id = parts.next()?;
    let issued: u64 = parts.next()?.parse().ok()?;
    let owner = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(secret, message)?.verify_slice(&tag).ok()?;
    let owner = match owner {
        Some(owner) => Some(String::from_utf8(URL_SAFE_NO_PAD.decode(owner).ok()?).ok()?),
        None => None,
    };
    let age = now_secs().saturating_sub(issued);
    (age <= max_age.as_secs() && !id.is_empty()).then(|| TokenClaims {
        id: id.to_owned(),
        owner,
    })
}

/// The connection id of a token signed with `secret` no longer than `max_age` ago.
pub(crate) fn verify(secret: &[u8], token: &str, max_age: Duration) -> Option<String> {
    verify_claims(secret, token, max_age).map(|claims| claims.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shared connection token secret";

    #[test]
    fn round_trip_and_tampering() {
        let token = sign(SECRET, "abc", None).unwrap();
        assert_eq!(
            verify(SECRET, &token, Duration::from_secs(15)),
            Some("abc".into())
        );
        assert_eq!(
            verify(
                b"another secret entirely........",
                &token,
                Duration::from_secs(15)
            ),
            None
        );
        let forged = token.replacen("abc", "abd", 1);
        assert_eq!(verify(SECRET, &forged, Duration::from_secs(15)), None);
        assert_eq!(verify(SECRET, "abc", Duration::from_secs(15)), None);
        assert_eq!(verify(SECRET, "a.b.c.d", Duration::from_secs(15)), None);
    }

    #[test]
    fn the_owner_is_signed() {
        let token = sign(SECRET, "abc", Some("node-1.example")).unwrap();
        assert_eq!(
            verify_claims(SECRET, &token, Duration::from_secs(15)),
            Some(TokenClaims {
                id: "abc".into(),
                owner: Some("node-1.example".into())
            })
        );
        // Another owner under the same tag does not verify.
        let parts: Vec<&str> = token.split('.').collect();
        let moved = format!(
            "{}.{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode("node-2"),
            parts[3]
        );
        assert_eq!(verify_claims(SECRET, &moved, Duration::from_secs(15)), None);
        // Nor does the token with its owner removed.
        let stripped = format!("{}.{}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(
            verify_claims(SECRET, &stripped, Duration::from_secs(15)),
            None
        );
        // Tokens of the older format (no owner) are still accepted.
        let old = sign(SECRET, "abc", None).unwrap();
        assert_eq!(
            verify_claims(SECRET, &old, Duration::from_secs(15)),
            Some(TokenClaims {
                id: "abc".into(),
                owner: None
            })
        );
    }

    #[test]
    fn old_tokens_expire() {
        let message = format!("abc.{}", now_secs() - 100);
        let tag = mac(SECRET, &message).unwrap().finalize().into_bytes();
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(verify(SECRET, &token, Duration::from_secs(15)), None);
        assert_eq!(
            verify(SECRET, &token, Duration::from_secs(200)),
            Some("abc".into())
        );
    }
}
