//! The delivery worker of one node: claims due events (with a lease, so no other node attempts
//! them meanwhile), POSTs them signed, records each outcome and schedules retries; deletes old
//! entries of the delivery log and keeps the pending gauge up to date.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::delivery::{Attempt, WebhookRequest, display_url};
use super::store::{self, AttemptRecord, ClaimedEvent, Status};
use super::{DELIVERIES, Inner, PENDING, signature};
use crate::clock::{duration_ms, now_ms, now_secs};

/// Events claimed (and attempted concurrently) at once: every claimed event's attempt starts at
/// once, well within its lease.
const BATCH: i64 = 16;

/// The longest the worker sleeps without looking for due events (those of other nodes too).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest sleep when due events could not be claimed (another node holds them, or an
/// earlier event of the same user is still pending).
const IDLE_FLOOR: Duration = Duration::from_millis(100);

/// How long the worker waits after a database error.
const ERROR_PAUSE: Duration = Duration::from_secs(2);

/// A claim lasts two attempt timeouts plus this.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// How often old entries of the delivery log are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// How often the pending gauge is refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// At most this many delivered and failed events are kept.
const LOG_CAP: i64 = 10_000;

/// How long [`WebhookWorker::stop`] lets attempts under way finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The longest error text (or receiver's answer) kept per event.
const ERROR_TEXT_MAX: usize = 300;

/// The running worker of this node.
#[derive(Debug)]
pub struct WebhookWorker {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    db: crate::db::Db,
    node: String,
}

impl WebhookWorker {
    pub(super) fn start(inner: Arc<Inner>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let db = inner.db.clone();
        let node = inner.node.clone();
        tracing::info!(url = %display_url(&inner.url), events = ?inner.config.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(), "webhooks on");
        let task = tokio::spawn(run(inner, stopped));
        Self {
            task,
            stop,
            db,
            node,
        }
    }

    /// Stops the worker (attempts under way get a few seconds to finish) and gives up the claims
    /// it still holds, so that those events are attempted again at once (by any node, or by
    /// this one after a restart).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true); // the task may have ended already
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        match store::release(&self.db, &self.node).await {
            Ok(0) => {}
            Ok(released) => tracing::debug!(released, "webhook claims given up at shutdown"),
            Err(error) => tracing::warn!(%error, "cannot give up this node's webhook claims"),
        }
    }
}

