//! Channel naming and routing: which backplane channel carries what, and where a send that
//! arrived on a channel is delivered.

/// The channel names of one hub: `{prefix}:all`, `{prefix}:group:{g}`, … (table in the
/// [module documentation](super)).
#[derive(Debug)]
pub(super) struct Channels {
    pub(super) prefix: String,
}

/// Where an incoming send envelope is delivered, from the channel it arrived on.
pub(super) enum Route<'a> {
    /// `{prefix}:all`.
    All,
    /// `{prefix}:group:{g}`.
    Group(&'a str),
    /// `{prefix}:user:{u}`.
    User(&'a str),
    /// `{prefix}:connection:{id}`.
    Connection(&'a str),
    /// `{prefix}:internal:…` (never carries sends).
    Internal,
}

impl Channels {
    pub(super) fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }
    pub(super) fn group(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }
    pub(super) fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }
    pub(super) fn connection(&self, id: &str) -> String {
        format!("{}:connection:{id}", self.prefix)
    }
    pub(super) fn internal_groups(&self) -> String {
        format!("{}:internal:groups", self.prefix)
    }
    pub(super) fn ack(&self, node: &str) -> String {
        format!("{}:internal:ack:{node}", self.prefix)
    }
    pub(super) fn ret(&self, node: &str) -> String {
        format!("{}:internal:return:{node}", self.prefix)
    }

    /// Which channel `channel` is, if it is one of this hub's.
    pub(super) fn route<'a>(&self, channel: &'a str) -> Option<Route<'a>> {
        let rest = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?;
        if rest == "all" {
            Some(Route::All)
        } else if let Some(group) = rest.strip_prefix("group:") {
            Some(Route::Group(group))
        } else if let Some(user) = rest.strip_prefix("user:") {
            Some(Route::User(user))
        } else if let Some(id) = rest.strip_prefix("connection:") {
            Some(Route::Connection(id))
        } else if rest.starts_with("internal:") {
            Some(Route::Internal)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_route_back() {
        let c = Channels { prefix: "p".into() };
        assert!(matches!(c.route(&c.all()), Some(Route::All)));
        assert!(matches!(
            c.route(&c.group("g:1")),
            Some(Route::Group("g:1"))
        ));
        assert!(matches!(c.route(&c.user("u")), Some(Route::User("u"))));
        assert!(matches!(
            c.route(&c.connection("c")),
            Some(Route::Connection("c"))
        ));
        for internal in [c.internal_groups(), c.ack("n"), c.ret("n")] {
            assert!(
                matches!(c.route(&internal), Some(Route::Internal)),
                "{internal}"
            );
        }
        assert!(c.route("q:all").is_none());
        assert!(c.route("pall").is_none());
        assert!(c.route("p:other").is_none());
    }
}
