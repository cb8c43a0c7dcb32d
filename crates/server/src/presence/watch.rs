//! Who watches whose presence. A connection calls `WatchPresence(users)` to be told when those
//! users go online or offline, `WatchPresence(null)` for everyone; `UnwatchPresence` undoes it.
//! Watching is membership of SignalR groups, so it spans the nodes of a cluster: `presence:*`
//! (everyone) and `presence:user:NAME`. A connection watching everyone is in `presence:*` only,
//! never also in a user's group, so that it receives each edge once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use signalbox::HubContext;

use crate::config::PresenceBroadcast;

/// The group of the connections watching everyone.
pub const WATCH_ALL_GROUP: &str = "presence:*";

/// Most users one connection may watch by name.
pub const MAX_WATCHED: usize = 1000;

/// The group of the connections watching `user`.
pub fn watch_group(user: &str) -> String {
    format!("presence:user:{user}")
}

/// Why a watch request is refused.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Too many users for one connection.
    #[error("a connection may watch at most {MAX_WATCHED} users by name")]
    TooMany,
    /// Presence changes are not pushed (`presence.broadcast = off`).
    #[error("presence changes are not pushed by this server")]
    Off,
    /// A group change failed.
    #[error("cannot change the connection's presence groups: {0}")]
    Groups(String),
}

#[derive(Debug, Default)]
struct Watching {
    everyone: bool,
    users: BTreeSet<String>,
}

/// What the connections of this node watch, and the groups that follow from it.
#[derive(Debug, Default)]
pub struct Watchers {
    // std mutex: never held across an await.
    by_connection: Mutex<HashMap<String, Watching>>,
}

/// Group changes to make after the state changed.
#[derive(Debug, Default)]
struct GroupChanges {
    add: Vec<String>,
    remove: Vec<String>,
}

impl Watchers {
    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watching>> {
        self.by_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts watching `users` (`None`: everyone) for `connection_id`.
    pub async fn watch(
        &self,
        hub: &HubContext,
        mode: PresenceBroadcast,
        connection_id: &str,
        users: Option<&[String]>,
    ) -> Result<(), WatchError> {
        if mode == PresenceBroadcast::Off {
            return Err(WatchError::Off);
        }
        let changes = {
            let mut state = self.state();
            let watching = state.entry(connection_id.to_owned()).or_default();
            let mut changes = GroupChanges::default();
            match users {
                None => {
                    if !watching.everyone {
                        watching.everyone = true;
                        changes.add.push(WATCH_ALL_GROUP.to_owned());
                        changes
                            .remove
                            .extend(watching.users.iter().map(|u| watch_group(u)));
                    }
                }
                Some(users) => {
                    let new: Vec<&String> = users
                        .iter()
                        .filter(|u| !watching.users.contains(*u))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if watching.users.len() + new.len() > MAX_WATCHED {
                        return Err(WatchError::TooMany);
                    }
                    for user in new {
                        watching.users.insert(user.clone());
                        if !watching.everyone {
                            changes.add.push(watch_group(user));
                        }
                    }
                }
            }
            changes
        };
        apply(hub, connection_id, changes).await
    }

    /// Stops watching `users` by name (`None`: stops watching anyone, everyone included).
    pub async fn unwatch(
        &self,
        hub: &HubContext,
        connection_id: &str,
        users: Option<&[String]>,
    ) -> Result<(), WatchError> {
        let changes = {
            let mut state = self.state();
            let Some(watching) = state.get_mut(connection_id) else {
                return Ok(());
            };
            let mut changes = GroupChanges::default();
            match users {
                None => {
                    if watching.everyone {
                        changes.remove.push(WATCH_ALL_GROUP.to_owned());
                    } else {
                        changes
                            .remove
                            .extend(watching.users.iter().map(|u| watch_group(u)));
                    }
                    state.remove(connection_id);
                }
                Some(users) => {
                    for user in users {
                        if watching.users.remove(user) && !watching.everyone {
                            changes.remove.push(watch_group(user));
                        }
                    }
                }
            }
            changes
        };
        apply(hub, connection_id, changes).await
    }

    /// Forgets a connection that ended (its groups end with it).
    pub fn forget(&self, connection_id: &str) {
        self.state().remove(connection_id);
    }
}

async fn apply(
    hub: &HubContext,
    connection_id: &str,
    changes: GroupChanges,
) -> Result<(), WatchError> {
    let groups = hub.groups();
    for group in &changes.add {
        groups
            .add(connection_id, group)
            .await
            .map_err(|e| WatchError::Groups(e.to_string()))?;
    }
    for group in &changes.remove {
        groups
            .remove(connection_id, group)
            .await
            .map_err(|e| WatchError::Groups(e.to_string()))?;
    }
    Ok(())
}
