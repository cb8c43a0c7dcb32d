//! Inputs found by the fuzz targets in `fuzz/` that need the library (see docs/fuzzing.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::HeaderMap;
use signalbox::auth::bearer_token;
use signalbox::{HttpRequestInfo, redact_query};

/// `query`: the server decodes query keys before looking for `access_token`, so a
/// percent-encoded key (`access%5Ftoken`) is accepted as the bearer token; `redact_query` must
/// decode keys the same way, or the token reaches request logs (found by fuzzing, fixed).
#[test]
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
        let info = HttpRequestInfo::new("/hub", &HeaderMap::new(), Some(query));
        assert_eq!(info.query("access_token"), None);
        // …so it must not reach the logs either.
        let redacted = redact_query(query);
        assert!(!redacted.contains("secret"), "{query} → {redacted}");
    }
}

/// The plain spellings are redacted.
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
