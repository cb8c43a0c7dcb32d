//! `TestHub` (`TestHub.cs` of the official app; spec §10.3): echo, errors, server-to-client calls,
//! streams both ways, complex objects and what the connection's HTTP request carried.

use std::sync::Arc;

use futures_util::{StreamExt as _, stream};
use signalbox::hub::UploadStream;
use signalbox::{
    Caller, ConnectionOptions, Hub, HubError, HubLifetimeManager, LocalLifetimeManager,
    TransportType,
};

use super::hub_options;
use crate::complex_object::{ComplexObject, CustomObject};

/// The message of an `InvalidOperationException` constructed without one.
const DEFAULT_INVALID_OPERATION: &str =
    "Operation is not valid due to the current state of the object.";

/// One `TestHub` type mounted at several paths, like `IHubContext<TestHub>` in the official app:
/// every endpoint shares one lifetime manager, so `/clientresult/{id}` reaches connections of
/// both `/testhub` and `/testhub-nowebsockets`.
#[derive(Clone)]
pub(crate) struct TestHubs {
    lifetime: Arc<dyn HubLifetimeManager>,
}

impl std::fmt::Debug for TestHubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHubs").finish_non_exhaustive()
    }
}

impl TestHubs {
    pub(crate) fn new() -> Self {
        Self {
            lifetime: Arc::new(LocalLifetimeManager::new()),
        }
    }

    /// `/testhub`: every transport, stateful reconnect allowed (the official app's
    /// `options.AllowStatefulReconnects = true`).
    pub(crate) fn all_transports(&self) -> Hub {
        self.build(
            ConnectionOptions::default()
                .transports(TransportType::ALL)
                .allow_stateful_reconnect(true),
        )
    }

    /// `/testhub-nowebsockets`: Server-Sent Events and long polling only.
    pub(crate) fn without_websockets(&self) -> Hub {
        self.build(
            ConnectionOptions::default()
                .transports([TransportType::ServerSentEvents, TransportType::LongPolling]),
        )
    }

    fn build(&self, connection_options: ConnectionOptions) -> Hub {
        test_hub(connection_options, self.lifetime.clone())
    }
}

/// Builds `TestHub` with the given transports on the shared lifetime manager.
fn test_hub(connection_options: ConnectionOptions, lifetime: Arc<dyn HubLifetimeManager>) -> Hub {
    Hub::builder("TestHub")
        .options(hub_options())
        .connection_options(connection_options)
        .lifetime_manager(lifetime)
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
        .stream("Stream", |_caller: Caller, ()| async move {
            Ok::<_, HubError>(stream::iter(["a", "b", "c"].map(Ok::<_, HubError>)))
        })
        .stream("InfiniteStream", |caller: Caller, ()| async move {
            // Never yields; when the client cancels, tell it with `StreamCanceled` (the official
            // hub registers that on its CancellationToken).
            let token = caller.cancellation_token();
            tokio::spawn(async move {
                token.cancelled().await;
                // The token also fires when the connection closes; nobody to tell then.
                let _ = caller.clients().caller().send("StreamCanceled", ()).await;
            });
            Ok::<_, HubError>(stream::pending::<Result<String, HubError>>())
        })
        .method(
            "StreamingConcat",
            |_caller: Caller, (mut parts,): (UploadStream<Option<String>>,)| async move {
                // A client-side stream error arrives as `Err(HubException)` and fails the call.
                let mut text = String::new();
                while let Some(part) = parts.next().await {
                    text.push_str(part?.as_deref().unwrap_or_default());
                }
                Ok::<_, HubError>(text)
            },
        )
        .stream("EmptyStream", |_caller: Caller, ()| async move {
            Ok::<_, HubError>(stream::empty::<Result<i32, HubError>>())
        })
        .stream("StreamThrowException", |_caller: Caller, (message,): (Option<String>,)| async move {
            let message = message.unwrap_or_else(|| DEFAULT_INVALID_OPERATION.to_owned());
            Err::<stream::Empty<Result<i32, HubError>>, _>(HubError::exception(
                "InvalidOperationException",
                message,
            ))
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
