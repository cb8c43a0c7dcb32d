//! Subscriptions: reference-counted per channel and changed by one task in batches, so that the
//! subscribe and unsubscribe calls for a channel reach the driver in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{LOG, Shared};
use crate::lifetime::backplane::Backplane;

/// A change of the reference counts of some channels; `done` is told once the driver was asked.
pub(super) struct SubscriptionChange {
    channels: Vec<String>,
    delta: i64,
    done: Option<oneshot::Sender<()>>,
}

impl SubscriptionChange {
    pub(super) fn new(
        channels: Vec<String>,
        delta: i64,
        done: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            channels,
            delta,
            done,
        }
    }
}

/// The subscription task: applies changes in batches, subscribing a channel when its count
/// becomes positive and unsubscribing it when it drops to zero.
pub(super) async fn run_subscriptions<B: Backplane>(
    shared: Arc<Shared<B>>,
    mut rx: mpsc::Receiver<SubscriptionChange>,
) {
    // Counts may go below zero for a moment when a leave overtakes its join; a channel is
    // subscribed while its count is positive.
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut subscribed: HashSet<String> = HashSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        let mut touched: HashSet<String> = HashSet::new();
        let mut waiters = Vec::new();
        for change in batch {
            for channel in change.channels {
                let count = counts.entry(channel.clone()).or_insert(0);
                *count += change.delta;
                if *count == 0 {
                    counts.remove(&channel);
                }
                touched.insert(channel);
            }
            waiters.extend(change.done);
        }
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        for channel in touched {
            let wanted = counts.get(&channel).is_some_and(|c| *c > 0);
            if wanted && !subscribed.contains(&channel) {
                subscribed.insert(channel.clone());
                add.push(channel);
            } else if !wanted && subscribed.remove(&channel) {
                remove.push(channel);
            }
        }
        if !add.is_empty()
            && let Err(error) = shared.backplane.subscribe(&add).await
        {
            // The driver remembers the channels and subscribes again once reconnected.
            tracing::warn!(target: LOG, %error, channels = add.len(), "subscribe failed; retried on reconnect");
        }
        if !remove.is_empty()
            && let Err(error) = shared.backplane.unsubscribe(&remove).await
        {
            tracing::warn!(target: LOG, %error, channels = remove.len(), "unsubscribe failed");
        }
        for waiter in waiters {
            // The waiter may have given up (its future was dropped).
            let _ = waiter.send(());
        }
    }
}

impl<B: Backplane> Shared<B> {
    /// Changes subscriptions and waits until the driver has been asked.
    pub(super) async fn change_subscriptions(&self, channels: Vec<String>, delta: i64) {
        if channels.is_empty() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .subscriptions
            .send(SubscriptionChange::new(channels, delta, Some(tx)))
            .await
            .is_ok()
        {
            // An error means the subscription task is gone (the manager is being dropped).
            let _ = rx.await;
        }
    }

    /// Adds a connection of this node to a group, joining the group's channel for its first
    /// local member.
    pub(super) async fn add_local(&self, connection_id: &str, group: &str) {
        if self.local.is_in_group(connection_id, group)
            || !self.local.add_local_to_group(connection_id, group)
        {
            return;
        }
        let newly = match self.locals.get_mut(connection_id) {
            Some(mut info) => info.groups.insert(group.to_owned()),
            None => false,
        };
        if newly {
            self.change_subscriptions(vec![self.channels.group(group)], 1)
                .await;
        }
    }

    /// Removes a connection of this node from a group, leaving the group's channel with its
    /// last local member.
    pub(super) async fn remove_local(&self, connection_id: &str, group: &str) {
        self.local.remove_local_from_group(connection_id, group);
        let removed = match self.locals.get_mut(connection_id) {
            Some(mut info) => info.groups.remove(group),
            None => false,
        };
        if removed {
            self.change_subscriptions(vec![self.channels.group(group)], -1)
                .await;
        }
    }
}
