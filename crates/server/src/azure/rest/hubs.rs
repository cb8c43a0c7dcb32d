//! Operations on a whole hub: broadcast, close every connection, mint a client token, execute
//! commands on the connections a filter selects.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use signalbox::Target;

use super::{Call, RestError};
use crate::azure::directory::CloseScope;
use crate::azure::execute::Batch;

/// The default lifetime of a minted client token, in minutes.
pub(super) const DEFAULT_TOKEN_MINUTES: u64 = 60;

/// `POST /api/hubs/{hub}/:send` (`excluded`): every connection but the excluded ones.
pub(super) async fn broadcast(call: &Call) -> Result<Response, RestError> {
    let invocation = call.message()?;
    let target = if call.excluded().is_empty() {
        Target::All
    } else {
        Target::AllExcept(call.excluded().to_vec())
    };
    call.send(target, invocation).await
}

/// `POST /api/hubs/{hub}/:closeConnections` (`excluded`, `reason`).
pub(super) async fn close_all(call: &Call) -> Result<Response, RestError> {
    call.azure
        .directory
        .close(&call.hub, CloseScope::All, call.excluded(), call.reason())
        .await;
    Ok(call.done())
}

#[derive(Serialize)]
struct ClientTokenResponse {
    token: String,
}

/// `POST /api/hubs/{hub}/:generateToken` (`userId`, `minutesToExpire`): a client token for
/// `/client/?hub={hub}`, as the Management SDK would make it.
pub(super) fn generate_token(call: &Call) -> Result<Response, RestError> {
    let minutes = match call.query.minutes_to_expire.as_deref() {
        None | Some("") => DEFAULT_TOKEN_MINUTES,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|m| *m >= 1 && *m <= u64::from(u32::MAX))
            .ok_or_else(|| {
                RestError::BadRequest(format!(
                    "minutesToExpire must be a whole number of minutes of at least 1, not {text:?}"
                ))
            })?,
    };
    let user = call.query.user_id.as_deref().filter(|u| !u.is_empty());
    let audience = format!("{}/client/?hub={}", call.base_url, call.hub.name());
    let token = call
        .azure
        .keys
        .mint_client(&audience, user, Duration::from_secs(minutes * 60))
        .map_err(|error| RestError::Internal(error.to_string()))?;
    Ok((call.success, Json(ClientTokenResponse { token })).into_response())
}

/// `POST /api/hubs/{hub}/:execute` (`filter`): applies the commands of the body, in order, to
/// each connection the OData filter selects (every connection without one), on every node.
pub(super) async fn execute(call: &Call) -> Result<Response, RestError> {
    let filter = call
        .query
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let body = std::str::from_utf8(&call.body)
        .map_err(|_| RestError::BadRequest("the body must be UTF-8 JSON".to_owned()))?;
    let batch = Batch::parse(filter, body).map_err(|error| RestError::BadRequest(error.0))?;
    call.azure.directory.execute(&call.hub, &batch).await;
    Ok(call.done())
}
