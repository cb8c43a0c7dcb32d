//! Azure SignalR Service compatibility: the access keys that turn it on, and the service's
//! public URL.

use super::ConfigError;
use super::settings as s;
use super::values::Values;

/// Shortest access key accepted, in characters (Azure's keys are 44 base64 characters).
pub const MIN_ACCESS_KEY_LENGTH: usize = 32;

/// Azure SignalR Service compatibility (`/client` and the data-plane REST API under `/api`).
/// Off unless access keys are configured.
#[derive(Clone, Default)]
pub struct AzureConfig {
    /// The access keys (`AccessKey=` of the connection strings), primary first: tokens signed
    /// with any of them are accepted. Empty (default): Azure compatibility is off.
    pub access_keys: Vec<String>,
    /// The public URL of the Azure-compatible endpoint (the `Endpoint` of the connection string
    /// printed at start, e.g. `https://signalr.example.com`), without a trailing `/`. `None`:
    /// `http://` and the listening address.
    pub client_endpoint: Option<String>,
}

impl AzureConfig {
    /// Whether Azure compatibility is on (access keys are configured).
    pub fn is_enabled(&self) -> bool {
        !self.access_keys.is_empty()
    }
}

/// The keys never show.
impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field(
                "access_keys",
                &format_args!("[{} redacted]", self.access_keys.len()),
            )
            .field("client_endpoint", &self.client_endpoint)
            .finish()
    }
}

/// Why an access key cannot be used, without repeating it.
fn key_problem(key: &str) -> Option<String> {
    let len = key.chars().count();
    if len < MIN_ACCESS_KEY_LENGTH {
        return Some(format!(
            "it is {len} characters long, at least {MIN_ACCESS_KEY_LENGTH} are required"
        ));
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == ';' || c.is_control())
    {
        return Some("it contains a space, a control character or ';'".to_owned());
    }
    let mut distinct: Vec<char> = key.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some(format!(
            "it uses only {} distinct characters",
            distinct.len()
        ));
    }
    None
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_access_keys(keys: &Vec<String>) -> Result<(), String> {
    for (i, key) in keys.iter().enumerate() {
        if let Some(problem) = key_problem(key.trim()) {
            let which = match i {
                0 => "the primary key".to_owned(),
                1 => "the secondary key".to_owned(),
                n => format!("key {}", n + 1),
            };
            return Err(format!(
                "{which} is too weak: {problem}; use Azure's 44-character keys or e.g. `openssl rand -base64 33`"
            ));
        }
    }
    Ok(())
}

#[allow(
    clippy::ptr_arg,
    reason = "a rule takes a reference to its setting's type"
)]
pub(super) fn check_client_endpoint(url: &String) -> Result<(), String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.contains(['?', '#', ' ']) && !rest.starts_with('/') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{url:?} is not an http:// or https:// URL such as https://signalr.example.com"
        )),
    }
}

/// The Azure compatibility settings.
pub(super) fn resolve(values: &Values) -> Result<AzureConfig, ConfigError> {
    let access_keys = values
        .get(&s::AZURE_ACCESS_KEYS)?
        .unwrap_or_default()
        .into_iter()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
        .collect();
    let client_endpoint = values
        .get(&s::AZURE_CLIENT_ENDPOINT)?
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty());
    Ok(AzureConfig {
        access_keys,
        client_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_long_and_varied() {
        let emulator = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH".to_owned();
        assert!(check_access_keys(&vec![emulator.clone()]).is_ok());
        let short = check_access_keys(&vec![emulator.clone(), "short-key".to_owned()]);
        let message = short.err().unwrap_or_default();
        assert!(message.contains("secondary key"), "{message}");
        assert!(!message.contains("short-key"), "{message}");
        assert!(check_access_keys(&vec!["a".repeat(40)]).is_err());
        assert!(check_access_keys(&vec![format!("{emulator};x")]).is_err());
    }

    #[test]
    fn client_endpoints() {
        assert!(check_client_endpoint(&"https://signalr.example.com".to_owned()).is_ok());
        assert!(check_client_endpoint(&"http://localhost:8888/".to_owned()).is_ok());
        assert!(check_client_endpoint(&"signalr.example.com".to_owned()).is_err());
        assert!(check_client_endpoint(&"https://x?hub=a".to_owned()).is_err());
    }

    #[test]
    fn keys_from_the_environment_never_shown() {
        use super::super::{Config, Overrides, Values, report};
        let primary = "PRIMARY-KEY-0123456789abcdefghijklmnopq";
        let secondary = "SECONDARY-KEY-0123456789abcdefghijklmno";
        let keys = format!(" {primary} , {secondary} ");
        let env = |name: &str| match name {
            "SIGNALBOX_AZURE_ACCESS_KEYS" => Some(keys.clone()),
            "SIGNALBOX_AZURE_CLIENT_ENDPOINT" => Some("https://signalr.example.com/".to_owned()),
            _ => None,
        };
        let values = Values::load(None, &env, &Overrides::default()).unwrap();
        let config = Config::resolve(&values).unwrap();
        assert_eq!(config.azure.access_keys, [primary, secondary]);
        assert!(config.azure.is_enabled());
        assert_eq!(
            config.azure.client_endpoint.as_deref(),
            Some("https://signalr.example.com")
        );
        let shown = report::effective_settings(&values).unwrap();
        for shown in [shown, format!("{config:?}"), config.summary()] {
            assert!(!shown.contains("KEY-0123"), "{shown}");
        }

        let weak = |name: &str| {
            (name == "SIGNALBOX_AZURE_ACCESS_KEYS").then(|| format!("{primary},tooshort"))
        };
        let message = Values::load(None, &weak, &Overrides::default())
            .and_then(|values| Config::resolve(&values))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("SIGNALBOX_AZURE_ACCESS_KEYS"), "{message}");
        assert!(!message.contains("tooshort"), "{message}");

        let off =
            Config::resolve(&Values::load(None, &|_: &str| None, &Overrides::default()).unwrap())
                .unwrap();
        assert!(!off.azure.is_enabled());
    }

    #[test]
    fn debug_hides_the_keys() {
        let config = AzureConfig {
            access_keys: vec!["SECRET-KEY-0123456789abcdefghijklmnop".to_owned()],
            client_endpoint: None,
        };
        assert!(!format!("{config:?}").contains("SECRET-KEY"));
    }
}
