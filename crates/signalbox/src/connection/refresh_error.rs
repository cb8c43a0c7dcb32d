//! Why an authentication refresh was refused.

/// Why an authentication refresh (`POST {hub}/refresh`) was not applied to a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// No node holds the connection (or it does not take refreshes).
    #[error("connection not found")]
    NotFound,
    /// The new token's user differs from the connection's: a refresh may never change the user.
    #[error("a refresh may not change the connection's user")]
    PermissionChangeRejected,
    /// The refresh could not be forwarded to the node holding the connection.
    #[error("backplane error: {0}")]
    Backplane(String),
}

impl RefreshError {
    /// The `error` code of the refresh endpoint's JSON answer (as ASP.NET Core 11):
    /// `connection_not_found`, `permission_change_rejected` or `internal_server_error`.
    pub fn code(&self) -> &'static str {
        match self {
            RefreshError::NotFound => "connection_not_found",
            RefreshError::PermissionChangeRejected => "permission_change_rejected",
            RefreshError::Backplane(_) => "internal_server_error",
        }
    }
}
