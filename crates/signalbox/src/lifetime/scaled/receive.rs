//! Receiving: the loop reading the backplane's message stream and the handling of each envelope.
//!
//! Sends, answers to this node's requests and aborts are handled in the loop itself (they never
//! wait). Group changes, client-result invocations and refresh answers for connections of this
//! node need to publish (and an invocation waits for the client), so each runs in a task of its
//! own, but at most [`ScaledOptions::max_envelopes_in_flight`](super::ScaledOptions) of them at
//! once: when that many are running, the loop waits for one to finish before it reads on, and
//! the backplane's own buffering and drop policy apply to what arrives meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use signalbox_protocol::{Payload, Protocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::channels::Route;
use super::envelope::{DecodeError, Envelope, GroupAction, ReturnOutcome, refresh_status};
use super::{LOG, Shared};
use crate::auth::Principal;
use crate::lifetime::backplane::{Backplane, BackplaneStream};
use crate::lifetime::{ClientResultError, RefreshError, Target};

/// The slots for envelope handlers running at once.
pub(super) struct InFlight {
    permits: Arc<Semaphore>,
    cap: usize,
}

impl InFlight {
    /// `cap` slots (at least one).
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    /// How many handlers are running.
    pub(super) fn count(&self) -> usize {
        self.cap - self.permits.available_permits()
    }

    /// The number of slots.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// A free slot, waiting (and counting the wait) while all are taken.
    async fn slot(&self) -> Option<Slot> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                crate::metrics::backplane_envelopes_waited();
                self.permits.clone().acquire_owned().await.ok()?
            }
            Err(TryAcquireError::Closed) => return None,
        };
        crate::metrics::backplane_envelopes_in_flight(1.0);
        Some(Slot { _permit: permit })
    }
}

/// A running handler's slot, given back when it is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::backplane_envelopes_in_flight(-1.0);
    }
}

/// What is left of an envelope's handling after [`handle`]: it waits, so it runs in a slot.
enum Work {
    /// Change a local connection's groups, then ack.
    Group {
        origin: String,
        id: u64,
        action: GroupAction,
        group: String,
        connection_id: String,
    },
    /// Invoke a client method on a local connection, then answer with the client's result.
    Invoke {
        origin: String,
        id: u64,
        connection_id: String,
        protocol: Protocol,
        target: String,
        args: Vec<(Bytes, Bytes)>,
    },
    /// Publish an answer.
    Reply { channel: String, envelope: Bytes },
}

/// Envelope versions already reported, so each unknown version is logged once.
struct SeenVersions([bool; 256]);

impl SeenVersions {
    /// Whether `version` is reported for the first time.
    fn first(&mut self, version: u8) -> bool {
        !std::mem::replace(&mut self.0[usize::from(version)], true)
    }
}

/// Reads the backplane's messages until the stream ends.
pub(super) async fn receive_loop<B: Backplane>(
    shared: Arc<Shared<B>>,
    mut stream: BackplaneStream,
) {
    let mut seen = SeenVersions([false; 256]);
    while let Some(message) = stream.next().await {
        crate::metrics::backplane_received();
        let envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(DecodeError::UnknownVersion(version)) => {
                crate::metrics::backplane_envelope_rejected(
                    crate::metrics::REJECTED_UNKNOWN_VERSION,
                );
                if seen.first(version) {
                    tracing::warn!(
                        target: LOG,
                        channel = %message.channel,
                        version,
                        supported = super::envelope::VERSION,
                        "backplane envelopes of an unknown version are ignored (a node of another \
                         release on the same channel prefix?); further ones of this version are \
                         only counted in signalbox_backplane_envelopes_rejected_total"
                    );
                }
                continue;
            }
            Err(error) => {
                crate::metrics::backplane_envelope_rejected(crate::metrics::REJECTED_MALFORMED);
                tracing::warn!(target: LOG, channel = %message.channel, %error, "malformed backplane message ignored");
                continue;
            }
        };
        let Some(work) = handle(&shared, &message.channel, envelope) else {
            continue;
        };
        // While every slot is taken the stream is not read: the backlog stays in the driver.
        let Some(slot) = shared.in_flight.slot().await else {
            break;
        };
        tokio::spawn(run(shared.clone(), work, slot));
    }
    tracing::debug!(target: LOG, "backplane message stream ended");
}

