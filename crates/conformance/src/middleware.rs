//! Request and response tweaks of the official app that are not CORS: case-insensitive routes
//! and the cookies every negotiate response sets (spec §10.1, §11.19).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::SET_COOKIE;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri};

/// Cookies set on every `…/negotiate` response; the last one has already expired, so clients
/// must not send it back.
const NEGOTIATE_COOKIES: [&str; 3] = [
    "testCookie=testValue; path=/",
    "testCookie2=testValue2; path=/",
    "expiredCookie=doesntmatter; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/",
];

/// Route segments after which the rest of the path is a value, whose case is kept.
const VALUE_ROUTES: [&str; 1] = ["clientresult"];

/// ASP.NET Core matches routes case-insensitively (`/testHub` reaches `/testhub`): lowercases the
/// path before routing. Runs before routing; the query is kept as it is.
pub(crate) async fn lowercase_path(mut request: Request, next: Next) -> Response {
    if let Some(uri) = lowercased(request.uri()) {
        *request.uri_mut() = uri;
    }
    next.run(request).await
}

/// The URI with its path lowercased, or `None` when it is already lowercase.
fn lowercased(uri: &Uri) -> Option<Uri> {
    let path = lowercase_route(uri.path());
    if path == uri.path() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

fn lowercase_route(path: &str) -> String {
    let mut out = Vec::new();
    let mut literal = true;
    for segment in path.split('/') {
        if literal {
            let lower = segment.to_ascii_lowercase();
            literal = !VALUE_ROUTES.contains(&lower.as_str());
            out.push(lower);
        } else {
            out.push(segment.to_owned());
        }
    }
    out.join("/")
}

/// Adds [`NEGOTIATE_COOKIES`] to the response of every request whose path contains
/// `/negotiate` (like the official app, whatever the status). Runs after [`lowercase_path`].
pub(crate) async fn negotiate_cookies(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_negotiate = path.contains("/negotiate")
        && !path.starts_with("/redirect")
        && !path.starts_with("/echoredirect");
    let mut response = next.run(request).await;
    if is_negotiate {
        for cookie in NEGOTIATE_COOKIES {
            response
                .headers_mut()
                .append(SET_COOKIE, HeaderValue::from_static(cookie));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_routes_but_not_values_or_queries() {
        let uri: Uri = "/testHub/Negotiate?negotiateVersion=1&numRedirects=2&X=Y"
            .parse()
            .unwrap();
        assert_eq!(
            lowercased(&uri).unwrap().to_string(),
            "/testhub/negotiate?negotiateVersion=1&numRedirects=2&X=Y"
        );
        let uri: Uri = "/ClientResult/AbCd".parse().unwrap();
        assert_eq!(lowercased(&uri).unwrap().to_string(), "/clientresult/AbCd");
        let uri: Uri = "/testhub?id=AbC".parse().unwrap();
        assert!(lowercased(&uri).is_none());
        assert_eq!(lowercase_route("/"), "/");
        assert_eq!(lowercase_route("/GenerateJwtToken"), "/generatejwttoken");
    }
}
