//! Query-string handling on hub routes: the `access_token` query parameter
//! (`auth::bearer_token`), the query hubs see (`HttpRequestInfo`), and the redaction used for
//! request logs (`redact_query`).
//!
//! Input: a raw query string (the part after `?`).
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use signalbox::auth::bearer_token;
use signalbox::{HttpRequestInfo, redact_query};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let headers = HeaderMap::new();
    let token = bearer_token(&headers, Some(query));
    let info = HttpRequestInfo::new("/hub", &headers, Some(query));
    // Hubs never see the token.
    assert_eq!(info.query("access_token"), None);

    let redacted = redact_query(query);
    // Redaction keeps the shape of the query: same number of pairs.
    assert_eq!(redacted.split('&').count(), query.split('&').count());
    // Whatever the server could accept as the access token is gone from the redacted query,
    // however the key was spelled (the server decodes keys before comparing them): every pair
    // whose decoded key is `access_token` has the value `[redacted]`.
    if token.is_some() {
        let leaked: Vec<(String, String)> = form_urlencoded_pairs(&redacted)
            .filter(|(k, v)| {
                k.eq_ignore_ascii_case("access_token") && !v.is_empty() && v != "[redacted]"
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "access token left in the redacted query {redacted:?}: {leaked:?}"
        );
    }
});

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

/// `application/x-www-form-urlencoded` decoding (`+` = space, `%XX`), as `form_urlencoded` does.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && hex(bytes[i + 1]).is_some()
                && hex(bytes[i + 2]).is_some() =>
            {
                out.push(hex(bytes[i + 1]).unwrap_or(0) * 16 + hex(bytes[i + 2]).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