/// Does the waiting part of an envelope's handling, holding `slot` until it is done.
async fn run<B: Backplane>(shared: Arc<Shared<B>>, work: Work, slot: Slot) {
    match work {
        Work::Group {
            origin,
            id,
            action,
            group,
            connection_id,
        } => {
            match action {
                GroupAction::Add => shared.add_local(&connection_id, &group).await,
                GroupAction::Remove => shared.remove_local(&connection_id, &group).await,
            }
            let ack = Envelope::Ack { id }.encode();
            shared.publish(&shared.channels.ack(&origin), ack).await;
        }
        Work::Invoke {
            origin,
            id,
            connection_id,
            protocol,
            target,
            args,
        } => {
            let reply = shared.channels.ret(&origin);
            let accepted = Envelope::Return {
                id,
                outcome: ReturnOutcome::Accepted,
            };
            if !shared.publish(&reply, accepted.encode()).await {
                return;
            }
            let started = args_for(protocol, args).and_then(|arguments| {
                shared
                    .local
                    .start_invoke_local(&connection_id, target, arguments)
            });
            let result = match started {
                Ok(answer) => {
                    // Waiting for the client may take as long as the client likes: the slot is
                    // for the work of queuing the invocation, so that slow clients never stop
                    // this node from reading the backplane.
                    drop(slot);
                    answer.await
                }
                Err(error) => Err(error),
            };
            let done = Envelope::Return {
                id,
                outcome: ReturnOutcome::Done(result),
            };
            shared.publish(&reply, done.encode()).await;
        }
        Work::Reply { channel, envelope } => {
            shared.publish(&channel, envelope).await;
        }
    }
    // Otherwise `slot` is released here, when the work is done.
}

/// Handles an envelope as far as it can be without waiting; returns what is left to do.
fn handle<B: Backplane>(shared: &Shared<B>, channel: &str, envelope: Envelope) -> Option<Work> {
    match envelope {
        Envelope::Send {
            origin,
            excluded,
            json,
            msgpack,
            trace,
        } => {
            if origin == shared.node_id {
                return None;
            }
            // Traced by the publisher: deliver in a child of its span.
            let span = if trace.is_empty() || crate::trace::propagator().is_none() {
                tracing::Span::none()
            } else {
                let span = tracing::info_span!(
                    target: LOG,
                    parent: None,
                    "backplane receive",
                    otel.kind = "consumer",
                    messaging.destination.name = channel,
                    messaging.operation.type = "receive",
                    signalr.node = %shared.node_id,
                );
                crate::trace::set_parent(&span, &trace);
                span
            };
            let _entered = span.enter();
            let target = match shared.channels.route(channel) {
                Some(Route::All) if excluded.is_empty() => Target::All,
                Some(Route::All) => Target::AllExcept(excluded),
                Some(Route::Group(group)) => Target::GroupExcept(group.to_owned(), excluded),
                Some(Route::User(user)) => Target::User(user.to_owned()),
                Some(Route::Connection(id)) => Target::Connection(id.to_owned()),
                Some(Route::Internal) | None => {
                    tracing::debug!(target: LOG, channel, "send envelope on an unexpected channel");
                    return None;
                }
            };
            for handle in shared.local.recipients(&target) {
                let frame = match handle.protocol() {
                    Protocol::Json => &json,
                    Protocol::MessagePack => &msgpack,
                };
                if frame.is_empty() {
                    tracing::warn!(target: LOG, protocol = %handle.protocol(), "message from another node has no frame for this protocol");
                    continue;
                }
                handle.try_send(frame.clone());
            }
            None
        }
        Envelope::Group {
            origin,
            id,
            action,
            group,
            connection_id,
        } => {
            shared.local.connection(&connection_id)?;
            Some(Work::Group {
                origin,
                id,
                action,
                group,
                connection_id,
            })
        }
        Envelope::Ack { id } => {
            shared.acks.answer(id, ());
            None
        }
        Envelope::Invoke {
            origin,
            id,
            connection_id,
            target,
            args,
        } => {
            let handle = shared.local.connection(&connection_id)?;
            Some(Work::Invoke {
                origin,
                id,
                connection_id,
                protocol: handle.protocol(),
                target,
                args,
            })
        }
        Envelope::Return { id, outcome } => {
            shared.returns.answer(id, outcome);
            None
        }
        Envelope::Refresh {
            origin,
            id,
            connection_id,
            user_id,
            claims,
        } => {
            // Only the node holding the connection answers; the others stay silent.
            let handle = shared.local.connection(&connection_id)?;
            let result = match principal_from(&claims, user_id) {
                Some(principal) => handle.refresh_principal(principal),
                None => {
                    tracing::warn!(target: LOG, "malformed claims in a refresh from another node");
                    Err(RefreshError::NotFound)
                }
            };
            let reply = Envelope::Refreshed {
                id,
                status: refresh_status(&result),
            };
            Some(Work::Reply {
                channel: shared.channels.ack(&origin),
                envelope: reply.encode(),
            })
        }
        Envelope::Refreshed { id, status } => {
            shared.refreshes.answer(id, status);
            None
        }
        Envelope::Abort => {
            if let Some(Route::Connection(id)) = shared.channels.route(channel)
                && let Some(handle) = shared.local.connection(id)
            {
                handle.abort();
            }
            None
        }
    }
}

