//! Negotiate version selection from the `negotiateVersion` query value
//! (`select_negotiate_version`), reached through the query-string decoding the endpoint uses.
//!
//! Input: one byte whose low bit is the configured minimum version, then a raw query string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_protocol::negotiate::{MAX_NEGOTIATE_VERSION, select_negotiate_version};

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let minimum = u32::from(config & 1);
    let text = String::from_utf8_lossy(rest);
    // As a raw value, and as the endpoint sees it: the first `negotiateVersion` of the decoded
    // query (keys case-insensitive).
    let values = [Some(text.into_owned()), None, negotiate_version_param(rest)];
    for value in values {
        match select_negotiate_version(value.as_deref(), minimum) {
            Ok(version) => {
                assert!(version <= MAX_NEGOTIATE_VERSION);
                assert!(version >= minimum, "{version} below the minimum {minimum}");
                let requested = value.as_deref().map_or(Ok(0), |v| {
                    let v = v.trim();
                    v.strip_prefix('+').unwrap_or(v).parse::<i64>()
                });
                assert!(
                    matches!(requested, Ok(n) if n >= i64::from(minimum)),
                    "{value:?}"
                );
            }
            Err(message) => {
                assert!(
                    message == "The client requested a non-integer protocol version."
                        || (message.starts_with("The client requested version '")
                            && message
                                .ends_with("', but the server does not support this version.")),
                    "{message}"
                );
            }
        }
    }
});

/// The first `negotiateVersion` value of a query string, decoded like the endpoint does
/// (`form_urlencoded`, via the `http` crate's URI parser first so only valid queries count).
fn negotiate_version_param(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let uri: http::Uri = format!("/hub/negotiate?{text}").parse().ok()?;
    signalbox::HttpRequestInfo::new(uri.path(), &http::HeaderMap::new(), uri.query())
        .query("negotiateVersion")
        .map(str::to_owned)
}
