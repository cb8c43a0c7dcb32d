//! The official app's hand-written CORS (spec §10.1, §11.20): any origin, with credentials.
//!
//! When the request has an `Origin`, it is echoed into `Access-Control-Allow-Origin` with
//! `Access-Control-Allow-Credentials: true`, and a requested method / header list is echoed into
//! `Access-Control-Allow-Methods` / `-Headers`. Every `OPTIONS` request is answered `204` without
//! reaching the routes. For tests only: this lets any web page call the server with credentials.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    ORIGIN,
};
use http::{HeaderValue, Method, StatusCode};

/// The CORS middleware (runs before routing).
pub(crate) async fn cors(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let origin = headers.get(ORIGIN).filter(|v| !v.is_empty()).cloned();
    let method = headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .filter(|v| !v.is_empty())
        .cloned();
    let requested_headers = headers
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
        .cloned();

    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };

    if let Some(origin) = origin {
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if let Some(method) = method {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, method);
        }
        if let Some(requested_headers) = requested_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested_headers);
        }
    }
    response
}
