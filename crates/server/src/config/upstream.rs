//! The upstream of the Azure-compatible serverless hubs: the webhooks that client connection
//! events and invocations are POSTed to, how long they may take, how connection events are
//! retried, and whether the upstream may refuse a connection.
//!
//! `azure.upstream` is an ordered list of templates, each `{url_template, hub_pattern,
//! category_pattern, event_pattern}`: in the file as `[[azure.upstream]]` tables, in
//! `SIGNALBOX_AZURE_UPSTREAM` as a JSON array of the same objects. The keys are also accepted
//! as Azure writes them (`UrlTemplate`, `HubPattern`, …). `azure.upstream_url_template`
//! (`SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE`) adds one last template that matches everything.
//! Every URL template must give an absolute `http://` or `https://` URL once its placeholders
//! `{hub}`, `{category}` and `{event}` are replaced; this is checked at start.

use std::time::Duration;

use figment::value::Value;
use reqwest::Url;

use super::ConfigError;
use super::setting::Kind;
use super::settings as s;
use super::values::Values;

/// The delay before the first retry of a connection event; each further retry doubles it.
pub const UPSTREAM_INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// The longest delay between two attempts of a connection event.
pub const UPSTREAM_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The placeholders a URL template may contain.
pub(crate) const PLACEHOLDERS: [&str; 3] = ["{hub}", "{category}", "{event}"];

/// One upstream template: where the events matching its three patterns are POSTed.
///
/// A pattern is `*` (anything), a comma-separated list (`connected,disconnected`) or one exact
/// name; names are compared case-sensitively, as Azure does.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamTemplate {
    /// The URL, with `{hub}`, `{category}` and `{event}` replaced by the percent-encoded values.
    pub url_template: String,
    /// Which hubs (as the client names them, lowercased, with the application prefix).
    pub hub_pattern: String,
    /// Which categories: `connections`, `messages`.
    pub category_pattern: String,
    /// Which events: `connected`, `disconnected`, or an invocation's target.
    pub event_pattern: String,
}

impl UpstreamTemplate {
    /// A template matching every event.
    pub fn catch_all(url_template: impl Into<String>) -> Self {
        Self {
            url_template: url_template.into(),
            hub_pattern: ANY.to_owned(),
            category_pattern: ANY.to_owned(),
            event_pattern: ANY.to_owned(),
        }
    }
}

/// The URL's query values never show (an Azure Functions URL carries its key as `?code=`).
impl std::fmt::Debug for UpstreamTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTemplate")
            .field("url_template", &redact_upstream_url(&self.url_template))
            .field("hub_pattern", &self.hub_pattern)
            .field("category_pattern", &self.category_pattern)
            .field("event_pattern", &self.event_pattern)
            .finish()
    }
}

/// The pattern matching anything.
const ANY: &str = "*";

/// The upstream of the serverless hubs. Off unless a template is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The templates in order (the first one whose patterns match an event wins), the catch-all
    /// `azure.upstream_url_template` last. Empty (default): no upstream.
    pub templates: Vec<UpstreamTemplate>,
    /// How long one request may take. Default 30 seconds.
    pub timeout: Duration,
    /// How often a failed connection event (`connected`, `disconnected`) is retried: transport
    /// errors, timeouts, `408`, `429` and `5xx`. Invocations are never retried. Default 3.
    pub retries: u32,
    /// Whether a `401` or `403` answer to `connected` refuses the connection. Default false:
    /// the upstream is only told.
    pub refuse_connections: bool,
}

impl UpstreamConfig {
    /// Whether an upstream is configured.
    pub fn is_enabled(&self) -> bool {
        !self.templates.is_empty()
    }
}

impl Default for UpstreamConfig {
    /// The declared defaults: no upstream.
    fn default() -> Self {
        Self {
            templates: Vec::new(),
            timeout: s::AZURE_UPSTREAM_TIMEOUT.fallback(),
            retries: s::AZURE_UPSTREAM_RETRIES.fallback(),
            refuse_connections: s::AZURE_UPSTREAM_REFUSE_CONNECTIONS.fallback(),
        }
    }
}

