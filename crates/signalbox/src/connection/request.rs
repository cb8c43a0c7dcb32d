//! What a hub method may know of the HTTP request that opened its connection.

use std::ops::Range;
use std::sync::OnceLock;

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, PROXY_AUTHORIZATION, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers that only served the WebSocket upgrade itself; not kept for the connection's lifetime.
const HANDSHAKE_HEADERS: [HeaderName; 5] = [
    CONNECTION,
    UPGRADE,
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    SEC_WEBSOCKET_EXTENSIONS,
];

/// The headers and query of the request that established the transport (the WebSocket upgrade,
/// the SSE stream request, or the first long poll). The `access_token` and `id` (connection token)
/// query parameters are removed, and so are the headers of the WebSocket handshake itself (`Connection`, `Upgrade`,
/// `Sec-WebSocket-Key`, `-Version`, `-Extensions`).
///
/// Every connection keeps one for its whole life, so it is stored compactly: the path, header
/// names and values and decoded query pairs share one allocation. [`HttpRequestInfo::headers`]
/// builds a [`HeaderMap`] the first time it is called.
#[derive(Default)]
pub struct HttpRequestInfo {
    /// The path, then each header's name and value, then each query key and value.
    data: Box<[u8]>,
    path: Range<u32>,
    /// Each header, in request order.
    headers: Box<[StoredHeader]>,
    /// (key, value) of each query parameter, decoded.
    query: Box<[(Range<u32>, Range<u32>)]>,
    /// Boxed: most connections never ask for it.
    header_map: OnceLock<Box<HeaderMap>>,
}

/// Where one header's name (lowercase) and value are in `data`, and whether it is sensitive.
#[derive(Debug, Clone)]
struct StoredHeader {
    name: Range<u32>,
    value: Range<u32>,
    sensitive: bool,
}

/// Sensitive header values (such as `Authorization`) print as `Sensitive`, as in `HeaderMap`.
impl std::fmt::Debug for HttpRequestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|header| {
                let value = if header.sensitive {
                    "Sensitive".to_owned()
                } else {
                    String::from_utf8_lossy(self.bytes(&header.value)).into_owned()
                };
                (self.text(&header.name), value)
            })
            .collect();
        let query: Vec<(&str, &str)> = self
            .query
            .iter()
            .map(|(k, v)| (self.text(k), self.text(v)))
            .collect();
        f.debug_struct("HttpRequestInfo")
            .field("path", &self.path())
            .field("headers", &headers)
            .field("query", &query)
            .finish()
    }
}

impl Clone for HttpRequestInfo {
    fn clone(&self) -> Self {
        Self {
            data: self.data.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
            query: self.query.clone(),
            header_map: OnceLock::new(),
        }
    }
}

/// Appends `bytes` to `data` and returns where they are.
fn push(data: &mut Vec<u8>, bytes: &[u8]) -> Range<u32> {
    let start = data.len();
    data.extend_from_slice(bytes);
    // Request heads are bounded far below 4 GiB by the HTTP server; saturate rather than wrap.
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    to_u32(start)..to_u32(data.len())
}

impl HttpRequestInfo {
    /// Captures a request; `access_token` and `id` (the connection token, which lets whoever holds
    /// it send as the connection) are dropped from the query: secrets are not kept for as long as
    /// the connection lives, nor shown to hub code that might log them.
    ///
    /// Header values are copied: the server's header values share its whole request read buffer
    /// (several KiB), which a long-lived connection must not keep alive.
    pub fn new(path: &str, headers: &HeaderMap, raw_query: Option<&str>) -> Self {
        let mut data = Vec::new();
        let path = push(&mut data, path.as_bytes());
        let headers = headers
            .iter()
            .filter(|(name, _)| !HANDSHAKE_HEADERS.contains(name))
            .map(|(name, value)| StoredHeader {
                name: push(&mut data, name.as_str().as_bytes()),
                value: push(&mut data, value.as_bytes()),
                // Credentials never show in `Debug` output, whether or not the server marked them.
                sensitive: value.is_sensitive()
                    || [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE].contains(name),
            })
            .collect();
        let query = raw_query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| {
                        !k.eq_ignore_ascii_case("access_token") && !k.eq_ignore_ascii_case("id")
                    })
                    .map(|(k, v)| (push(&mut data, k.as_bytes()), push(&mut data, v.as_bytes())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            data: data.into_boxed_slice(),
            path,
            headers,
            query,
            header_map: OnceLock::new(),
        }
    }

