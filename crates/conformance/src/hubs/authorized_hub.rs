//! `HubWithAuthorization` (`AuthorizedHub.cs` of the official app; spec §10.2): a hub that
//! requires a JWT carrying the NameIdentifier claim.

use signalbox::{Caller, Hub, HubError, JwtAuth, Policy};

use super::hub_options;
use crate::jwt::{NAME_IDENTIFIER, NAME_IDENTIFIER_CLAIM};

/// Builds `HubWithAuthorization`, validating tokens with `auth`.
pub(crate) fn authorized_hub(auth: JwtAuth) -> Hub {
    Hub::builder("HubWithAuthorization")
        .options(hub_options())
        .authentication(auth)
        // `policy.RequireClaim(ClaimTypes.NameIdentifier)`; .NET reads it from the JWT `nameid`.
        .authorize(Policy::require_claim(NAME_IDENTIFIER_CLAIM))
        .method("Echo", |_caller: Caller, (message,): (Option<String>,)| async move {
            Ok::<_, HubError>(message)
        })
        .method("GetUserNameIdentifier", |caller: Caller, ()| async move {
            // `Context.User?.FindFirst(ClaimTypes.NameIdentifier)?.Value ?? string.Empty`
            let value = first_claim(&caller, NAME_IDENTIFIER)
                .or_else(|| first_claim(&caller, NAME_IDENTIFIER_CLAIM))
                .unwrap_or_default();
            Ok::<_, HubError>(value)
        })
        .method("GetUserClaim", |caller: Caller, (claim_type,): (Option<String>,)| async move {
            // `Context.User?.FindFirst(type)?.Value ?? string.Empty`: absent claims give "".
            let value = claim_type
                .and_then(|t| first_claim(&caller, &t))
                .unwrap_or_default();
            Ok::<_, HubError>(value)
        })
        .build()
}

fn first_claim(caller: &Caller, claim_type: &str) -> Option<String> {
    caller
        .principal()?
        .claim_values(claim_type)
        .into_iter()
        .next()
}