async fn run(inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    let mut next_purge = Instant::now();
    let mut next_gauge = Instant::now();
    loop {
        if *stopped.borrow() {
            return;
        }
        let now = Instant::now();
        if now >= next_purge {
            next_purge = now + PURGE_INTERVAL;
            purge(&inner).await;
        }
        if now >= next_gauge {
            next_gauge = now + GAUGE_INTERVAL;
            refresh_gauge(&inner).await;
        }
        let pause = match deliver_due(&inner).await {
            Ok(0) => idle_time(&inner).await,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhook events");
                ERROR_PAUSE
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = inner.wake.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// How long to sleep when nothing could be claimed: until the next event is due, within
/// [`IDLE_FLOOR`] and [`POLL_INTERVAL`].
async fn idle_time(inner: &Inner) -> Duration {
    let now = now_ms();
    match store::next_due(&inner.db, now).await {
        Ok(Some(due)) => {
            let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
            Duration::from_millis(wait).clamp(IDLE_FLOOR, POLL_INTERVAL)
        }
        Ok(None) => POLL_INTERVAL,
        Err(error) => {
            tracing::warn!(%error, "cannot read when the next webhook event is due");
            ERROR_PAUSE
        }
    }
}

/// Claims due events and attempts them; returns how many were claimed.
async fn deliver_due(inner: &Inner) -> Result<usize, crate::db::StoreError> {
    let now = now_ms();
    let lease = duration_ms(inner.config.timeout.saturating_mul(2) + LEASE_MARGIN);
    let claimed = store::claim(
        &inner.db,
        &inner.node,
        now,
        now.saturating_add(lease),
        BATCH,
    )
    .await?;
    let count = claimed.len();
    futures_util::stream::iter(claimed)
        .for_each_concurrent(None, |event| attempt(inner, event))
        .await;
    if count > 0 {
        refresh_gauge(inner).await;
    }
    Ok(count)
}

/// The signed request of an event: fresh timestamp and signature, the stored body.
fn request(inner: &Inner, event: &ClaimedEvent) -> Result<WebhookRequest, String> {
    let timestamp = now_secs().to_string();
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| "the event cannot be sent as a header".to_owned())
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-signalbox-event"),
        value(&event.event)?,
    );
    headers.insert(
        HeaderName::from_static("x-signalbox-delivery"),
        value(&event.id)?,
    );
    headers.insert(
        HeaderName::from_static("x-signalbox-timestamp"),
        value(&timestamp)?,
    );
    headers.insert(
        HeaderName::from_static("x-signalbox-signature"),
        value(&signature(&inner.secret, &timestamp, &event.body))?,
    );
    Ok(WebhookRequest {
        url: inner.url.clone(),
        headers,
        body: Bytes::from(event.body.clone()),
    })
}

/// Text cut to [`ERROR_TEXT_MAX`] characters.
fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(ERROR_TEXT_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What went wrong with an attempt that did not succeed.
fn failure_text(attempt: &Attempt) -> String {
    match attempt {
        Attempt::Response { status, body } if !body.is_empty() => shorten(&format!(
            "status {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(body)
        )),
        other => shorten(&other.describe()),
    }
}

/// One attempt of a claimed event, and its outcome recorded.
async fn attempt(inner: &Inner, event: ClaimedEvent) {
    let (success, retryable, http_status, error) = match request(inner, &event) {
        Ok(request) => {
            let attempt = inner.delivery.attempt(&request).await;
            let success = attempt.is_success();
            let error = (!success).then(|| failure_text(&attempt));
            (
                success,
                attempt.is_retryable(),
                attempt.status().map(|s| i64::from(s.as_u16())),
                error,
            )
        }
        Err(error) => (false, false, None, Some(error)),
    };
    let now = now_ms();
    let attempts = u32::try_from(event.attempts).unwrap_or(u32::MAX);
    let (status, due_at, outcome) = if success {
        (Status::Delivered, now, "delivered")
    } else if retryable && attempts < inner.policy.max_attempts() {
        let delay = duration_ms(inner.policy.delay(attempts));
        (Status::Pending, now.saturating_add(delay), "retried")
    } else {
        (Status::Failed, now, "failed")
    };
    let record = AttemptRecord {
        status,
        http_status,
        error: error.as_deref(),
        due_at,
        now,
    };
    match store::finish(&inner.db, &event.id, &inner.node, &record).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(id = %event.id, "webhook event taken over by another node meanwhile");
        }
        Err(error) => {
            // The claim's lease ends and the event is attempted again.
            tracing::warn!(%error, id = %event.id, "cannot record a webhook attempt");
        }
    }
    metrics::counter!(DELIVERIES, "event" => known_event(&event.event), "outcome" => outcome)
        .increment(1);
    let error = error.unwrap_or_default();
    match status {
        Status::Delivered => {
            tracing::debug!(id = %event.id, event = %event.event, attempts, "webhook delivered");
        }
        Status::Pending => tracing::debug!(
            id = %event.id, event = %event.event, attempts, %error,
            "webhook attempt failed; will retry"
        ),
        Status::Failed => tracing::warn!(
            id = %event.id, event = %event.event, attempts, %error,
            url = %display_url(&inner.url), "webhook delivery failed"
        ),
    }
}

/// The `event` label: a known event type's name (labels stay bounded).
fn known_event(name: &str) -> &'static str {
    super::EventType::parse(name).map_or("unknown", super::EventType::as_str)
}

async fn purge(inner: &Inner) {
    let before = now_ms().saturating_sub(duration_ms(inner.config.retention));
    match store::purge(&inner.db, before, LOG_CAP).await {
        Ok(0) => {}
        Ok(deleted) => tracing::debug!(deleted, "old webhook deliveries deleted"),
        Err(error) => tracing::warn!(%error, "cannot delete old webhook deliveries"),
    }
}

/// Sets the pending gauge from the database.
async fn refresh_gauge(inner: &Inner) {
    match store::pending_count(&inner.db).await {
        #[allow(clippy::cast_precision_loss)] // a gauge
        Ok(n) => metrics::gauge!(PENDING).set(n as f64),
        Err(error) => tracing::debug!(%error, "cannot count pending webhook events"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut() {
        assert_eq!(shorten(" short "), "short");
        let long = "é".repeat(ERROR_TEXT_MAX + 10);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), ERROR_TEXT_MAX + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn unknown_events_have_a_bounded_label() {
        assert_eq!(known_event("user.online"), "user.online");
        assert_eq!(known_event("anything"), "unknown");
    }
}
