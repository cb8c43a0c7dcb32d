//! Errors raised by hub methods (SignalR's `HubException` and other exceptions).

use std::borrow::Cow;
use std::fmt;

/// An error returned by a hub method or lifecycle hook.
///
/// [`HubError::new`] is like throwing a `HubException`: its message always reaches the client.
/// Any other error ([`HubError::internal`], or any `std::error::Error` converted with `?`) is
/// reported to the client only as "An unexpected error occurred invoking 'X' on the server.",
/// unless detailed errors are enabled in [`HubOptions`](crate::HubOptions).
///
/// It deliberately does not implement `std::error::Error`, so that `?` converts any error into it.
pub struct HubError {
    public: bool,
    type_name: Cow<'static, str>,
    message: String,
}

impl HubError {
    /// An error whose message is shown to the client (`HubException`).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            public: true,
            type_name: Cow::Borrowed("HubException"),
            message: message.into(),
        }
    }

    /// An internal error: its message is shown only with detailed errors on.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::exception("Exception", message)
    }

    /// An internal error with a .NET-style exception type name, for clients and test suites that
    /// compare error texts (e.g. `InvalidOperationException`).
    pub fn exception(type_name: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            public: false,
            type_name: type_name.into(),
            message: message.into(),
        }
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exception type name shown in detailed errors.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Whether the message always reaches the client.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// `"<prefix>"`, or `"<prefix> <Type>: <message>"` when the error is public or `detailed`.
    pub(crate) fn render(&self, prefix: &str, detailed: bool) -> String {
        if self.public || detailed {
            format!("{prefix} {}: {}", self.type_name, self.message)
        } else {
            prefix.to_owned()
        }
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubError")
            .field("public", &self.public)
            .field("type_name", &self.type_name)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HubError {
    fn from(error: E) -> Self {
        HubError::internal(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "An unexpected error occurred invoking 'X' on the server.";

    #[test]
    fn public_errors_always_render_their_message() {
        let e = HubError::new("boom");
        assert_eq!(
            e.render(PREFIX, false),
            format!("{PREFIX} HubException: boom")
        );
    }

    #[test]
    fn internal_errors_render_only_when_detailed() {
        let e = HubError::exception("InvalidOperationException", "An error occurred.");
        assert_eq!(e.render(PREFIX, false), PREFIX);
        assert_eq!(
            e.render(PREFIX, true),
            format!("{PREFIX} InvalidOperationException: An error occurred.")
        );
    }

    #[test]
    fn std_errors_convert_to_internal() {
        fn fails() -> Result<(), HubError> {
            let _n: u32 = "x".parse()?;
            Ok(())
        }
        let e = fails().unwrap_err();
        assert!(!e.is_public());
        assert_eq!(e.type_name(), "Exception");
    }
}
