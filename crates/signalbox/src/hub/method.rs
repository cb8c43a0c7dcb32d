//! Hub method descriptors: typed handlers erased to one signature, their kind and policy.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use signalbox_protocol::Payload;

use super::args::{ArgumentBinder, BindError, HubArgs};
use super::caller::Caller;
use super::error::HubError;
use crate::auth::Policy;

/// Why an invocation failed.
pub(crate) enum InvokeError {
    Bind(BindError),
    Hub(HubError),
}

/// The values of one invocation, before binding.
pub(crate) struct Arguments {
    pub(crate) binder: ArgumentBinder,
    pub(crate) provided: usize,
    pub(crate) streams: usize,
}

pub(crate) type UnaryHandler = Arc<
    dyn Fn(Caller, Arguments) -> BoxFuture<'static, Result<Payload, InvokeError>> + Send + Sync,
>;

pub(crate) type ItemStream = BoxStream<'static, Result<Payload, HubError>>;

pub(crate) type StreamHandler = Arc<
    dyn Fn(Caller, Arguments) -> BoxFuture<'static, Result<ItemStream, InvokeError>> + Send + Sync,
>;

/// What a method returns.
#[derive(Clone)]
pub(crate) enum MethodKind {
    /// One result (Invocation → Completion).
    Unary(UnaryHandler),
    /// A stream of items (StreamInvocation → StreamItem… → Completion).
    Stream(StreamHandler),
}

/// One hub method.
#[derive(Clone)]
pub(crate) struct MethodDescriptor {
    pub(crate) kind: MethodKind,
    pub(crate) policy: Option<Policy>,
}

fn bind<A: HubArgs>(arguments: Arguments) -> Result<A, InvokeError> {
    A::bind(arguments.binder, arguments.provided, arguments.streams).map_err(InvokeError::Bind)
}

impl MethodDescriptor {
    pub(crate) fn unary<A, R, F, Fut>(handler: F) -> Self
    where
        F: Fn(Caller, A) -> Fut + Send + Sync + 'static,
        A: HubArgs,
        Fut: Future<Output = Result<R, HubError>> + Send + 'static,
        R: Serialize + Send + Sync + 'static,
    {
        let handler: UnaryHandler = Arc::new(move |caller, arguments| match bind::<A>(arguments) {
            Ok(args) => {
                let fut = handler(caller, args);
                async move { fut.await.map(Payload::new).map_err(InvokeError::Hub) }.boxed()
            }
            Err(error) => futures_util::future::ready(Err(error)).boxed(),
        });
        Self {
            kind: MethodKind::Unary(handler),
            policy: None,
        }
    }

    pub(crate) fn stream<A, T, S, F, Fut>(handler: F) -> Self
    where
        F: Fn(Caller, A) -> Fut + Send + Sync + 'static,
        A: HubArgs,
        Fut: Future<Output = Result<S, HubError>> + Send + 'static,
        S: Stream<Item = Result<T, HubError>> + Send + 'static,
        T: Serialize + Send + Sync + 'static,
    {
        let handler: StreamHandler =
            Arc::new(move |caller, arguments| match bind::<A>(arguments) {
                Ok(args) => {
                    let fut = handler(caller, args);
                    async move {
                        match fut.await {
                            Ok(stream) => Ok(stream.map(|item| item.map(Payload::new)).boxed()),
                            Err(error) => Err(InvokeError::Hub(error)),
                        }
                    }
                    .boxed()
                }
                Err(error) => futures_util::future::ready(Err(error)).boxed(),
            });
        Self {
            kind: MethodKind::Stream(handler),
            policy: None,
        }
    }
}
