//! Groups: named sets of users the publish API can address. Managing them needs the notify
//! permission claim.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::Groups;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Notifier;
use crate::auth::accounts::Accounts;

/// The members of a group.
#[utoipa::path(
    get, path = "/api/groups/{group}/members", tag = "groups",
    params(("group" = String, Path, description = "Group name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Members", body = Vec<String>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "The caller lacks the notify permission", body = ErrorBody),
    )
)]
pub async fn members(
    State(groups): State<Groups>,
    _notifier: Notifier,
    Path(group): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(groups.members(&group).await?))
}

/// Adds a user to a group (idempotent).
#[utoipa::path(
    put, path = "/api/groups/{group}/members/{user}", tag = "groups",
    params(
        ("group" = String, Path, description = "Group name"),
        ("user" = String, Path, description = "User name"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Added"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "The caller lacks the notify permission", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub async fn add_member(
    State(groups): State<Groups>,
    State(accounts): State<Accounts>,
    _notifier: Notifier,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    add(&groups, &accounts, &group, &user).await
}

/// Removes a user from a group.
#[utoipa::path(
    delete, path = "/api/groups/{group}/members/{user}", tag = "groups",
    params(
        ("group" = String, Path, description = "Group name"),
        ("user" = String, Path, description = "User name"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "The caller lacks the notify permission", body = ErrorBody),
        (status = 404, description = "Not a member", body = ErrorBody),
    )
)]
pub async fn remove_member(
    State(groups): State<Groups>,
    _notifier: Notifier,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    remove(&groups, &group, &user).await
}

/// Adds an existing user to a group (idempotent): the body of this API's and the admin API's
/// `PUT …/members/{user}`, whatever authorized the caller.
pub(crate) async fn add(
    groups: &Groups,
    accounts: &Accounts,
    group: &str,
    user: &str,
) -> Result<StatusCode, ApiError> {
    if group.is_empty() || group.len() > 128 {
        return Err(ApiError::BadRequest(
            "group names are 1 to 128 bytes".to_owned(),
        ));
    }
    if !accounts.exists(user).await? {
        return Err(ApiError::NotFound(format!("unknown user '{user}'")));
    }
    groups.add_member(group, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user from a group, 404 if not a member: the body of both `DELETE …/members/{user}`.
pub(crate) async fn remove(
    groups: &Groups,
    group: &str,
    user: &str,
) -> Result<StatusCode, ApiError> {
    if groups.remove_member(group, user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "'{user}' is not a member of '{group}'"
        )))
    }
}
