//! Inputs found by the fuzz targets in `fuzz/` that need the library (see docs/fuzzing.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::HeaderMap;
use signalbox::auth::bearer_token;
use signalbox::{HttpRequestInfo, redact_query};

/// `query`: the server decodes query keys before looking for `access_token`, so a
/// percent-encoded key (`access%5Ftoken`) is accepted as the bearer token, but `redact_query`
/// compares the raw key and leaves the token in the logged query.
///
/// Fix: in `crates/signalbox/src/connection/request.rs`, `redact_query`, decode each key the
/// way `form_urlencoded::parse` does (e.g. `form_urlencoded::parse(k.as_bytes())` on the key
/// alone, or percent-decoding it) before `eq_ignore_ascii_case("access_token")`.
#[test]
#[ignore = "bug: redact_query leaves a percent-encoded access_token key unredacted (docs/fuzzing.md)"]
fn redact_query_redacts_percent_encoded_access_token_keys() {
    for query in [
        "id=x&access%5Ftoken=secret",
        "id=x&ACCESS%5fTOKEN=secret",
        "%61ccess_token=secret",
    ] {
        // The server accepts the token from this query…
        assert_eq!(
            bearer_token(&HeaderMap::new(), Some(query)).as_deref(),
            Some("secret"),
            "{query}"
        );
        // …and hides it from hubs…
        let info = HttpRequestInfo::new("/hub", HeaderMap::new(), Some(query));
        assert_eq!(info.query("access_token"), None);
        // …so it must not reach the logs either.
        let redacted = redact_query(query);
        assert!(!redacted.contains("secret"), "{query} → {redacted}");
    }
}

/// The plain spellings are redacted (passes today).
#[test]
fn redact_query_redacts_plain_access_token_keys() {
    for query in ["id=x&access_token=secret", "ACCESS_TOKEN=secret&id=x"] {
        assert_eq!(
            bearer_token(&HeaderMap::new(), Some(query)).as_deref(),
            Some("secret")
        );
        assert!(!redact_query(query).contains("secret"));
    }
}