    fn bytes(&self, range: &Range<u32>) -> &[u8] {
        let (start, end) = (range.start as usize, range.end as usize);
        self.data.get(start..end).unwrap_or_default()
    }

    /// Text that was pushed from a `&str`.
    fn text(&self, range: &Range<u32>) -> &str {
        std::str::from_utf8(self.bytes(range)).unwrap_or_default()
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.text(&self.path)
    }

    /// The request headers (built on first use).
    pub fn headers(&self) -> &HeaderMap {
        self.header_map.get_or_init(|| {
            let mut map = HeaderMap::with_capacity(self.headers.len());
            for header in &self.headers {
                let (Ok(name), Ok(mut value)) = (
                    HeaderName::from_bytes(self.bytes(&header.name)),
                    HeaderValue::from_bytes(self.bytes(&header.value)),
                ) else {
                    continue;
                };
                value.set_sensitive(header.sensitive);
                map.append(name, value);
            }
            Box::new(map)
        })
    }

    /// Each value of one header, as raw bytes; names compare case-insensitively.
    fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |header| self.text(&header.name).eq_ignore_ascii_case(name))
            .map(|header| self.bytes(&header.value))
    }

    /// One header as text (`None` if absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        let value = self.header_values(name).next()?;
        value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            .then(|| std::str::from_utf8(value).ok())
            .flatten()
    }

    /// A query parameter; keys compare case-insensitively, as in ASP.NET Core.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| self.text(k).eq_ignore_ascii_case(key))
            .map(|(_, v)| self.text(v))
    }

    /// A cookie sent with the request.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header_values(http::header::COOKIE.as_str())
            .filter_map(|v| std::str::from_utf8(v).ok())
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
    fn drops_the_tokens_and_matches_keys_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; testCookie=testValue".parse().unwrap());
        let info = HttpRequestInfo::new(
            "/hub",
            &headers,
            Some("id=x&ACCESS_TOKEN=secret&numRedirects=2"),
        );
        assert_eq!(info.query("access_token"), None);
        assert_eq!(info.query("id"), None);
        assert_eq!(info.query("NUMREDIRECTS"), Some("2"));
        assert_eq!(info.cookie("testCookie"), Some("testValue"));
        assert_eq!(info.cookie("missing"), None);
        assert_eq!(info.path(), "/hub");
    }

    #[test]
    fn keeps_headers_compactly_and_drops_the_websocket_handshake() {
        let mut headers = HeaderMap::new();
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        headers.insert("user-agent", "test/1.0".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("x-binary", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        // Not marked sensitive by the server; kept as sensitive anyway.
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        let info = HttpRequestInfo::new("/hubs/x", &headers, Some("a=%20b&A=c"));

        assert_eq!(info.header("User-Agent"), Some("test/1.0"));
        assert_eq!(info.header("upgrade"), None);
        assert_eq!(info.header("sec-websocket-key"), None);
        assert_eq!(info.header("x-multi"), Some("a"));
        // Not visible ASCII: not text, but kept as bytes in the map.
        assert_eq!(info.header("x-binary"), None);
        assert_eq!(info.query("a"), Some(" b"));

        let map = info.headers();
        assert_eq!(map.len(), 5);
        assert_eq!(map.get_all("x-multi").iter().count(), 2);
        assert_eq!(map.get("x-binary").unwrap().as_bytes(), b"caf\xe9");
        assert!(map.get("authorization").unwrap().is_sensitive());
        assert!(!map.contains_key("upgrade"));
        let printed = format!("{info:?}");
        assert!(
            printed.contains("Sensitive") && !printed.contains("Bearer abc"),
            "{printed}"
        );
        assert!(printed.contains("test/1.0"), "{printed}");
        let copy = info.clone();
        assert_eq!(copy.headers(), map);
        assert_eq!(copy.path(), "/hubs/x");
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
