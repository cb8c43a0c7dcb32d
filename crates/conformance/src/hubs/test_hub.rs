//! `TestHub` (`TestHub.cs` of the official app; spec §10.3): echo, errors, server-to-client calls,
//! complex objects and what the connection's HTTP request carried.
//!
//! Still to come: the streaming methods `Stream`,
//! `InfiniteStream`, `StreamingConcat`, `EmptyStream` and `StreamThrowException`, and the
//! `/testhub-nowebsockets` endpoint (SSE and long polling only).

use signalbox::{Caller, Hub, HubError};

use super::hub_options;
use crate::complex_object::{ComplexObject, CustomObject};

/// The message of an `InvalidOperationException` constructed without one.
const DEFAULT_INVALID_OPERATION: &str =
    "Operation is not valid due to the current state of the object.";

/// Builds `TestHub`. It offers the library's default transports (every transport the library
/// serves), as the official app offers all three.
pub(crate) fn test_hub() -> Hub {
    Hub::builder("TestHub")
        .options(hub_options())
        .method("Echo", |_caller: Caller, (message,): (Option<String>,)| async move {
            Ok::<_, HubError>(message)
        })
        .method("GetCallerConnectionId", |caller: Caller, ()| async move {
            Ok::<_, HubError>(caller.connection_id().to_owned())
        })
        .method("GetNumRedirects", |caller: Caller, ()| async move {
            num_redirects(caller.request().query("numRedirects"))
        })
        .method("ThrowException", |_caller: Caller, (message,): (Option<String>,)| async move {
            let message = message.unwrap_or_else(|| DEFAULT_INVALID_OPERATION.to_owned());
            Err::<(), _>(HubError::exception("InvalidOperationException", message))
        })
        .method("InvokeWithString", |caller: Caller, (message,): (Option<String>,)| async move {
            caller.clients().caller().send("Message", (message,)).await?;
            Ok::<_, HubError>(())
        })
        .method("SendCustomObject", |caller: Caller, (object,): (Option<CustomObject>,)| async move {
            caller.clients().caller().send("CustomObject", (object,)).await?;
            Ok::<_, HubError>(())
        })
        .method("GetActiveTransportName", |caller: Caller, ()| async move {
            Ok::<_, HubError>(caller.transport().name())
        })
        .method("EchoComplexObject", |_caller: Caller, (object,): (Option<ComplexObject>,)| async move {
            Ok::<_, HubError>(object)
        })
        .method("SendComplexObject", |_caller: Caller, ()| async move {
            Ok::<_, HubError>(ComplexObject::sample())
        })
        .method("GetContentTypeHeader", |caller: Caller, ()| async move {
            Ok::<_, HubError>(header(&caller, "Content-Type"))
        })
        .method("GetHeader", |caller: Caller, (name,): (Option<String>,)| async move {
            Ok::<_, HubError>(name.and_then(|name| header(&caller, &name)))
        })
        .method("GetCookie", |caller: Caller, (name,): (Option<String>,)| async move {
            let value = name.and_then(|name| caller.request().cookie(&name).map(str::to_owned));
            Ok::<_, HubError>(value)
        })
        .build()
}

/// `int.Parse(Request.Query["numRedirects"])`, except that a missing value counts as 0.
fn num_redirects(value: Option<&str>) -> Result<i32, HubError> {
    match value {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            HubError::exception(
                "FormatException",
                format!("The input string '{text}' was not in a correct format."),
            )
        }),
    }
}

/// `Request.Headers[name]` as a string: every value joined with `,`; `None` when absent.
fn header(caller: &Caller, name: &str) -> Option<String> {
    let values: Vec<&str> = caller
        .request()
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_redirects_parses_like_int_parse() {
        assert_eq!(num_redirects(None).ok(), Some(0));
        assert_eq!(num_redirects(Some("3")).ok(), Some(3));
        assert_eq!(num_redirects(Some(" 12 ")).ok(), Some(12));
        let err = num_redirects(Some("x"))
            .err()
            .map(|e| e.type_name().to_owned());
        assert_eq!(err.as_deref(), Some("FormatException"));
    }
}