fn args_for(
    protocol: Protocol,
    args: Vec<(Bytes, Bytes)>,
) -> Result<Vec<Payload>, ClientResultError> {
    args.into_iter()
        .map(|(json, msgpack)| match protocol {
            Protocol::Json => String::from_utf8(json.to_vec())
                .map_err(|e| ClientResultError::Send(e.to_string()))
                .and_then(|text| {
                    Payload::from_json_text(text)
                        .map_err(|e| ClientResultError::Send(e.to_string()))
                }),
            Protocol::MessagePack => Ok(Payload::MessagePack(msgpack)),
        })
        .collect()
}

/// The principal a refresh envelope describes: its claims, and its user id as the sending node
/// resolved it (which need not be a claim's value).
fn principal_from(claims: &[u8], user_id: Option<String>) -> Option<Principal> {
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(claims).ok()?;
    Some(match user_id {
        Some(user_id) => Principal::with_user_id(claims, user_id),
        None => {
            // No user id: name a claim type the claims do not have.
            let mut absent = String::from("\u{0}");
            while claims.contains_key(&absent) {
                absent.push('\u{0}');
            }
            Principal::new(claims, &absent)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_are_reported_once_each() {
        let mut seen = SeenVersions([false; 256]);
        assert!(seen.first(2));
        assert!(!seen.first(2));
        assert!(seen.first(0));
        assert!(seen.first(255));
        assert!(!seen.first(255));
    }

    fn principal(claims: serde_json::Value) -> Principal {
        let serde_json::Value::Object(map) = claims else {
            unreachable!()
        };
        Principal::new(map, "sub")
    }

    #[test]
    fn refresh_principals_cross_intact() {
        let p = principal(serde_json::json!({"sub": "alice", "exp": 5, "r": ["a", "b"]}));
        let claims = serde_json::to_vec(p.claims()).unwrap();
        let back = principal_from(&claims, p.user_id().map(str::to_owned)).unwrap();
        assert_eq!(back, p);
        let anonymous = principal(serde_json::json!({"x": 1, "\u{0}": "y"}));
        let claims = serde_json::to_vec(anonymous.claims()).unwrap();
        let back = principal_from(&claims, None).unwrap();
        assert_eq!(back, anonymous);
        assert_eq!(back.user_id(), None);
        assert!(principal_from(b"[1]", None).is_none());
    }
}
