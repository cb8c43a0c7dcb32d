//! Upstream templates: which events go where.
//!
//! A template's three patterns (hub, category, event) are each `*` (anything), a list `a,b`
//! (items trimmed) or one exact name; names are compared case-sensitively. The first template
//! whose three patterns match an event wins; without a match the event is not sent. The URL is
//! the template's `url_template` with `{hub}`, `{category}` and `{event}` (placeholders in any
//! ASCII case) replaced by the percent-encoded values: every byte but `A-Z a-z 0-9 - . _ ~` is
//! escaped, as .NET's `Uri.EscapeDataString` does.

use reqwest::Url;

use crate::config::UpstreamTemplate;

/// A pattern of hub, category or event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: anything.
    Any,
    /// One name, or several separated by `,`.
    Names(Vec<String>),
}

impl Pattern {
    /// Parses `*`, `a,b` or `a`; an empty pattern (or an item `*`) matches anything.
    pub fn parse(pattern: &str) -> Self {
        let names: Vec<String> = pattern
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() || names.iter().any(|name| name == "*") {
            Self::Any
        } else {
            Self::Names(names)
        }
    }

    /// Whether `value` matches (case-sensitively).
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Names(names) => names.iter().any(|name| name == value),
        }
    }
}

/// Why a template gave no usable URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the upstream URL template does not give an absolute http(s) URL")]
pub struct InvalidUrl;

/// One compiled template.
#[derive(Clone)]
pub struct Template {
    url_template: String,
    hub: Pattern,
    category: Pattern,
    event: Pattern,
}

/// The URL's query never shows (it may carry a key).
impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field(
                "url_template",
                &crate::config::redact_upstream_url(&self.url_template),
            )
            .field("hub", &self.hub)
            .field("category", &self.category)
            .field("event", &self.event)
            .finish()
    }
}

impl Template {
    /// Compiles a configured template.
    pub fn new(template: &UpstreamTemplate) -> Self {
        Self {
            url_template: template.url_template.clone(),
            hub: Pattern::parse(&template.hub_pattern),
            category: Pattern::parse(&template.category_pattern),
            event: Pattern::parse(&template.event_pattern),
        }
    }

    /// Whether the three patterns match.
    pub fn matches(&self, hub: &str, category: &str, event: &str) -> bool {
        self.hub.matches(hub) && self.category.matches(category) && self.event.matches(event)
    }

    /// The URL for this event.
    pub fn url(&self, hub: &str, category: &str, event: &str) -> Result<Url, InvalidUrl> {
        let mut text = self.url_template.clone();
        for (placeholder, value) in [("{hub}", hub), ("{category}", category), ("{event}", event)] {
            text = crate::config::replace_ignore_case(&text, placeholder, &escape_data(value));
        }
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                Ok(url)
            }
            _ => Err(InvalidUrl),
        }
    }
}

/// The ordered templates of an upstream.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    templates: Vec<Template>,
}

impl Templates {
    /// Compiles the configured templates, in order.
    pub fn new(templates: &[UpstreamTemplate]) -> Self {
        Self {
            templates: templates.iter().map(Template::new).collect(),
        }
    }

    /// Whether there is no template.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The first template matching the event, if any.
    pub fn find(&self, hub: &str, category: &str, event: &str) -> Option<&Template> {
        self.templates
            .iter()
            .find(|template| template.matches(hub, category, event))
    }

    /// The URL of the event: `None` when no template matches.
    pub fn url(&self, hub: &str, category: &str, event: &str) -> Option<Result<Url, InvalidUrl>> {
        self.find(hub, category, event)
            .map(|template| template.url(hub, category, event))
    }
}

/// `value` percent-encoded like .NET's `Uri.EscapeDataString`: every byte of its UTF-8 form
/// but the unreserved characters `A-Z a-z 0-9 - . _ ~`, as `%XX` (upper-case hex).
pub fn escape_data(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn template(url: &str, hub: &str, category: &str, event: &str) -> UpstreamTemplate {
        UpstreamTemplate {
            url_template: url.to_owned(),
            hub_pattern: hub.to_owned(),
            category_pattern: category.to_owned(),
            event_pattern: event.to_owned(),
        }
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*").matches("anything"));
        assert!(Pattern::parse("").matches("anything"));
        assert!(Pattern::parse("a, *").matches("z"));
        let list = Pattern::parse(" connected , disconnected ");
        assert!(list.matches("connected") && list.matches("disconnected"));
        assert!(!list.matches("Connected"));
        assert!(!list.matches("connected,disconnected"));
        let exact = Pattern::parse("chat");
        assert!(exact.matches("chat") && !exact.matches("chat2") && !exact.matches("CHAT"));
    }

    #[test]
    fn first_match_wins_and_no_match_sends_nothing() {
        let templates = Templates::new(&[
            template("http://a/{event}", "chat", "connections", "*"),
            template("http://b/{event}", "chat,news", "messages", "broadcast"),
            template("http://c/{hub}/{category}/{event}", "*", "messages", "*"),
        ]);
        let url = |hub, category, event| {
            templates
                .url(hub, category, event)
                .map(|url| url.unwrap().to_string())
        };
        assert_eq!(
            url("chat", "connections", "connected").as_deref(),
            Some("http://a/connected")
        );
        assert_eq!(
            url("news", "messages", "broadcast").as_deref(),
            Some("http://b/broadcast")
        );
        assert_eq!(
            url("news", "messages", "echo").as_deref(),
            Some("http://c/news/messages/echo")
        );
        assert_eq!(url("news", "connections", "connected"), None);
        assert!(Templates::new(&[]).is_empty());
    }

    #[test]
    fn values_are_percent_encoded() {
        let t = Template::new(&UpstreamTemplate::catch_all(
            "https://h/{HUB}/api/{category}/{event}?code=k&e={event}",
        ));
        let url = t.url("app_chat", "messages", "a b/c?d#é").unwrap();
        assert_eq!(
            url.as_str(),
            "https://h/app_chat/api/messages/a%20b%2Fc%3Fd%23%C3%A9?code=k&e=a%20b%2Fc%3Fd%23%C3%A9"
        );
        assert_eq!(escape_data("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(escape_data("+&="), "%2B%26%3D");
    }

    #[test]
    fn the_documented_example() {
        let t = Template::new(&UpstreamTemplate::catch_all(
            "http://host.com/{hub}/api/{category}/{event}",
        ));
        assert_eq!(
            t.url("chat", "connections", "connected").unwrap().as_str(),
            "http://host.com/chat/api/connections/connected"
        );
        assert_eq!(
            t.url("chat", "messages", "broadcast").unwrap().as_str(),
            "http://host.com/chat/api/messages/broadcast"
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        let t = Template::new(&UpstreamTemplate::catch_all("{event}"));
        assert_eq!(t.url("h", "c", "e"), Err(InvalidUrl));
        assert!(
            !format!(
                "{:?}",
                Template::new(&UpstreamTemplate::catch_all("http://h/?code=SECRET"))
            )
            .contains("SECRET")
        );
    }
}
