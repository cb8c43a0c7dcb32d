//! Operations on connections of other nodes that wait for an answer: group changes (acked),
//! client-result invocations (accepted, then answered) and authentication refreshes (answered).
//! All three publish an envelope carrying a fresh request id and wait for the answers addressed
//! to that id, the first within the ack timeout; [`Pending`] and [`Shared::request`] do that once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use signalbox_protocol::Payload;
use tokio::sync::mpsc;

use super::Shared;
use super::envelope::{Envelope, GroupAction, ReturnOutcome, refresh_result};
use crate::auth::Principal;
use crate::lifetime::backplane::{Backplane, BackplaneError};
use crate::lifetime::{ClientResultError, RefreshError, SendError};

/// Requests of one kind waiting for answers of type `T`, by request id.
pub(super) struct Pending<T> {
    waiting: DashMap<u64, mpsc::Sender<T>>,
}

impl<T> Pending<T> {
    pub(super) fn new() -> Self {
        Self {
            waiting: DashMap::new(),
        }
    }

    /// Hands `answer` to the request `id`. Answers for requests nobody waits for (timed out, or
    /// made by another node) and answers beyond the number a request expects are dropped.
    pub(super) fn answer(&self, id: u64, answer: T) {
        if let Some(tx) = self.waiting.get(&id).map(|tx| tx.clone()) {
            // A full or closed queue means the caller has stopped waiting.
            let _ = tx.try_send(answer);
        }
    }

    /// Whether no request is waiting.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// A published request: its answers arrive here. Dropping it forgets the request.
pub(super) struct Request<'a, T> {
    pending: &'a Pending<T>,
    id: u64,
    answers: mpsc::Receiver<T>,
}

impl<T> Request<'_, T> {
    /// The next answer if it arrives within `timeout`.
    pub(super) async fn within(&mut self, timeout: Duration) -> Option<T> {
        tokio::time::timeout(timeout, self.answers.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next answer, however long it takes.
    pub(super) async fn next(&mut self) -> Option<T> {
        self.answers.recv().await
    }
}

impl<T> Drop for Request<'_, T> {
    fn drop(&mut self) {
        self.pending.waiting.remove(&self.id);
    }
}

impl<B: Backplane> Shared<B> {
    /// Publishes on `channel` the envelope `envelope` builds for a fresh request id, registered in
    /// `pending` for up to `answers` answers. The request is registered before it is published, so
    /// no answer can overtake it.
    pub(super) async fn request<'a, T>(
        &self,
        pending: &'a Pending<T>,
        answers: usize,
        channel: &str,
        envelope: impl FnOnce(u64) -> Envelope,
    ) -> Result<Request<'a, T>, BackplaneError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(answers.max(1));
        pending.waiting.insert(id, tx);
        let request = Request {
            pending,
            id,
            answers: rx,
        };
        self.backplane
            .publish(channel, envelope(id).encode())
            .await?;
        crate::metrics::backplane_published();
        Ok(request)
    }

    /// Forwards a group change for a connection of another node and waits for its ack.
    pub(super) async fn remote_group(
        &self,
        action: GroupAction,
        connection_id: &str,
        group: &str,
    ) -> Result<(), SendError> {
        let mut request = self
            .request(&self.acks, 1, &self.channels.internal_groups(), |id| {
                Envelope::Group {
                    origin: self.node_id.clone(),
                    id,
                    action,
                    group: group.to_owned(),
                    connection_id: connection_id.to_owned(),
                }
            })
            .await
            .map_err(|e| SendError::Backplane(e.to_string()))?;
        match request.within(self.ack_timeout).await {
            Some(()) => Ok(()),
            None => Err(SendError::Backplane(format!(
                "no node acknowledged the group change for connection '{connection_id}' within {:?}",
                self.ack_timeout
            ))),
        }
    }

    /// Invokes a client method on a connection of another node and waits for the client's
    /// answer.
    pub(super) async fn invoke_remote(
        &self,
        connection_id: &str,
        target: String,
        arguments: &[Payload],
    ) -> Result<Payload, ClientResultError> {
        let mut args = Vec::with_capacity(arguments.len());
        for argument in arguments {
            let (mut json, mut msgpack) = (Vec::new(), Vec::new());
            argument
                .write_json(&mut json)
                .map_err(|e| ClientResultError::Send(e.to_string()))?;
            argument
                .write_msgpack(&mut msgpack)
                .map_err(|e| ClientResultError::Send(e.to_string()))?;
            args.push((Bytes::from(json), Bytes::from(msgpack)));
        }
        let mut request = self
            .request(
                &self.returns,
                2,
                &self.channels.connection(connection_id),
                |id| Envelope::Invoke {
                    origin: self.node_id.clone(),
                    id,
                    connection_id: connection_id.to_owned(),
                    target,
                    args,
                },
            )
            .await
            .map_err(|e| ClientResultError::Send(e.to_string()))?;
        // The owning node answers `Accepted` at once; no answer means no node owns the connection.
        let outcome = match request.within(self.ack_timeout).await {
            Some(ReturnOutcome::Accepted) => request.next().await,
            Some(done) => Some(done),
            None => return Err(ClientResultError::NotFound(connection_id.to_owned())),
        };
        match outcome {
            Some(ReturnOutcome::Done(result)) => result,
            Some(ReturnOutcome::Accepted) | None => Err(ClientResultError::Disconnected),
        }
    }

    /// Forwards an authentication refresh to the node owning the connection and waits for its
    /// answer; no answer within the ack timeout means no node has it.
    pub(super) async fn refresh_remote(
        &self,
        connection_id: &str,
        principal: &Principal,
    ) -> Result<(), RefreshError> {
        let claims = serde_json::to_vec(principal.claims())
            .map_err(|e| RefreshError::Backplane(e.to_string()))?;
        let mut request = self
            .request(
                &self.refreshes,
                1,
                &self.channels.connection(connection_id),
                |id| Envelope::Refresh {
                    origin: self.node_id.clone(),
                    id,
                    connection_id: connection_id.to_owned(),
                    user_id: principal.user_id().map(str::to_owned),
                    claims: Bytes::from(claims),
                },
            )
            .await
            .map_err(|e| RefreshError::Backplane(e.to_string()))?;
        match request.within(self.ack_timeout).await {
            Some(status) => refresh_result(status),
            None => Err(RefreshError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_take_the_answers_they_expect_and_are_forgotten_when_dropped() {
        let pending = Pending::<u8>::new();
        let (tx, rx) = mpsc::channel(2);
        pending.waiting.insert(7, tx);
        let mut request = Request {
            pending: &pending,
            id: 7,
            answers: rx,
        };
        pending.answer(7, 1);
        pending.answer(8, 9); // nobody waits for 8
        pending.answer(7, 2);
        pending.answer(7, 3); // beyond the two expected
        assert_eq!(request.within(Duration::from_secs(1)).await, Some(1));
        assert_eq!(request.next().await, Some(2));
        assert_eq!(request.within(Duration::from_secs(1)).await, None);
        drop(request);
        assert!(pending.is_empty());
    }
}
