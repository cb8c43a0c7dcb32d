//! Plain HTTP routes of the official app (spec §10.2): negotiate redirects, a 400 negotiate, the
//! echo redirect, client results from HTTP and `/deployment`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{HOST, LOCATION};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde_json::json;
use signalbox::HubContext;

/// Counts calls to `/redirect/…` over the server's life (`Interlocked.Increment`).
#[derive(Debug, Clone, Default)]
pub(crate) struct RedirectCounter(Arc<AtomicU64>);

impl RedirectCounter {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// `/redirect/*` (any method): a negotiate redirect to `<baseUrl>/testHub?numRedirects=<n>`,
/// where `baseUrl` comes from the query and `n` counts every call so far.
pub(crate) async fn redirect(State(counter): State<RedirectCounter>, uri: Uri) -> Response {
    let base_url = query_value(&uri, "baseUrl").unwrap_or_default();
    let url = format!("{base_url}/testHub?numRedirects={}", counter.next());
    // The official app writes `{ "url": "…" }` by hand; quote the URL properly here.
    let quoted = serde_json::Value::String(url).to_string();
    format!("{{ \"url\": {quoted} }}").into_response()
}

/// `/echoredirect/*`: `307` to the same path with `echoredirect` replaced by `echo`, query kept
/// (`Response.Redirect(url, permanent: false, preserveMethod: true)`).
///
/// The `Location` is absolute, built from the request's `Host` (Node's `eventsource` package,
/// which the official client uses for Server-Sent Events outside browsers, cannot follow a
/// relative one); browsers follow it as well. Without a usable `Host` it stays relative.
pub(crate) async fn echo_redirect(uri: Uri, headers: HeaderMap) -> Response {
    let location = echo_redirect_location(&uri, headers.get(HOST));
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The `Location` of an `/echoredirect` answer: `http://{host}/echo…?{query}`, or the path alone
/// when the request names no valid host. An absolute-form request URI (or HTTP/2 `:authority`)
/// takes precedence over `Host`, as in HTTP/1.1 §3.2.2.
fn echo_redirect_location(uri: &Uri, host: Option<&HeaderValue>) -> String {
    let mut path = uri.path().replace("echoredirect", "echo");
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let authority = uri.authority().cloned().or_else(|| {
        host.and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
    });
    match authority {
        // The server speaks plain HTTP; an absolute-form URI says which scheme it was asked for.
        Some(authority) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            format!("{scheme}://{authority}{path}")
        }
        None => path,
    }
}

/// `/bad-negotiate/*` (any method): `400` with body `Some response from server`.
pub(crate) async fn bad_negotiate() -> Response {
    (StatusCode::BAD_REQUEST, "Some response from server").into_response()
}

/// `GET /clientresult/{connectionId}`: asks that `TestHub` connection for a client result
/// (`Clients.Client(id).InvokeAsync<int>("Result")`) and answers `200` with the number, or with
/// the error's message (`Client didn't provide a result.`, `Error: from callback`, …) like the
/// official app's `catch (Exception ex) { return ex.Message; }`. No timeout, as there: the wait
/// ends when the client answers or disconnects, or when this request is dropped.
pub(crate) async fn client_result(
    State(hub): State<HubContext>,
    Path(connection_id): Path<String>,
) -> String {
    match hub
        .clients()
        .client(connection_id)
        .invoke::<i32>("Result", ())
        .await
    {
        Ok(value) => value.to_string(),
        Err(error) => error.to_string(),
    }
}

/// `GET /deployment`: build metadata (diagnostic only).
pub(crate) async fn deployment() -> Response {
    Json(json!({
        "Server": env!("CARGO_PKG_NAME"),
        "Version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

fn query_value(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: Option<&str>) -> String {
        let uri: Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
        let host = host.map(HeaderValue::from_str).transpose();
        echo_redirect_location(&uri, host.unwrap_or(None).as_ref())
    }

    #[test]
    fn echo_redirect_locations_are_absolute_on_the_request_host() {
        assert_eq!(
            location("/echoredirect/negotiate?a=1", Some("127.0.0.1:5000")),
            "http://127.0.0.1:5000/echo/negotiate?a=1"
        );
        assert_eq!(
            location("/echoredirect?id=x", Some("localhost")),
            "http://localhost/echo?id=x"
        );
        // Absolute-form (and HTTP/2) requests carry their own scheme and authority.
        assert_eq!(
            location("https://example.test:8443/echoredirect", Some("ignored")),
            "https://example.test:8443/echo"
        );
        // Without a usable host, the redirect stays relative.
        assert_eq!(
            location("/echoredirect/negotiate?a=1", None),
            "/echo/negotiate?a=1"
        );
        assert_eq!(location("/echoredirect", Some("a b/c")), "/echo");
    }
}
