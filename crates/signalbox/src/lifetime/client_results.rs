//! Pending client results: the server invoked a client method with an invocation id and waits for
//! the client's Completion (HubProtocol.md, "client results").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use signalbox_protocol::{Completion, CompletionOutcome, Payload};
use tokio::sync::oneshot;

/// Why a client result could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientResultError {
    /// No such connection.
    #[error("Connection '{0}' does not exist.")]
    NotFound(String),
    /// The connection closed before answering.
    #[error("Connection disconnected.")]
    Disconnected,
    /// The client answered with an error (for example `Client didn't provide a result.`).
    #[error("{0}")]
    Client(String),
    /// The result did not have the expected type.
    #[error("The client result could not be read: {0}")]
    InvalidResult(String),
    /// Client results need a single-connection target.
    #[error("Client results are only supported when invoking a single connection.")]
    NotSingleConnection,
    /// The invocation could not be sent.
    #[error("The invocation could not be sent: {0}")]
    Send(String),
}

struct Pending {
    connection_id: Arc<str>,
    tx: oneshot::Sender<Result<Payload, ClientResultError>>,
}

/// The table of invocations waiting for a client's answer, keyed by the server-chosen invocation id
/// (`s1`, `s2`, …).
#[derive(Default)]
pub struct ClientResults {
    pending: DashMap<String, Pending>,
    counter: AtomicU64,
}

impl std::fmt::Debug for ClientResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientResults")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Removes its pending entry when the waiting future is dropped (timeout, cancellation).
#[derive(Debug)]
pub struct PendingGuard<'a> {
    results: &'a ClientResults,
    id: String,
}

impl PendingGuard<'_> {
    /// The invocation id to send.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.results.pending.remove(&self.id);
    }
}

impl ClientResults {
    /// Registers a new pending invocation for `connection_id`.
    pub fn register(
        &self,
        connection_id: &str,
    ) -> (
        PendingGuard<'_>,
        oneshot::Receiver<Result<Payload, ClientResultError>>,
    ) {
        let id = format!("s{}", self.counter.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(
            id.clone(),
            Pending {
                connection_id: Arc::from(connection_id),
                tx,
            },
        );
        (PendingGuard { results: self, id }, rx)
    }

    /// Completes a pending invocation from the client's Completion; `false` if none matched (or it
    /// came from another connection).
    pub fn complete(&self, connection_id: &str, completion: Completion) -> bool {
        let Some((_, pending)) = self.pending.remove_if(&completion.invocation_id, |_, p| {
            &*p.connection_id == connection_id
        }) else {
            return false;
        };
        let result = match completion.outcome {
            CompletionOutcome::Result(payload) => Ok(payload),
            CompletionOutcome::Void => Ok(Payload::null()),
            CompletionOutcome::Error(error) => Err(ClientResultError::Client(error)),
        };
        // The waiter may have given up already.
        let _ = pending.tx.send(result);
        true
    }

    /// Fails every pending invocation of a connection that ended.
    pub fn connection_closed(&self, connection_id: &str) {
        let ids: Vec<String> = self
            .pending
            .iter()
            .filter(|e| &*e.connection_id == connection_id)
            .map(|e| e.key().clone())
            .collect();
        for id in ids {
            if let Some((_, pending)) = self.pending.remove(&id) {
                // The waiter may have given up already.
                let _ = pending.tx.send(Err(ClientResultError::Disconnected));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_only_from_the_invoked_connection() {
        let results = ClientResults::default();
        let (guard, rx) = results.register("c1");
        assert_eq!(guard.id(), "s1");
        assert!(!results.complete("c2", Completion::result("s1", Payload::new(1))));
        assert!(results.complete("c1", Completion::result("s1", Payload::new(10))));
        let value: i32 = rx.await.unwrap().unwrap().deserialize().unwrap();
        assert_eq!(value, 10);
    }

    #[tokio::test]
    async fn errors_disconnects_and_dropped_waiters() {
        let results = ClientResults::default();
        let (_g1, rx1) = results.register("c1");
        results.complete(
            "c1",
            Completion::error("s1", "Client didn't provide a result."),
        );
        assert_eq!(
            rx1.await.unwrap().unwrap_err(),
            ClientResultError::Client("Client didn't provide a result.".into())
        );
        let (_g2, rx2) = results.register("c1");
        results.connection_closed("c1");
        assert_eq!(
            rx2.await.unwrap().unwrap_err(),
            ClientResultError::Disconnected
        );
        let (g3, _rx3) = results.register("c1");
        drop(g3);
        assert!(results.pending.is_empty());
    }
}
