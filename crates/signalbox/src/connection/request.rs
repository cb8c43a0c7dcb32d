//! What a hub method may know of the HTTP request that opened its connection.

use http::HeaderMap;

/// The headers and query of the request that established the transport (the WebSocket upgrade,
/// the SSE stream request, or the first long poll). The `access_token` query parameter is removed.
#[derive(Debug, Clone, Default)]
pub struct HttpRequestInfo {
    path: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
}

impl HttpRequestInfo {
    /// Captures a request; `access_token` is dropped from the query.
    pub fn new(path: &str, headers: HeaderMap, raw_query: Option<&str>) -> Self {
        let query = raw_query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("access_token"))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path: path.to_owned(),
            headers,
            query,
        }
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One header as text (`None` if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter; keys compare case-insensitively, as in ASP.NET Core.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// A cookie sent with the request.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// The query string with the value of `access_token` replaced by `[redacted]`, for logs.
///
/// Keys are compared after form-urlencoded decoding, exactly as the token lookup reads them, so
/// `access%5Ftoken=…` is redacted too.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if is_access_token_key(key) {
                format!("{key}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a raw (still encoded) query key decodes to `access_token`, in any case.
fn is_access_token_key(raw_key: &str) -> bool {
    form_urlencoded::parse(raw_key.as_bytes())
        .next()
        .is_some_and(|(k, _)| k.eq_ignore_ascii_case("access_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_access_token_and_matches_keys_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; testCookie=testValue".parse().unwrap());
        let info = HttpRequestInfo::new(
            "/hub",
            headers,
            Some("id=x&ACCESS_TOKEN=secret&numRedirects=2"),
        );
        assert_eq!(info.query("access_token"), None);
        assert_eq!(info.query("NUMREDIRECTS"), Some("2"));
        assert_eq!(info.cookie("testCookie"), Some("testValue"));
        assert_eq!(info.cookie("missing"), None);
    }

    #[test]
    fn redacts_tokens_in_logged_queries() {
        assert_eq!(
            redact_query("id=1&access_token=abc.def&x=2"),
            "id=1&access_token=[redacted]&x=2"
        );
        assert_eq!(redact_query("id=1"), "id=1");
    }
}
