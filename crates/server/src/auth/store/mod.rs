//! The tables of authentication: accounts (`users`), refresh-token families
//! (`refresh_tokens`), the session log (`auth_events`, account status) and pending server-side
//! sign-ins (`sign_in_flows`). Methods on [`crate::db::Db`].

mod refresh_tokens;
mod sessions;
mod sign_in_flows;
mod users;

pub use refresh_tokens::{RefreshTokenRow, RefreshTokenState};
pub use sessions::{AccountStatus, AuthEvent};
pub use sign_in_flows::{SignInFlowKind, SignInFlowRow, TakenSignInFlow};
pub use users::{AccountSummaryRow, UserRow};
