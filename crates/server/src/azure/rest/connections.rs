//! Operations on one connection: existence, close, send, invoke with a result, leave all groups.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use signalbox::Target;
use signalbox::lifetime::ClientResultError;

use super::error::codes;
use super::{Call, INVOKE_TIMEOUT, RestError};
use crate::azure::directory::CloseScope;

fn missing(code: &'static str, id: &str) -> RestError {
    RestError::not_found(code, format!("Connection '{id}' does not exist."))
}

/// `HEAD|GET …/connections/{id}`: 200, or 404 `Warning.Connection.NotExisted`.
pub(super) async fn exists(call: &Call, id: &str) -> Result<Response, RestError> {
    if call.azure.directory.connection_exists(&call.hub, id).await {
        Ok(call.done())
    } else {
        Err(missing(codes::CONNECTION_NOT_EXISTED, id))
    }
}

/// `DELETE …/connections/{id}` (`reason`): closes the connection if it is open; succeeds either
/// way.
pub(super) async fn close(call: &Call, id: &str) -> Result<Response, RestError> {
    call.azure
        .directory
        .close(
            &call.hub,
            CloseScope::Connection(id.to_owned()),
            &[],
            call.reason(),
        )
        .await;
    Ok(call.done())
}

/// `POST …/connections/{id}/:send`.
pub(super) async fn send(call: &Call, id: &str) -> Result<Response, RestError> {
    let invocation = call.message()?;
    call.send(Target::Connection(id.to_owned()), invocation)
        .await
}

#[derive(Serialize)]
struct ClientInvocationResponse {
    result: Box<RawValue>,
}

/// `POST …/connections/{id}/:invoke`: invokes the client method and answers
/// `{"result": …}` with its result as JSON; 400 when the client answers with an error or not
/// within [`INVOKE_TIMEOUT`]; 404 `Error.Connection.NotExisted` for an unknown connection.
pub(super) async fn invoke(call: &Call, id: &str) -> Result<Response, RestError> {
    if !call.azure.directory.connection_exists(&call.hub, id).await {
        return Err(missing(codes::CONNECTION_NOT_EXISTED_ERROR, id));
    }
    let invocation = call.message()?;
    let pending = call.hub.context().lifetime_manager().invoke_client(
        id.to_owned(),
        invocation.target,
        invocation.arguments,
    );
    let payload = match tokio::time::timeout(INVOKE_TIMEOUT, pending).await {
        Err(_) => {
            return Err(RestError::InvocationFailed(format!(
                "The client did not answer within {} seconds.",
                INVOKE_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(ClientResultError::NotFound(_))) => {
            return Err(missing(codes::CONNECTION_NOT_EXISTED_ERROR, id));
        }
        Ok(Err(error)) => return Err(RestError::InvocationFailed(error.to_string())),
        Ok(Ok(payload)) => payload,
    };
    let mut json = Vec::new();
    payload.write_json(&mut json).map_err(|error| {
        RestError::InvocationFailed(format!("The client result is not JSON: {error}"))
    })?;
    let text = String::from_utf8(json).map_err(|_| {
        RestError::InvocationFailed("The client result is not UTF-8 JSON.".to_owned())
    })?;
    let result = RawValue::from_string(text).map_err(|error| {
        RestError::InvocationFailed(format!("The client result is not JSON: {error}"))
    })?;
    Ok((call.success, Json(ClientInvocationResponse { result })).into_response())
}

/// `DELETE …/connections/{id}/groups`.
pub(super) async fn leave_all_groups(call: &Call, id: &str) -> Result<Response, RestError> {
    call.azure
        .directory
        .remove_connection_from_all_groups(&call.hub, id)
        .await;
    Ok(call.done())
}
