//! The OpenAPI 3 document (`/openapi.json`) and Swagger UI (`/swagger`, served from assets built
//! into the binary).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error;
use crate::auth::routes as auth;
use crate::auth::{external, oidc_login};
use crate::groups::routes as groups;
use crate::notifications::inbox::{InboxItem, Notification};
use crate::notifications::routes as notifications;
use crate::presence::PresenceChanged;
use crate::users::routes as users;

/// Adds the Bearer (JWT) security scheme.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /api/auth/login, as `Authorization: Bearer …`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "signalbox",
        description = "Notification service: accounts and tokens, presence, a durable inbox and a publish API. Real-time delivery is the SignalR hub at /hubs/notifications (client methods `Notification` and `PresenceChanged`).",
    ),
    paths(
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::jwks,
        external::external_login,
        oidc_login::start,
        oidc_login::callback,
        oidc_login::collect_session,
        notifications::list,
        notifications::mark_read,
        notifications::publish,
        users::presence,
        groups::members,
        groups::add_member,
        groups::remove_member,
    ),
    components(schemas(
        error::ErrorBody,
        auth::Credentials,
        auth::RefreshRequest,
        auth::TokenResponse,
        auth::RegisteredUser,
        external::ExternalLogin,
        notifications::PublishRequest,
        notifications::PublishResponse,
        notifications::StoredNotification,
        users::PresenceResponse,
        users::ConnectionInfo,
        InboxItem,
        Notification,
        PresenceChanged,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "notifications", description = "The inbox and the publish API"),
        (name = "users", description = "Presence"),
        (name = "groups", description = "Named sets of users for the publish API"),
    )
)]
pub struct ApiDoc;
