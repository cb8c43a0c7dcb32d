//! How a setting is declared: `Setting` holds everything about one setting (file key,
//! environment variable, flag, default, validation, one-line doc), `Kind` turns a raw value
//! from any layer into its typed value, and [`Declared`] lets the registry treat settings of
//! every type alike (docs, `signalbox config`, the environment and flag layers).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;

use super::ConfigError;
use super::values::Values;
use crate::client_ip::IpBlock;
use crate::clock::{format_duration, parse_duration};

/// Whether a setting's value may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Shown as it is.
    Plain,
    /// Never shown: `[redacted]`.
    Secret,
    /// A URL (or comma-separated URLs) whose passwords are hidden.
    Url,
}

/// What a setting is when nothing sets it.
#[derive(Debug)]
pub(crate) enum Default<T: Kind> {
    /// A value, written in Rust (so it is always valid) and shown in the docs.
    Value(T::Literal),
    /// No value; the text says what that means (`none`, `none (off)`, …).
    Unset(&'static str),
    /// Computed at load time from the other settings; the text describes it for the docs.
    Computed(&'static str, fn(&Values) -> Option<String>),
}

/// The type-independent description of a setting.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    /// The file key, e.g. `auth.access_token_ttl`.
    pub key: &'static str,
    /// An older file key accepted for it, e.g. `node` for `node_id`.
    pub key_alias: Option<&'static str>,
    /// The environment variable, e.g. `SIGNALBOX_ACCESS_TOKEN_TTL`.
    pub env: &'static str,
    /// An older variable accepted for it, e.g. `SIGNALBOX_NODE`.
    pub env_alias: Option<&'static str>,
    /// The command-line flag with its value name, e.g. `--listen ADDR` (`--require-config` for
    /// a boolean), if any.
    pub flag: Option<&'static str>,
    /// Whether the value may be shown.
    pub sensitivity: Sensitivity,
    /// How the environment variable is written when it differs from the file value, e.g.
    /// `comma-separated`.
    pub env_note: Option<&'static str>,
    /// One line of documentation (Markdown), the last column of the docs table.
    pub doc: &'static str,
}

impl Info {
    /// The flag's long name, e.g. `--listen`.
    pub fn flag_name(&self) -> Option<&'static str> {
        self.flag.map(|f| f.split(' ').next().unwrap_or(f))
    }

    /// How messages name the setting: `auth.jwt_algorithm (SIGNALBOX_JWT_ALGORITHM)`, with the
    /// flag when there is one.
    pub fn name(&self) -> String {
        match self.flag_name() {
            Some(flag) => format!("{} ({} / {flag})", self.key, self.env),
            None => format!("{} ({})", self.key, self.env),
        }
    }
}

/// A rule on a value: `Err` says what is wrong.
pub(crate) type Rule<T> = fn(&T) -> Result<(), String>;

/// One setting of type `T`.
#[derive(Debug)]
pub(crate) struct Setting<T: Kind> {
    pub(crate) info: Info,
    pub(crate) default: Default<T>,
    /// A rule beyond the type's own, with a message saying what is wrong.
    pub(crate) check: Option<Rule<T>>,
    pub(crate) kind: PhantomData<fn() -> T>,
}

impl<T: Kind> Setting<T> {
    /// A setting with no flag, no default (`none`), shown as it is, with no extra rule.
    pub(crate) const fn new(key: &'static str, env: &'static str, doc: &'static str) -> Self {
        Self {
            info: Info {
                key,
                key_alias: None,
                env,
                env_alias: None,
                flag: None,
                sensitivity: Sensitivity::Plain,
                env_note: None,
                doc,
            },
            default: Default::Unset("none"),
            check: None,
            kind: PhantomData,
        }
    }

    /// Sets the default value.
    pub(crate) const fn default(self, value: T::Literal) -> Self {
        Self {
            default: Default::Value(value),
            ..self.without_default()
        }
    }

    /// Says what an unset value means.
    pub(crate) const fn unset(self, meaning: &'static str) -> Self {
        Self {
            default: Default::Unset(meaning),
            ..self.without_default()
        }
    }

    /// A default computed from the other settings.
    pub(crate) const fn computed(
        self,
        meaning: &'static str,
        value: fn(&Values) -> Option<String>,
    ) -> Self {
        Self {
            default: Default::Computed(meaning, value),
            ..self.without_default()
        }
    }

