//! Self-describing connection tokens: with a secret shared by every node, a token from negotiate on
//! one node is accepted by a WebSocket request to another (no sticky sessions for WebSockets).
//!
//! Format: `{connection id}.{issued at, unix seconds}.{base64url HMAC-SHA256 of the first two}`.

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

/// A token for connection `id`, signed with `secret`.
pub(crate) fn sign(secret: &[u8], id: &str) -> Option<String> {
    let message = format!("{id}.{}", now_secs());
    let tag = mac(secret, &message)?.finalize().into_bytes();
    Some(format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag)))
}

/// The connection id of a token signed with `secret` no longer than `max_age` ago.
pub(crate) fn verify(secret: &[u8], token: &str, max_age: Duration) -> Option<String> {
    let (message, tag) = token.rsplit_once('.')?;
    let (id, issued) = message.split_once('.')?;
    let issued: u64 = issued.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(secret, message)?.verify_slice(&tag).ok()?;
    let age = now_secs().saturating_sub(issued);
    (age <= max_age.as_secs() && !id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shared connection token secret";

    #[test]
    fn round_trip_and_tampering() {
        let token = sign(SECRET, "abc").unwrap();
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
