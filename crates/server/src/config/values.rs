//! The layers (file < environment < flags), merged by `figment`, and the typed look-up of a
//! setting's effective value and of where it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::Format as _;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::ConfigError;
use super::setting::{Declared, Kind, Setting};
use super::settings::SETTINGS;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The flags given on the command line, by file key (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    values: Vec<(String, String)>,
}

impl Overrides {
    /// Adds the value of the flag of the setting `key` (`listen`, `auth.jwt_secret`, …).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.push((key.to_owned(), value.into()));
        self
    }

    /// The flags given, by file key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

const FILE: &str = "file";
const ENV: &str = "environment";
const FLAGS: &str = "flags";

/// One layer: a dict of settings by file key, tagged with where it came from.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Inserts `value` at the dotted `key`.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// The setting with this file key (or key alias).
fn by_key(key: &str) -> Option<&'static dyn Declared> {
    SETTINGS
        .iter()
        .copied()
        .find(|s| s.info().key == key || s.info().key_alias == Some(key))
}

/// Reads and checks the file: TOML, every key known, aliases renamed.
fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let data = figment::providers::Toml::string(&text)
        .data()
        .map_err(|e| parse_error(e.to_string()))?;
    let mut leaves = Vec::new();
    if let Some(dict) = data.get(&Profile::Default) {
        walk("", dict, &mut leaves).map_err(parse_error)?;
    }
    let mut dict = Dict::new();
    // Canonical keys first, so that within the file the canonical key wins over its alias.
    leaves.sort_by_key(|(key, _)| by_key(key).is_some_and(|s| s.info().key == key.as_str()));
    for (key, value) in leaves {
        if let Some(setting) = by_key(&key) {
            insert(&mut dict, setting.info().key, value);
        }
    }
    Ok(Layer {
        metadata: Metadata::from(FILE, path),
        dict,
    })
}

/// Collects the settings of a file table, refusing unknown keys.
fn walk(prefix: &str, dict: &Dict, out: &mut Vec<(String, Value)>) -> Result<(), String> {
    for (name, value) in dict {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if by_key(&key).is_some() {
            out.push((key, value.clone()));
            continue;
        }
        let section = format!("{key}.");
        let is_section = SETTINGS.iter().any(|s| s.info().key.starts_with(&section));
        match value {
            Value::Dict(_, inner) if is_section => walk(&key, inner, out)?,
            _ if is_section => return Err(format!("`{key}` must be a table ([{key}])")),
            _ => {
                let known = SETTINGS
                    .iter()
                    .flat_map(|s| std::iter::once(s.info().key).chain(s.info().key_alias));
                let hint = super::env::closest(&key, known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(format!("unknown key `{key}`{hint}"));
            }
        }
    }
    Ok(())
}

/// The declared variables that are set (and not blank), canonical names winning over aliases;
/// also returns which variable gave each key.
fn env_layer(env: &impl Fn(&str) -> Option<String>) -> (Layer, BTreeMap<String, String>) {
    let mut dict = Dict::new();
    let mut names = BTreeMap::new();
    for setting in SETTINGS {
        let info = setting.info();
        let found = std::iter::once(info.env)
            .chain(info.env_alias)
            .filter_map(|name| env(name).map(|value| (name, value)))
            .find(|(_, value)| !value.trim().is_empty());
        if let Some((name, value)) = found {
            insert(&mut dict, info.key, Value::from(value));
            names.insert(info.key.to_owned(), name.to_owned());
        }
    }
    let layer = Layer {
        metadata: Metadata::named(ENV),
        dict,
    };
    (layer, names)
}

/// The flags, by file key.
fn flag_layer(overrides: &Overrides) -> Result<Layer, ConfigError> {
    let mut dict = Dict::new();
    for (key, value) in overrides.iter() {
        let Some(setting) = by_key(key) else {
            return Err(ConfigError::Invalid {
                name: key.to_owned(),
                message: "no such setting".to_owned(),
            });
        };
        insert(&mut dict, setting.info().key, Value::from(value));
    }
    Ok(Layer {
        metadata: Metadata::named(FLAGS),
        dict,
    })
}

/// The merged layers: every setting's raw value and origin.
#[derive(Debug)]
pub struct Values {
    figment: Figment,
    env_names: BTreeMap<String, String>,
    computed: BTreeMap<&'static str, String>,
}

impl Values {
    /// Reads the file (if any), the environment through `env`, then the flags.
    pub fn load(
        file: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(file_layer(path)?);
        }
        let (env_layer, env_names) = env_layer(env);
        figment = figment.merge(env_layer).merge(flag_layer(overrides)?);
        let mut values = Self {
            figment,
            env_names,
            computed: BTreeMap::new(),
        };
        // In registry order, so that a computed default may use the settings before it.
        for setting in SETTINGS {
            let key = setting.info().key;
            if values.raw(key).is_none()
                && let Some(value) = setting.computed_default(&values)
            {
                values.computed.insert(key, value);
            }
        }
        Ok(values)
    }

    /// The raw value of the setting `key` given by a layer.
    fn raw(&self, key: &str) -> Option<Value> {
        self.figment.find_value(key).ok()
    }

    /// The raw text given for a setting (or computed for it), for computed defaults.
    pub(crate) fn text<T: Kind>(&self, setting: &Setting<T>) -> Option<String> {
        let key = setting.info.key;
        match self.raw(key) {
            Some(Value::String(_, s)) => Some(s),
            Some(_) => None,
            None => self.computed.get(key).cloned(),
        }
    }

    /// The effective value: given, computed or declared; `None` when unset.
    pub(crate) fn get<T: Kind>(&self, setting: &Setting<T>) -> Result<Option<T>, ConfigError> {
        let key = setting.info.key;
        if let Some(raw) = self.raw(key) {
            return setting.parse(&raw).map(Some);
        }
        if let Some(text) = self.computed.get(key) {
            // A computed default (the host name, the data directory's database) is taken as
            // it is: a rule is for what users write.
            return T::from_value(&Value::from(text.as_str()))
                .map(Some)
                .map_err(|message| setting.invalid(message));
        }
        Ok(setting.declared_default())
    }

    /// The effective value of a setting that has a default.
    pub(crate) fn value<T: Kind>(&self, setting: &Setting<T>) -> Result<T, ConfigError> {
        Ok(self.get(setting)?.unwrap_or_else(|| setting.fallback()))
    }

    /// Whether a layer gave the setting a value.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// Where the effective value of `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        let Some(metadata) = self.figment.find_metadata(key) else {
            return Origin::Default;
        };
        match metadata.name.as_ref() {
            FILE => Origin::File(
                metadata
                    .source
                    .as_ref()
                    .and_then(|s| s.file_path())
                    .map(Path::to_owned)
                    .unwrap_or_default(),
            ),
            ENV => Origin::Env(self.env_names.get(key).cloned().unwrap_or_default()),
            _ => Origin::Flag(
                by_key(key)
                    .and_then(|s| s.info().flag_name())
                    .unwrap_or_default()
                    .to_owned(),
            ),
        }
    }
}