/// A URL template setting (`azure.upstream_url_template`): shown with its query values hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlTemplate(pub(crate) String);

impl Kind for UrlTemplate {
    type Literal = &'static str;
    const ZERO: &'static str = "";
    const NAME: &'static str = "URL template";
    fn from_literal(literal: &'static str) -> Self {
        Self(literal.to_owned())
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = match value {
            Value::String(_, text) => text.trim().to_owned(),
            _ => return Err("not a string".to_owned()),
        };
        check_url_template(&text)?;
        Ok(Self(text))
    }
    fn show(&self) -> String {
        redact_upstream_url(&self.0)
    }
}

impl Kind for Vec<UpstreamTemplate> {
    type Literal = ();
    const ZERO: () = ();
    const NAME: &'static str = "list of upstream templates";
    fn from_literal((): ()) -> Self {
        Vec::new()
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let json = match value {
            // A variable: the JSON text of the list (or of one template).
            Value::String(_, text) => serde_json::from_str(text).map_err(|e| {
                format!(
                    "not a JSON array of templates such as [{{\"url_template\":\"https://host/api/{{event}}\"}}]: {e}"
                )
            })?,
            other => serde_json::to_value(other).map_err(|e| e.to_string())?,
        };
        let items = match json {
            serde_json::Value::Array(items) => items,
            object @ serde_json::Value::Object(_) => vec![object],
            _ => return Err("not a list of templates".to_owned()),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                template(item).map_err(|message| format!("template {}: {message}", i + 1))
            })
            .collect()
    }
    fn show(&self) -> String {
        self.iter()
            .map(|t| {
                format!(
                    "{} (hub {}, category {}, event {})",
                    redact_upstream_url(&t.url_template),
                    t.hub_pattern,
                    t.category_pattern,
                    t.event_pattern
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One template from its JSON form.
fn template(item: &serde_json::Value) -> Result<UpstreamTemplate, String> {
    let serde_json::Value::Object(fields) = item else {
        return Err("not a table with `url_template`".to_owned());
    };
    let mut url_template = None;
    let mut patterns = [ANY.to_owned(), ANY.to_owned(), ANY.to_owned()];
    for (name, value) in fields {
        let normalized = name.replace('_', "").to_ascii_lowercase();
        let slot = match normalized.as_str() {
            "urltemplate" => None,
            "hubpattern" => Some(0),
            "categorypattern" => Some(1),
            "eventpattern" => Some(2),
            _ => {
                return Err(format!(
                    "unknown key `{name}`; a template has `url_template`, `hub_pattern`, `category_pattern` and `event_pattern`"
                ));
            }
        };
        let serde_json::Value::String(text) = value else {
            return Err(format!("`{name}` is not a string"));
        };
        let text = text.trim();
        match slot {
            None => url_template = Some(text.to_owned()),
            Some(index) => {
                check_pattern(text).map_err(|message| format!("`{name}` {message}"))?;
                if let Some(pattern) = patterns.get_mut(index) {
                    *pattern = text.to_owned();
                }
            }
        }
    }
    let url_template = url_template.ok_or("`url_template` is missing")?;
    check_url_template(&url_template)?;
    let [hub_pattern, category_pattern, event_pattern] = patterns;
    Ok(UpstreamTemplate {
        url_template,
        hub_pattern,
        category_pattern,
        event_pattern,
    })
}

/// A pattern is `*`, a name, or names separated by `,`; none of them empty.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is empty; `*` matches everything".to_owned());
    }
    if pattern.split(',').any(|item| item.trim().is_empty()) {
        return Err(format!("{pattern:?} has an empty item"));
    }
    Ok(())
}

/// The template gives an absolute `http://` or `https://` URL once its placeholders are
/// replaced, and has no other `{…}` placeholder.
pub(crate) fn check_url_template(template: &str) -> Result<(), String> {
    let shown = redact_upstream_url(template);
    if template.is_empty() {
        return Err("the URL template is empty".to_owned());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            return Err(format!("{shown:?} has a `{{` without `}}`"));
        };
        let placeholder = &after[..=close];
        if !PLACEHOLDERS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(placeholder))
        {
            return Err(format!(
                "{shown:?} has the unknown placeholder {placeholder}; use {{hub}}, {{category}} or {{event}}"
            ));
        }
        rest = &after[close + 1..];
    }
    let sample = expand_sample(template);
    match Url::parse(&sample) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        _ => Err(format!(
            "{shown:?} does not give an absolute http:// or https:// URL, e.g. https://host/api/{{hub}}/{{category}}/{{event}}"
        )),
    }
}

