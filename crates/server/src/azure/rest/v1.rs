//! The older API, `/api/v1/hubs/{hub}/…` (no `api-version`), still used by older SDKs and the
//! Azure Functions extension, served with the same operations as `/api/hubs/{hub}/…`:
//!
//! | v1 request | success | same as |
//! |---|---|---|
//! | `POST /api/v1/hubs/{hub}` (`excluded`) | 202 | `POST /api/hubs/{hub}/:send` |
//! | `POST …/users/{user}` | 202 | `POST …/users/{user}/:send` |
//! | `POST …/connections/{id}` | 202 | `POST …/connections/{id}/:send` |
//! | `GET`/`HEAD …/connections/{id}` | 200 / 404 | `HEAD …/connections/{id}` |
//! | `DELETE …/connections/{id}` (`reason`) | **202** | `DELETE …/connections/{id}` (200) |
//! | `POST …/groups/{group}` (`excluded`) | 202 | `POST …/groups/{group}/:send` |
//! | `GET`/`HEAD …/groups/{group}`, `…/users/{user}` | 200 / 404 | `HEAD` of the same path |
//! | `PUT`/`DELETE …/groups/{group}/connections/{id}` | 200 | the same path |
//! | `GET`/`HEAD …/groups/{group}/users/{user}` | 200 / 404 | `HEAD …/users/{user}/groups/{group}` |
//! | `PUT …/groups/{group}/users/{user}` (`ttl`) | **202** | `PUT …/users/{user}/groups/{group}` (200) |
//! | `DELETE …/groups/{group}/users/{user}` | **202** | `DELETE …/users/{user}/groups/{group}` (204) |
//! | `DELETE …/users/{user}/groups` | **200** | `DELETE …/users/{user}/groups` (204) |
//!
//! The v1 forms are also served under `/api/hubs/…` and the newer forms under `/api/v1/…`. The
//! statuses of the group-first user-group paths are those of v1 under either prefix; the two
//! paths both versions share answer with the status of the prefix used. Errors under `/api/v1`
//! are plain text.

use axum::http::StatusCode;

/// Success statuses of adding and removing through `…/groups/{group}/users/{user}`.
pub const USER_GROUP_ALIAS_STATUS: (StatusCode, StatusCode) =
    (StatusCode::ACCEPTED, StatusCode::ACCEPTED);

/// The success status of `DELETE …/connections/{id}`.
pub fn close_connection_status(legacy: bool) -> StatusCode {
    if legacy {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

/// The success status of `DELETE …/users/{user}/groups`.
pub fn remove_user_from_all_groups_status(legacy: bool) -> StatusCode {
    if legacy {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }
}
