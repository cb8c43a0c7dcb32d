//! Typed hub method arguments (including upload streams) and client call arguments.

use serde::Serialize;
use serde::de::DeserializeOwned;
use signalbox_protocol::Payload;
use tokio::sync::mpsc;

use super::upload::{UploadEvent, UploadStream};

/// Why the arguments of an invocation could not be bound to a method's parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The invocation has the wrong number of arguments.
    #[error("Invocation provides {provided} argument(s) but target expects {expected}.")]
    Count {
        /// Arguments sent.
        provided: usize,
        /// Parameters of the method.
        expected: usize,
    },
    /// The invocation has the wrong number of upload streams.
    #[error("Client sent {provided} stream(s), Hub method expects {expected}.")]
    StreamCount {
        /// Streams sent.
        provided: usize,
        /// Stream parameters of the method.
        expected: usize,
    },
    /// An argument has the wrong type.
    #[error(
        "Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked."
    )]
    Type,
}

/// The values an invocation carries, consumed parameter by parameter.
#[derive(Debug)]
pub struct ArgumentBinder {
    payloads: std::vec::IntoIter<Payload>,
    streams: std::vec::IntoIter<mpsc::Receiver<UploadEvent>>,
}

impl ArgumentBinder {
    pub(crate) fn new(payloads: Vec<Payload>, streams: Vec<mpsc::Receiver<UploadEvent>>) -> Self {
        Self {
            payloads: payloads.into_iter(),
            streams: streams.into_iter(),
        }
    }
}

/// One parameter of a hub method: any deserialisable value, or an [`UploadStream`].
pub trait FromArgument: Sized + Send + 'static {
    /// Whether this parameter is fed by an upload stream rather than an argument.
    const IS_STREAM: bool = false;
    /// Takes this parameter's value.
    fn from_argument(binder: &mut ArgumentBinder) -> Result<Self, BindError>;
}

impl<T: DeserializeOwned + Send + 'static> FromArgument for T {
    fn from_argument(binder: &mut ArgumentBinder) -> Result<Self, BindError> {
        binder
            .payloads
            .next()
            .ok_or(BindError::Type)?
            .deserialize()
            .map_err(|_| BindError::Type)
    }
}

impl<T: DeserializeOwned + Send + 'static> FromArgument for UploadStream<T> {
    const IS_STREAM: bool = true;
    fn from_argument(binder: &mut ArgumentBinder) -> Result<Self, BindError> {
        binder
            .streams
            .next()
            .map(UploadStream::new)
            .ok_or(BindError::Type)
    }
}

/// The parameters of a hub method: `()` or a tuple of [`FromArgument`] types, bound in order.
pub trait HubArgs: Sized + Send + 'static {
    /// How many (non-stream) arguments the method takes.
    const COUNT: usize;
    /// How many upload streams the method takes.
    const STREAMS: usize;
    /// Binds the parameters; counts are checked first.
    fn bind(binder: ArgumentBinder, provided: usize, streams: usize) -> Result<Self, BindError>;
}

fn check_counts(
    provided: usize,
    streams: usize,
    expected: usize,
    expected_streams: usize,
) -> Result<(), BindError> {
    if streams != expected_streams {
        return Err(BindError::StreamCount {
            provided: streams,
            expected: expected_streams,
        });
    }
    if provided != expected {
        return Err(BindError::Count { provided, expected });
    }
    Ok(())
}

impl HubArgs for () {
    const COUNT: usize = 0;
    const STREAMS: usize = 0;
    fn bind(_binder: ArgumentBinder, provided: usize, streams: usize) -> Result<Self, BindError> {
        check_counts(provided, streams, 0, 0)
    }
}

macro_rules! impl_hub_args {
    ($($ty:ident),+) => {
        impl<$($ty),+> HubArgs for ($($ty,)+)
        where
            $($ty: FromArgument),+
        {
            const COUNT: usize = 0 $(+ (!$ty::IS_STREAM) as usize)+;
            const STREAMS: usize = 0 $(+ $ty::IS_STREAM as usize)+;
            fn bind(mut binder: ArgumentBinder, provided: usize, streams: usize) -> Result<Self, BindError> {
                check_counts(provided, streams, Self::COUNT, Self::STREAMS)?;
                Ok(($($ty::from_argument(&mut binder)?,)+))
            }
        }

        impl<$($ty),+> IntoArguments for ($($ty,)+)
        where
            $($ty: Serialize + Send + Sync + 'static),+
        {
            #[allow(non_snake_case)]
            fn into_arguments(self) -> Vec<Payload> {
                let ($($ty,)+) = self;
                vec![$(Payload::new($ty)),+]
            }
        }
    };
}

/// Arguments of a client method call: `()`, a tuple of serialisable values, or ready payloads.
pub trait IntoArguments {
    /// The argument list.
    fn into_arguments(self) -> Vec<Payload>;
}

impl IntoArguments for () {
    fn into_arguments(self) -> Vec<Payload> {
        Vec::new()
    }
}

impl IntoArguments for Vec<Payload> {
    fn into_arguments(self) -> Vec<Payload> {
        self
    }
}

impl_hub_args!(A1);
impl_hub_args!(A1, A2);
impl_hub_args!(A1, A2, A3);
impl_hub_args!(A1, A2, A3, A4);
impl_hub_args!(A1, A2, A3, A4, A5);
impl_hub_args!(A1, A2, A3, A4, A5, A6);
impl_hub_args!(A1, A2, A3, A4, A5, A6, A7);
impl_hub_args!(A1, A2, A3, A4, A5, A6, A7, A8);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn json(text: &str) -> Payload {
        Payload::Json(Arc::from(
            serde_json::value::RawValue::from_string(text.to_owned()).unwrap(),
        ))
    }

    fn bind<A: HubArgs>(payloads: Vec<Payload>, streams: usize) -> Result<A, BindError> {
        let n = payloads.len();
        let rxs = (0..streams).map(|_| mpsc::channel(1).1).collect();
        A::bind(ArgumentBinder::new(payloads, rxs), n, streams)
    }

    #[test]
    fn binds_tuples_in_order() {
        let (a, b): (String, i32) = bind(vec![json("\"x\""), json("5")], 0).unwrap();
        assert_eq!((a.as_str(), b), ("x", 5));
        bind::<()>(vec![], 0).unwrap();
    }

    #[test]
    fn reports_count_and_type_errors() {
        let err = bind::<(String,)>(vec![json("1"), json("2")], 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invocation provides 2 argument(s) but target expects 1."
        );
        assert_eq!(
            bind::<(String,)>(vec![json("1")], 0).unwrap_err(),
            BindError::Type
        );
        assert!(matches!(
            bind::<()>(vec![json("1")], 0),
            Err(BindError::Count { .. })
        ));
    }

    #[test]
    fn upload_streams_are_counted_separately() {
        assert_eq!(<(String, UploadStream<String>)>::COUNT, 1);
        assert_eq!(<(String, UploadStream<String>)>::STREAMS, 1);
        let (_s, _u): (String, UploadStream<String>) = bind(vec![json("\"x\"")], 1).unwrap();
        let err = bind::<(UploadStream<String>,)>(vec![], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Client sent 2 stream(s), Hub method expects 1."
        );
    }

    #[test]
    fn tuples_become_one_payload_per_element() {
        assert_eq!(("a", 1, true).into_arguments().len(), 3);
        assert!(().into_arguments().is_empty());
    }
}
