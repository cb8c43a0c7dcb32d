//! Groups: named sets of users the publish API can address. Managing them needs the notify
//! permission claim.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Notifier;
use crate::db::Db;

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
    State(db): State<Db>,
    _notifier: Notifier,
    Path(group): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(db.group_members(&group).await?))
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
    State(db): State<Db>,
    _notifier: Notifier,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if group.is_empty() || group.len() > 128 {
        return Err(ApiError::BadRequest(
            "group names are 1 to 128 bytes".to_owned(),
        ));
    }
    if db.user(&user).await?.is_none() {
        return Err(ApiError::NotFound(format!("unknown user '{user}'")));
    }
    db.add_group_member(&group, &user).await?;
    Ok(StatusCode::NO_CONTENT)
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
    State(db): State<Db>,
    _notifier: Notifier,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if db.remove_group_member(&group, &user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("'{user}' is not in '{group}'")))
    }
}