    const fn without_default(self) -> Self {
        // `Default::Unset` holds nothing to drop, so replacing it is allowed in a const fn.
        let Self {
            info, check, kind, ..
        } = self;
        Self {
            info,
            default: Default::Unset("none"),
            check,
            kind,
        }
    }

    /// Adds the command-line flag, e.g. `--listen ADDR`.
    pub(crate) const fn flag(mut self, flag: &'static str) -> Self {
        self.info.flag = Some(flag);
        self
    }

    /// Accepts an older file key and environment variable too.
    pub(crate) const fn alias(mut self, key: &'static str, env: &'static str) -> Self {
        self.info.key_alias = Some(key);
        self.info.env_alias = Some(env);
        self
    }

    /// Never shows the value.
    pub(crate) const fn secret(mut self) -> Self {
        self.info.sensitivity = Sensitivity::Secret;
        self
    }

    /// Hides the passwords of the URL.
    pub(crate) const fn url(mut self) -> Self {
        self.info.sensitivity = Sensitivity::Url;
        self
    }

    /// Notes how the environment variable is written, e.g. `comma-separated`.
    pub(crate) const fn env_note(mut self, note: &'static str) -> Self {
        self.info.env_note = Some(note);
        self
    }

    /// Adds a rule.
    pub(crate) const fn check(mut self, check: Rule<T>) -> Self {
        self.check = Some(check);
        self
    }

    /// The declared default value, if it has one (not computed).
    pub(crate) fn declared_default(&self) -> Option<T> {
        match self.default {
            Default::Value(literal) => Some(T::from_literal(literal)),
            Default::Unset(_) | Default::Computed(..) => None,
        }
    }

    /// The declared default value, for settings that have one (`Config::default()`); the
    /// type's zero for the others, which never call it (a test compares with the loader).
    pub(crate) fn fallback(&self) -> T {
        self.declared_default()
            .unwrap_or_else(|| T::from_literal(T::ZERO))
    }

    /// An error naming this setting.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name: self.info.name(),
            message: message.into(),
        }
    }

    /// Converts and checks a raw value.
    pub(crate) fn parse(&self, raw: &Value) -> Result<T, ConfigError> {
        let value = T::from_value(raw).map_err(|message| {
            // A secret's value is never repeated in a message.
            if self.info.sensitivity == Sensitivity::Secret {
                self.invalid(format!("not a valid {}", T::NAME))
            } else {
                self.invalid(message)
            }
        })?;
        if let Some(check) = self.check {
            check(&value).map_err(|message| self.invalid(message))?;
        }
        Ok(value)
    }
}

/// A setting of any type, as the registry lists it.
pub trait Declared: Sync + std::fmt::Debug {
    /// Its description.
    fn info(&self) -> &Info;
    /// The default, as the docs table shows it (Markdown).
    fn default_doc(&self) -> String;
    /// The computed default for this load, if the setting has one.
    fn computed_default(&self, values: &Values) -> Option<String>;
    /// Whether the setting takes a value (`false` for booleans given as a bare flag).
    fn is_bool(&self) -> bool;
    /// Converts and checks the effective value; its text (not redacted) or `None` when unset.
    fn effective(&self, values: &Values) -> Result<Option<String>, ConfigError>;
}

impl<T: Kind> Declared for Setting<T> {
    fn info(&self) -> &Info {
        &self.info
    }

    fn default_doc(&self) -> String {
        match &self.default {
            Default::Value(literal) => format!("`{}`", T::from_literal(*literal).show()),
            Default::Unset(text) | Default::Computed(text, _) => (*text).to_owned(),
        }
    }

    fn computed_default(&self, values: &Values) -> Option<String> {
        match &self.default {
            Default::Computed(_, compute) => compute(values),
            Default::Value(_) | Default::Unset(_) => None,
        }
    }

    fn is_bool(&self) -> bool {
        T::NAME == bool::NAME
    }

    fn effective(&self, values: &Values) -> Result<Option<String>, ConfigError> {
        Ok(values.get(self)?.map(|value| value.show()))
    }
}

