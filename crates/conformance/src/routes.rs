//! Plain HTTP routes of the official app (spec §10.2): negotiate redirects, a 400 negotiate, the
//! echo redirect, client results from HTTP and `/deployment`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::LOCATION;
use http::{HeaderValue, StatusCode, Uri};
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
pub(crate) async fn echo_redirect(uri: Uri) -> Response {
    let mut location = uri.path().replace("echoredirect", "echo");
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
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
