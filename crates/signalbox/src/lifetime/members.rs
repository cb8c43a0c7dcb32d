//! The connection ids of one group on one node: a set that stays small while the group is.
//!
//! Most groups hold one connection or a few (a user's own group, a chat room), and there is one
//! such set per group, so an empty-ish set's size is paid once per connection: a list of shared
//! ids while there are few members, a hash set once there are many.

use std::collections::HashSet;
use std::sync::Arc;

/// Members beyond this turn the list into a hash set.
const LIST_LIMIT: usize = 16;

/// See the module docs.
#[derive(Debug)]
pub(crate) enum Members {
    /// Few members, in no particular order.
    List(Vec<Arc<str>>),
    /// Many members.
    Set(HashSet<Arc<str>>),
}

impl Default for Members {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Members {
    /// Adds `id`; `false` if it was there.
    pub(crate) fn insert(&mut self, id: Arc<str>) -> bool {
        match self {
            Self::List(ids) => {
                if ids.iter().any(|other| **other == *id) {
                    return false;
                }
                if ids.len() < LIST_LIMIT {
                    // Room for exactly one more: most groups never grow.
                    ids.reserve_exact(1);
                    ids.push(id);
                } else {
                    let mut set: HashSet<Arc<str>> = ids.drain(..).collect();
                    set.insert(id);
                    *self = Self::Set(set);
                }
                true
            }
            Self::Set(set) => set.insert(id),
        }
    }

    /// Removes `id`; `false` if it was not there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self {
            Self::List(ids) => match ids.iter().position(|other| **other == *id) {
                Some(at) => {
                    ids.swap_remove(at);
                    true
                }
                None => false,
            },
            Self::Set(set) => set.remove(id),
        }
    }

    /// Whether `id` is a member.
    pub(crate) fn contains(&self, id: &str) -> bool {
        match self {
            Self::List(ids) => ids.iter().any(|other| **other == *id),
            Self::Set(set) => set.contains(id),
        }
    }

    /// Whether the group is empty.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::List(ids) => ids.is_empty(),
            Self::Set(set) => set.is_empty(),
        }
    }

    /// The members.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match self {
            Self::List(ids) => Box::new(ids.iter()),
            Self::Set(set) => Box::new(set.iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_a_set_of_ids_across_the_switch_to_a_hash_set() {
        let mut members = Members::default();
        assert!(members.is_empty());
        let ids: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("c{i}"))).collect();
        for (n, id) in ids.iter().enumerate() {
            assert!(members.insert(id.clone()));
            assert!(!members.insert(id.clone()), "added {id} twice");
            assert_eq!(members.iter().count(), n + 1);
            assert!(matches!(members, Members::List(_)) == (n < LIST_LIMIT));
        }
        for id in &ids {
            assert!(members.contains(id));
        }
        assert!(!members.contains("other"));
        for (n, id) in ids.iter().enumerate().rev() {
            assert!(members.remove(id));
            assert!(!members.remove(id));
            assert_eq!(members.iter().count(), n);
        }
        assert!(members.is_empty());
    }
}
