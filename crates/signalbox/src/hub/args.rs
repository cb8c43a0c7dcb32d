//! Typed hub method arguments and client call arguments.

use serde::Serialize;
use serde::de::DeserializeOwned;
use signalbox_protocol::Payload;

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
    /// An argument has the wrong type.
    #[error(
        "Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked."
    )]
    Type,
}

/// The parameters of a hub method: `()` or a tuple of deserialisable types, bound from the
/// invocation's arguments in order.
pub trait HubArgs: Sized + Send + 'static {
    /// How many arguments the method takes.
    const COUNT: usize;
    /// Types the arguments.
    fn from_payloads(arguments: Vec<Payload>) -> Result<Self, BindError>;
}

impl HubArgs for () {
    const COUNT: usize = 0;
    fn from_payloads(arguments: Vec<Payload>) -> Result<Self, BindError> {
        check_count(&arguments, 0)
    }
}

fn check_count(arguments: &[Payload], expected: usize) -> Result<(), BindError> {
    if arguments.len() == expected {
        Ok(())
    } else {
        Err(BindError::Count {
            provided: arguments.len(),
            expected,
        })
    }
}

macro_rules! impl_hub_args {
    ($count:expr; $($ty:ident),+) => {
        impl<$($ty),+> HubArgs for ($($ty,)+)
        where
            $($ty: DeserializeOwned + Send + 'static),+
        {
            const COUNT: usize = $count;
            fn from_payloads(arguments: Vec<Payload>) -> Result<Self, BindError> {
                check_count(&arguments, $count)?;
                let mut iter = arguments.iter();
                Ok(($(
                    match iter.next() {
                        Some(payload) => payload.deserialize::<$ty>().map_err(|_| BindError::Type)?,
                        None => return Err(BindError::Type),
                    },
                )+))
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

impl_hub_args!(1; A1);
impl_hub_args!(2; A1, A2);
impl_hub_args!(3; A1, A2, A3);
impl_hub_args!(4; A1, A2, A3, A4);
impl_hub_args!(5; A1, A2, A3, A4, A5);
impl_hub_args!(6; A1, A2, A3, A4, A5, A6);
impl_hub_args!(7; A1, A2, A3, A4, A5, A6, A7);
impl_hub_args!(8; A1, A2, A3, A4, A5, A6, A7, A8);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn json(text: &str) -> Payload {
        Payload::Json(Arc::from(
            serde_json::value::RawValue::from_string(text.to_owned()).unwrap(),
        ))
    }

    #[test]
    fn binds_tuples_in_order() {
        let (a, b): (String, i32) = HubArgs::from_payloads(vec![json("\"x\""), json("5")]).unwrap();
        assert_eq!((a.as_str(), b), ("x", 5));
        <()>::from_payloads(vec![]).unwrap();
    }

    #[test]
    fn reports_count_and_type_errors() {
        let err = <(String,)>::from_payloads(vec![json("1"), json("2")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invocation provides 2 argument(s) but target expects 1."
        );
        assert_eq!(
            <(String,)>::from_payloads(vec![json("1")]).unwrap_err(),
            BindError::Type
        );
        assert!(matches!(
            <()>::from_payloads(vec![json("1")]),
            Err(BindError::Count { .. })
        ));
    }

    #[test]
    fn tuples_become_one_payload_per_element() {
        assert_eq!(("a", 1, true).into_arguments().len(), 3);
        assert!(().into_arguments().is_empty());
    }
}
