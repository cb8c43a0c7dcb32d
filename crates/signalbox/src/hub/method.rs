//! Hub method descriptors: the typed handler erased to one signature, and its policy.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use serde::Serialize;
use signalbox_protocol::Payload;

use super::args::{BindError, HubArgs};
use super::caller::Caller;
use super::error::HubError;
use crate::auth::Policy;

/// Why an invocation failed.
pub(crate) enum InvokeError {
    Bind(BindError),
    Hub(HubError),
}

pub(crate) type ErasedHandler = Arc<
    dyn Fn(Caller, Vec<Payload>) -> BoxFuture<'static, Result<Payload, InvokeError>> + Send + Sync,
>;

/// One hub method.
#[derive(Clone)]
pub(crate) struct MethodDescriptor {
    pub(crate) handler: ErasedHandler,
    pub(crate) policy: Option<Policy>,
}

impl MethodDescriptor {
    pub(crate) fn new<A, R, F, Fut>(handler: F) -> Self
    where
        F: Fn(Caller, A) -> Fut + Send + Sync + 'static,
        A: HubArgs,
        Fut: Future<Output = Result<R, HubError>> + Send + 'static,
        R: Serialize + Send + Sync + 'static,
    {
        let handler: ErasedHandler =
            Arc::new(move |caller, arguments| match A::from_payloads(arguments) {
                Ok(args) => {
                    let fut = handler(caller, args);
                    async move { fut.await.map(Payload::new).map_err(InvokeError::Hub) }.boxed()
                }
                Err(error) => futures_util::future::ready(Err(InvokeError::Bind(error))).boxed(),
            });
        Self {
            handler,
            policy: None,
        }
    }
}
