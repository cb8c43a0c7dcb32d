//! Operations on a group: existence, send, close its connections, list and change its members.

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use signalbox::Target;

use super::error::codes;
use super::{Call, RestError};
use crate::azure::directory::{CloseScope, GroupMember};

/// The largest (and default) page of `…/groups/{group}/connections`.
pub(super) const MAX_PAGE_SIZE: usize = 200;

/// `HEAD|GET …/groups/{group}`: 200 when the group has a connection, else 404
/// `Warning.Group.NotExisted`.
pub(super) async fn exists(call: &Call, group: &str) -> Result<Response, RestError> {
    if call.azure.directory.group_exists(&call.hub, group).await {
        Ok(call.done())
    } else {
        Err(RestError::not_found(
            codes::GROUP_NOT_EXISTED,
            format!("Group '{group}' does not exist."),
        ))
    }
}

/// `POST …/groups/{group}/:send` (`excluded`).
pub(super) async fn send(call: &Call, group: &str) -> Result<Response, RestError> {
    let invocation = call.message()?;
    let target = if call.excluded().is_empty() {
        Target::Group(group.to_owned())
    } else {
        Target::GroupExcept(group.to_owned(), call.excluded().to_vec())
    };
    call.send(target, invocation).await
}

/// `POST …/groups/{group}/:closeConnections` (`excluded`, `reason`).
pub(super) async fn close(call: &Call, group: &str) -> Result<Response, RestError> {
    call.azure
        .directory
        .close(
            &call.hub,
            CloseScope::Group(group.to_owned()),
            call.excluded(),
            call.reason(),
        )
        .await;
    Ok(call.done())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupMemberPagedValues {
    value: Vec<GroupMember>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// A positive whole number, or a 400 naming the parameter.
fn positive(name: &str, text: &str) -> Result<usize, RestError> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            RestError::BadRequest(format!("{name} must be a whole number of at least 1"))
        })
}

/// `GET …/groups/{group}/connections` (`maxpagesize` 1–200, default 200; `top`: at most this
/// many in all pages; `continuationToken`): the members by connection id, a page at a time, with
/// `nextLink` to the next page.
pub(super) async fn list_connections(call: &Call, group: &str) -> Result<Response, RestError> {
    let query = &call.query;
    let page_size = match query.max_page_size.as_deref() {
        None | Some("") => MAX_PAGE_SIZE,
        Some(text) => positive("maxpagesize", text)?.min(MAX_PAGE_SIZE),
    };
    let top = match query.top.as_deref() {
        None | Some("") => None,
        Some(text) => Some(positive("top", text)?),
    };
    let after = match query.continuation_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| RestError::BadRequest("invalid continuationToken".to_owned()))?,
        ),
    };
    let members = call.azure.directory.group_members(&call.hub, group).await;
    let start = match &after {
        Some(after) => members.partition_point(|m| m.connection_id.as_str() <= after.as_str()),
        None => 0,
    };
    let take = page_size.min(top.unwrap_or(usize::MAX));
    let value: Vec<GroupMember> = members.iter().skip(start).take(take).cloned().collect();
    let left_in_top = top.map(|top| top - value.len());
    let more = start + value.len() < members.len() && left_in_top != Some(0);
    let next_link = match value.last() {
        Some(last) if more => Some(next_link(call, page_size, left_in_top, &last.connection_id)),
        _ => None,
    };
    Ok((
        call.success,
        Json(GroupMemberPagedValues { value, next_link }),
    )
        .into_response())
}

fn next_link(call: &Call, page_size: usize, top: Option<usize>, last: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(top) = top {
        query.append_pair("top", &top.to_string());
    }
    query.append_pair("maxpagesize", &page_size.to_string());
    query.append_pair("continuationToken", &URL_SAFE_NO_PAD.encode(last));
    if let Some(application) = &call.query.application {
        query.append_pair("application", application);
    }
    if let Some(version) = &call.query.api_version {
        query.append_pair("api-version", version);
    }
    format!("{}{}?{}", call.base_url, call.path, query.finish())
}

/// `PUT …/groups/{group}/connections/{id}`: 200, or 404 `Error.Connection.NotExisted`.
pub(super) async fn add_connection(
    call: &Call,
    group: &str,
    connection: &str,
) -> Result<Response, RestError> {
    if call
        .azure
        .directory
        .add_connection_to_group(&call.hub, connection, group)
        .await
    {
        Ok(call.done())
    } else {
        Err(RestError::not_found(
            codes::CONNECTION_NOT_EXISTED_ERROR,
            format!("Connection '{connection}' does not exist."),
        ))
    }
}

/// `DELETE …/groups/{group}/connections/{id}`: 200 whether or not it was a member.
pub(super) async fn remove_connection(
    call: &Call,
    group: &str,
    connection: &str,
) -> Result<Response, RestError> {
    call.azure
        .directory
        .remove_connection_from_group(&call.hub, connection, group)
        .await;
    Ok(call.done())
}
