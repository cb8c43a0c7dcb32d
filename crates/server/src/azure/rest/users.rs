//! Operations on a user: existence, send, close its connections, group memberships (stored, with
//! a ttl, for the connections it opens later too).

use std::time::Duration;

use axum::response::Response;
use signalbox::Target;

use super::error::codes;
use super::{Call, RestError};
use crate::azure::directory::CloseScope;

/// `HEAD|GET …/users/{user}`: 200 when the user has a connection, else 404
/// `Warning.User.NotExisted`.
pub(super) async fn exists(call: &Call, user: &str) -> Result<Response, RestError> {
    if call.azure.directory.user_exists(&call.hub, user).await {
        Ok(call.done())
    } else {
        Err(RestError::not_found(
            codes::USER_NOT_EXISTED,
            format!("User '{user}' does not exist."),
        ))
    }
}

/// `POST …/users/{user}/:send`.
pub(super) async fn send(call: &Call, user: &str) -> Result<Response, RestError> {
    let invocation = call.message()?;
    call.send(Target::User(user.to_owned()), invocation).await
}

/// `POST …/users/{user}/:closeConnections` (`excluded`, `reason`).
pub(super) async fn close(call: &Call, user: &str) -> Result<Response, RestError> {
    call.azure
        .directory
        .close(
            &call.hub,
            CloseScope::User(user.to_owned()),
            call.excluded(),
            call.reason(),
        )
        .await;
    Ok(call.done())
}

/// `DELETE …/users/{user}/groups`: the stored memberships and those of its connections.
pub(super) async fn leave_all_groups(call: &Call, user: &str) -> Result<Response, RestError> {
    // The connections first: they leave their user's stored groups too.
    call.azure
        .directory
        .remove_user_from_all_groups(&call.hub, user)
        .await;
    call.azure.store.remove_all(call.hub.name(), user).await?;
    Ok(call.done())
}

/// The `ttl` query parameter: whole seconds, at least 0.
fn ttl(call: &Call) -> Result<Option<Duration>, RestError> {
    match call.query.ttl.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i32>()
            .ok()
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map(|seconds| Some(Duration::from_secs(seconds)))
            .ok_or_else(|| {
                RestError::BadRequest(format!(
                    "ttl must be a whole number of seconds from 0 to 2147483647, not {text:?}"
                ))
            }),
    }
}

/// `PUT …/users/{user}/groups/{group}` (`ttl`): the user's current connections join the group;
/// unless `ttl` is 0, so do the connections it opens until the membership expires.
pub(super) async fn add_to_group(
    call: &Call,
    user: &str,
    group: &str,
) -> Result<Response, RestError> {
    let ttl = ttl(call)?;
    call.azure
        .store
        .add(call.hub.name(), user, group, ttl)
        .await?;
    call.azure
        .directory
        .add_user_to_group(&call.hub, user, group)
        .await;
    Ok(call.done())
}

/// `DELETE …/users/{user}/groups/{group}`.
pub(super) async fn remove_from_group(
    call: &Call,
    user: &str,
    group: &str,
) -> Result<Response, RestError> {
    call.azure
        .store
        .remove(call.hub.name(), user, group)
        .await?;
    call.azure
        .directory
        .remove_user_from_group(&call.hub, user, group)
        .await;
    Ok(call.done())
}

/// `HEAD|GET …/users/{user}/groups/{group}`: 200, or 404 `Info.User.NotInGroup`.
pub(super) async fn in_group(call: &Call, user: &str, group: &str) -> Result<Response, RestError> {
    if call
        .azure
        .directory
        .user_in_group(&call.hub, user, group)
        .await
    {
        Ok(call.done())
    } else {
        Err(RestError::not_found(
            codes::USER_NOT_IN_GROUP,
            format!("User '{user}' is not in group '{group}'."),
        ))
    }
}