/// A type a setting can have: how a raw value (a TOML value, or the text of an environment
/// variable or flag) becomes it, and how it is shown.
pub(crate) trait Kind: Sized + std::fmt::Debug + 'static {
    /// What the registry writes as the default.
    type Literal: Copy + Sync + std::fmt::Debug + 'static;
    /// A literal for settings without a default (never used as a value).
    const ZERO: Self::Literal;
    /// The type in messages: `boolean`, `duration`, ….
    const NAME: &'static str;
    /// The value of a literal.
    fn from_literal(literal: Self::Literal) -> Self;
    /// Converts a raw value, or says why it cannot.
    fn from_value(value: &Value) -> Result<Self, String>;
    /// The value as a user would write it.
    fn show(&self) -> String;
}

/// A raw value as text (numbers and booleans too), or a description of what it is.
fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(_, s) => Ok(s.clone()),
        Value::Char(_, c) => Ok(c.to_string()),
        Value::Num(_, n) => Ok(match (n.to_i128(), n.to_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => f.to_string(),
            (None, None) => format!("{n:?}"),
        }),
        Value::Bool(_, b) => Ok(b.to_string()),
        other => Err(format!("{} is not a single value", describe(other))),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "a list",
    }
}

fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(_, s) => Ok(s.clone()),
        Value::Char(_, c) => Ok(c.to_string()),
        other => Err(format!("{} is not a string", describe(other))),
    }
}

impl Kind for String {
    type Literal = &'static str;
    const ZERO: &'static str = "";
    const NAME: &'static str = "string";
    fn from_literal(literal: &'static str) -> Self {
        literal.to_owned()
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        string(value)
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl Kind for PathBuf {
    type Literal = &'static str;
    const ZERO: &'static str = "";
    const NAME: &'static str = "path";
    fn from_literal(literal: &'static str) -> Self {
        PathBuf::from(literal)
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        string(value).map(|s| PathBuf::from(s.trim()))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Kind for bool {
    type Literal = bool;
    const ZERO: bool = false;
    const NAME: &'static str = "boolean";
    fn from_literal(literal: bool) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        if let Value::Bool(_, b) = value {
            return Ok(*b);
        }
        let text = text(value)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(format!("{text:?} is not a boolean (true/false)")),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for u32 {
    type Literal = u32;
    const ZERO: u32 = 0;
    const NAME: &'static str = "whole number";
    fn from_literal(literal: u32) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = text(value)?;
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number such as 20"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for f64 {
    type Literal = f64;
    const ZERO: f64 = 0.0;
    const NAME: &'static str = "number";
    fn from_literal(literal: f64) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = text(value)?;
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number such as 0.5"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for Duration {
    type Literal = Duration;
    const ZERO: Duration = Duration::ZERO;
    const NAME: &'static str = "duration";
    fn from_literal(literal: Duration) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = text(value)?;
        match parse_duration(&text) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(format!(
                "{text:?} is not a positive duration such as 90s, 15m, 12h or 30d"
            )),
        }
    }
    fn show(&self) -> String {
        format_duration(*self)
    }
}

impl Kind for SocketAddr {
    type Literal = SocketAddr;
    const ZERO: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
    const NAME: &'static str = "address";
    fn from_literal(literal: SocketAddr) -> Self {
        literal
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        let text = string(value)?;
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address such as 127.0.0.1:8080"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// A list: an array in the file, comma-separated in a variable or flag.
fn list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(_, items) => items.iter().map(string).collect(),
        Value::String(_, s) => Ok(s
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()),
        other => Err(format!("{} is not a list", describe(other))),
    }
}

impl Kind for Vec<String> {
    type Literal = &'static [&'static str];
    const ZERO: &'static [&'static str] = &[];
    const NAME: &'static str = "list";
    fn from_literal(literal: &'static [&'static str]) -> Self {
        literal.iter().map(|s| (*s).to_owned()).collect()
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        list(value)
    }
    fn show(&self) -> String {
        self.join(", ")
    }
}

impl Kind for Vec<IpBlock> {
    type Literal = &'static [&'static str];
    const ZERO: &'static [&'static str] = &[];
    const NAME: &'static str = "list of addresses";
    fn from_literal(literal: &'static [&'static str]) -> Self {
        literal.iter().filter_map(|s| s.parse().ok()).collect()
    }
    fn from_value(value: &Value) -> Result<Self, String> {
        list(value)?
            .iter()
            .map(|text| text.parse::<IpBlock>().map_err(|e| e.to_string()))
            .collect()
    }
    fn show(&self) -> String {
        self.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
