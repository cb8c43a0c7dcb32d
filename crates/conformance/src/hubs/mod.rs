//! The hubs of the functional-test app, one file each (spec §10.2–10.3).
//!
//! * [`test_hub`]: `TestHub` at `/testhub` and `/testhub-nowebsockets`.
//! * [`authorized_hub`]: `HubWithAuthorization` at `/authorizedhub`.

pub(crate) mod authorized_hub;
pub(crate) mod test_hub;

use signalbox::HubOptions;

/// The options of every hub: `EnableDetailedErrors = true`, the rest ASP.NET Core's defaults.
pub(crate) fn hub_options() -> HubOptions {
    HubOptions::default().enable_detailed_errors(true)
}
