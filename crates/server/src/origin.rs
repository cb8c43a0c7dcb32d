//! The `Origin` check on hub requests (negotiate, WebSocket upgrades, Server-Sent Events, long
//! polling). CORS does not cover WebSockets, and a browser attaches `Origin` to every such
//! request: one from a page of another site (cross-site WebSocket hijacking, a foreign page
//! driving a user's browser against the hub) is refused with 403 unless its origin is the
//! service's own or listed in `cors.allowed_origins`. Requests without `Origin` (non-browser
//! clients: the .NET, Java and Python clients, scripts) pass. On by default; `cors.check_origin =
//! false` turns it off.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::api::ApiError;
use crate::config::CorsConfig;

/// Which origins may use the hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct OriginCheck {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    any: bool,
    /// Allowed origins, lower case.
    allowed: Vec<String>,
}

impl OriginCheck {
    /// The check `config` asks for.
    pub fn new(config: &CorsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled: config.check_origin,
                any: config.allowed_origins.iter().any(|o| o == "*"),
                allowed: config
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            }),
        }
    }

    /// Whether a request with these headers to `uri` may proceed.
    pub fn allows(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let inner = &*self.inner;
        if !inner.enabled || inner.any {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if inner.allowed.contains(&origin) {
            return true;
        }
        // The service's own origin: the page at `/` and the admin dashboard. The scheme is not
        // compared (TLS usually ends at a proxy in front), the host and port are.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
        match (split_origin(&origin), host) {
            (Some((scheme, authority)), Some(host)) => {
                without_default_port(scheme, authority)
                    == without_default_port(scheme, &host.trim().to_ascii_lowercase())
            }
            _ => false,
        }
    }
}

/// `https://host:port` as (`https`, `host:port`); `None` for `null` and anything else that is
/// not an HTTP(S) origin.
fn split_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
        return None;
    }
    Some((scheme, authority))
}

/// `host:80` for http and `host:443` for https as `host`.
fn without_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Middleware of the hub routes: 403 for a foreign `Origin`.
pub async fn check_origin(
    State(check): State<OriginCheck>,
    request: Request,
    next: Next,
) -> Response {
    if !check.allows(request.headers(), request.uri()) {
        tracing::debug!(
            origin = ?request.headers().get(header::ORIGIN),
            "hub request from a foreign origin refused"
        );
        return ApiError::Forbidden(
            "this origin may not use the hub (see cors.allowed_origins)".to_owned(),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn check(allowed: &[&str], enabled: bool) -> OriginCheck {
        OriginCheck::new(&CorsConfig {
            allowed_origins: allowed.iter().map(|o| (*o).to_owned()).collect(),
            allow_credentials: true,
            check_origin: enabled,
        })
    }

    fn headers(origin: Option<&str>, host: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        headers
    }

    #[test]
    fn origins() {
        let uri = Uri::from_static("/hubs/notifications");
        let c = check(&["https://app.example.com"], true);
        let host = Some("signalbox.example.com");
        assert!(c.allows(&headers(None, host), &uri), "no Origin");
        assert!(c.allows(&headers(Some("https://app.example.com"), host), &uri));
        assert!(c.allows(&headers(Some("HTTPS://APP.example.com"), host), &uri));
        assert!(c.allows(&headers(Some("https://signalbox.example.com"), host), &uri));
        assert!(c.allows(
            &headers(
                Some("https://signalbox.example.com"),
                Some("signalbox.example.com:443")
            ),
            &uri
        ));
        assert!(c.allows(
            &headers(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")),
            &uri
        ));
        assert!(!c.allows(&headers(Some("https://evil.example"), host), &uri));
        assert!(!c.allows(&headers(Some("null"), host), &uri));
        assert!(!c.allows(
            &headers(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080")),
            &uri
        ));
        // Without a Host, only the listed origins pass.
        assert!(!c.allows(
            &headers(Some("https://other.example"), None),
            &Uri::from_static("/")
        ));
        // Off, or `*`: everything passes.
        assert!(check(&[], false).allows(&headers(Some("https://evil.example"), host), &uri));
        assert!(check(&["*"], true).allows(&headers(Some("https://evil.example"), host), &uri));
    }
}