/// `template` with its placeholders replaced by sample values.
fn expand_sample(template: &str) -> String {
    let mut text = template.to_owned();
    for (placeholder, sample) in PLACEHOLDERS.iter().zip(["hub", "connections", "connected"]) {
        text = replace_ignore_case(&text, placeholder, sample);
    }
    text
}

/// `text` with every ASCII-case-insensitive occurrence of `from` replaced by `to`.
pub fn replace_ignore_case(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let from = from.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (index, _) in lower.match_indices(&from) {
        out.push_str(&text[last..index]);
        out.push_str(to);
        last = index + from.len();
    }
    out.push_str(&text[last..]);
    out
}

/// A URL template fit to show: passwords and query values replaced by `***`.
pub fn redact_upstream_url(template: &str) -> String {
    let without_password = crate::db::redact_url(template);
    let (base, fragment) = match without_password.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (without_password.as_str(), None),
    };
    let Some((path, query)) = base.split_once('?') else {
        return without_password.clone();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(fragment) => format!("{path}?{query}#{fragment}"),
        None => format!("{path}?{query}"),
    }
}

/// The upstream settings.
pub(super) fn resolve(values: &Values) -> Result<UpstreamConfig, ConfigError> {
    let mut templates = values.get(&s::AZURE_UPSTREAM)?.unwrap_or_default();
    if let Some(UrlTemplate(url)) = values.get(&s::AZURE_UPSTREAM_URL_TEMPLATE)? {
        templates.push(UpstreamTemplate::catch_all(url));
    }
    Ok(UpstreamConfig {
        templates,
        timeout: values.value(&s::AZURE_UPSTREAM_TIMEOUT)?,
        retries: values.value(&s::AZURE_UPSTREAM_RETRIES)?,
        refuse_connections: values.value(&s::AZURE_UPSTREAM_REFUSE_CONNECTIONS)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::PathBuf;

    use super::*;
    use crate::config::{Config, Overrides};

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "signalbox-upstream-config-{}-{}",
            std::process::id(),
            getrandom::u64().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path: Option<PathBuf> = file.map(|text| {
            let path = dir.join("signalbox.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let result = Config::load_from(
            path.as_deref(),
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            &Overrides::default(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn defaults() {
        let config = load(None, &[]).unwrap();
        assert_eq!(config.upstream, UpstreamConfig::default());
        assert!(!config.upstream.is_enabled());
        assert_eq!(config.upstream.timeout, Duration::from_secs(30));
        assert_eq!(config.upstream.retries, 3);
        assert!(!config.upstream.refuse_connections);
        assert_eq!(Config::default().upstream, UpstreamConfig::default());
    }

    #[test]
    fn templates_from_the_file_in_order_then_the_catch_all() {
        let file = r#"
            [azure]
            upstream_timeout = "5s"
            upstream_retries = 1
            upstream_refuse_connections = true

            [[azure.upstream]]
            url_template = "http://localhost:7071/{hub}/api/{category}/{event}"
            hub_pattern = "chat, news"
            event_pattern = "connected"

            [[azure.upstream]]
            UrlTemplate = "https://functions.example.com/runtime/webhooks/signalr?code=k"
            CategoryPattern = "messages"
        "#;
        let config = load(
            Some(file),
            &[(
                "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
                "http://fallback.example.com/hook",
            )],
        )
        .unwrap();
        let upstream = config.upstream;
        assert_eq!(upstream.timeout, Duration::from_secs(5));
        assert_eq!(upstream.retries, 1);
        assert!(upstream.refuse_connections);
        assert_eq!(upstream.templates.len(), 3);
        assert_eq!(
            upstream.templates[0],
            UpstreamTemplate {
                url_template: "http://localhost:7071/{hub}/api/{category}/{event}".to_owned(),
                hub_pattern: "chat, news".to_owned(),
                category_pattern: "*".to_owned(),
                event_pattern: "connected".to_owned(),
            }
        );
        assert_eq!(upstream.templates[1].category_pattern, "messages");
        assert_eq!(upstream.templates[1].hub_pattern, "*");
        assert_eq!(
            upstream.templates[2],
            UpstreamTemplate::catch_all("http://fallback.example.com/hook")
        );
        assert!(!format!("{:?}", upstream.templates).contains("code=k"));
    }

    #[test]
    fn templates_from_a_json_variable() {
        let config = load(
            None,
            &[(
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"[{"url_template":"https://h/{event}","event_pattern":"a,b"}]"#,
            )],
        )
        .unwrap();
        assert_eq!(config.upstream.templates.len(), 1);
        assert_eq!(config.upstream.templates[0].event_pattern, "a,b");
        let single = load(
            None,
            &[(
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"{"UrlTemplate":"https://h/x"}"#,
            )],
        )
        .unwrap();
        assert_eq!(single.upstream.templates.len(), 1);
    }

    #[test]
    fn invalid_templates_are_refused_clearly() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
                "/relative/{event}",
                "absolute",
            ),
            (
                "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
                "ftp://h/{event}",
                "absolute",
            ),
            ("SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE", "{hub}", "absolute"),
            (
                "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
                "https://h/{user}",
                "unknown placeholder {user}",
            ),
            (
                "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE",
                "https://h/{event",
                "without",
            ),
            ("SIGNALBOX_AZURE_UPSTREAM", "not json", "JSON array"),
            (
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"[{"hub_pattern":"*"}]"#,
                "`url_template` is missing",
            ),
            (
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"[{"url_template":"https://h","auth":"x"}]"#,
                "unknown key `auth`",
            ),
            (
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"[{"url_template":"https://h","hub_pattern":""}]"#,
                "empty",
            ),
            (
                "SIGNALBOX_AZURE_UPSTREAM",
                r#"[{"url_template":"https://h","hub_pattern":"a,,b"}]"#,
                "empty item",
            ),
            ("SIGNALBOX_AZURE_UPSTREAM_RETRIES", "-1", "whole number"),
        ];
        for (name, value, expected) in cases {
            let error = load(None, &[(name, value)])
                .err()
                .unwrap_or_else(|| panic!("{name}={value} was accepted"));
            let text = error.to_string();
            assert!(text.contains(name), "{text}");
            assert!(text.contains(expected), "{name}={value}: {text}");
        }
    }

    #[test]
    fn query_values_never_show() {
        let url = "https://user:pw@fn.example.com/runtime/webhooks/signalr?code=SECRET&x#frag";
        let shown = redact_upstream_url(url);
        assert!(
            !shown.contains("SECRET") && !shown.contains(":pw@"),
            "{shown}"
        );
        assert!(shown.contains("code=***"), "{shown}");
        assert_eq!(redact_upstream_url("http://h/{event}"), "http://h/{event}");
        let values = Values::load(
            None,
            &|name: &str| (name == "SIGNALBOX_AZURE_UPSTREAM_URL_TEMPLATE").then(|| url.to_owned()),
            &Overrides::default(),
        )
        .unwrap();
        let report = crate::config::report::effective_settings(&values).unwrap();
        assert!(!report.contains("SECRET"), "{report}");
    }

    #[test]
    fn placeholders_are_case_insensitive() {
        assert!(check_url_template("https://h/{HUB}/{Event}").is_ok());
        assert_eq!(replace_ignore_case("a{HUB}b{hub}", "{hub}", "x"), "axbx");
    }
}
