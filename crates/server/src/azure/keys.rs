//! Access keys of serverless hubs: verifying the bearer tokens of REST callers and of clients,
//! and minting client tokens, as Azure SignalR Service does.
//!
//! Tokens are HMAC-signed JWTs whose key is the UTF-8 bytes of the access key text (not its
//! base64 decoding). REST tokens use HS256; client tokens HS256 or HS512. Every configured key
//! is tried (primary, then secondary) and the `kid` header is ignored: the SDKs derive it from a
//! per-process hash. `exp` is required, `nbf` honoured, both with [`LEEWAY_SECS`] of clock skew.
//!
//! The audience is compared leniently: the SDKs put the service host without its port and the
//! query string into `aud`, while the documentation describes the bare request URL. A REST token
//! is accepted when the path of its `aud` (without query, fragment and trailing `/`, percent
//! decoded, case-insensitively) is the request path; a client token when that path is `/client`
//! and, if its query names a `hub`, that hub is the one connected to. The host is not compared.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The claim carrying the user id in tokens made by the SDKs and by [`AccessKeys::mint_client`].
pub const USER_ID_CLAIM: &str = "asrs.s.uid";

/// Why a token was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No access key is configured.
    #[error("no access key is configured")]
    NoKeys,
    /// The token is not a well-formed JWT.
    #[error("the token is malformed")]
    Malformed,
    /// The token is signed with an algorithm that is not accepted here.
    #[error("the token algorithm is not accepted")]
    InvalidAlgorithm,
    /// No configured key produces the token's signature.
    #[error("the signature is invalid")]
    InvalidSignature,
    /// A required claim is missing or not of the right type.
    #[error("the token has no valid {0} claim")]
    MissingClaim(String),
    /// The token expired.
    #[error("the token is expired")]
    Expired,
    /// The token is not valid yet (`nbf`).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token's audience does not match the request.
    #[error("the audience is invalid")]
    InvalidAudience,
    /// The token could not be signed.
    #[error("the token could not be signed: {0}")]
    Sign(String),
}

/// One access key, ready to sign and verify.
#[derive(Clone)]
struct Key {
    text: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The access keys of the service, primary first. Cheap to clone.
#[derive(Clone, Default)]
pub struct AccessKeys {
    keys: std::sync::Arc<Vec<Key>>,
    texts: std::sync::Arc<Vec<String>>,
}

impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl AccessKeys {
    /// The keys, primary first; empty strings are ignored.
    pub fn new(keys: Vec<String>) -> Self {
        let keys: Vec<Key> = keys
            .into_iter()
            .filter(|text| !text.is_empty())
            .filter_map(|text| {
                let encoding = EncodingKey::from_secret(text.as_bytes()).ok()?;
                let decoding = DecodingKey::from_secret(text.as_bytes()).ok()?;
                Some(Key {
                    text,
                    encoding,
                    decoding,
                })
            })
            .collect();
        let texts = keys.iter().map(|k| k.text.clone()).collect();
        Self {
            keys: std::sync::Arc::new(keys),
            texts: std::sync::Arc::new(texts),
        }
    }

    /// The key texts, primary first (for the upstream request signature).
    pub fn keys(&self) -> &[String] {
        &self.texts
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a REST bearer token (HS256) for a request to `request_path` (the URL path as
    /// received, percent-encoded or not). Returns the token's claims.
    pub fn verify_rest(
        &self,
        token: &str,
        request_path: &str,
    ) -> Result<Map<String, Value>, KeyError> {
        let claims = self.verify(token, &[Algorithm::HS256])?;
        let expected = normalize_path(request_path);
        let accepted = audiences(&claims)?
            .iter()
            .any(|aud| split_audience(aud).is_some_and(|(path, _)| path == expected));
        if accepted {
            Ok(claims)
        } else {
            Err(KeyError::InvalidAudience)
        }
    }

    /// Verifies a client token (HS256 or HS512) for hub `hub` (the internal name: lowercased,
    /// with the application prefix). Returns the token's claims.
    pub fn verify_client(&self, token: &str, hub: &str) -> Result<Map<String, Value>, KeyError> {
        let claims = self.verify(token, &[Algorithm::HS256, Algorithm::HS512])?;
        let accepted = audiences(&claims)?.iter().any(|aud| {
            let Some((path, query)) = split_audience(aud) else {
                return false;
            };
            if path != "/client" {
                return false;
            }
            let named = query.and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "hub")
                    .map(|(_, value)| value.into_owned())
            });
            named.is_none_or(|named| named.eq_ignore_ascii_case(hub))
        });
        if accepted {
            Ok(claims)
        } else {
            Err(KeyError::InvalidAudience)
        }
    }

    /// A client token as `:generateToken` and the Management SDK make it: HS256 with the primary
    /// key, claims `aud`, `exp`, `iat`, `nbf` and, when a user is given, `asrs.s.uid`.
    pub fn mint_client(
        &self,
        audience: &str,
        user_id: Option<&str>,
        lifetime: Duration,
    ) -> Result<String, KeyError> {
        let key = self.keys.first().ok_or(KeyError::NoKeys)?;
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = Map::new();
        if let Some(user) = user_id {
            claims.insert(USER_ID_CLAIM.to_owned(), Value::from(user));
        }
        claims.insert("nbf".to_owned(), Value::from(now));
        claims.insert(
            "exp".to_owned(),
            Value::from(now.saturating_add(lifetime.as_secs())),
        );
        claims.insert("iat".to_owned(), Value::from(now));
        claims.insert("aud".to_owned(), Value::from(audience));
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Checks the signature against every key, then `exp` and `nbf`.
    fn verify(
        &self,
        token: &str,
        algorithms: &[Algorithm],
    ) -> Result<Map<String, Value>, KeyError> {
        if self.keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // The audience is checked leniently by the callers.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let mut last = KeyError::InvalidSignature;
        for key in self.keys.iter() {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => {
                    last = map_error(error.kind());
                    if last != KeyError::InvalidSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn map_error(kind: &ErrorKind) -> KeyError {
    match kind {
        ErrorKind::InvalidSignature => KeyError::InvalidSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => KeyError::InvalidAlgorithm,
        ErrorKind::ExpiredSignature => KeyError::Expired,
        ErrorKind::ImmatureSignature => KeyError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            KeyError::MissingClaim(claim.clone())
        }
        _ => KeyError::Malformed,
    }
}

/// The `aud` values of a token (a string or an array of strings); none is an error.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, KeyError> {
    let values: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if values.is_empty() {
        Err(KeyError::MissingClaim("aud".to_owned()))
    } else {
        Ok(values)
    }
}

/// An audience's normalised path and raw query: `scheme://host[:port]/path?query#fragment`, or a
/// bare `/path?query`.
fn split_audience(aud: &str) -> Option<(String, Option<&str>)> {
    let aud = aud.trim();
    let aud = aud.split_once('#').map_or(aud, |(before, _)| before);
    let (base, query) = match aud.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (aud, None),
    };
    let path = match base.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None if base.starts_with('/') => base,
        None => return None,
    };
    Some((normalize_path(path), query))
}

/// A path for comparison: percent-decoded, lowercased, without trailing `/`.
fn normalize_path(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(before, _)| before);
    let decoded = percent_decode(path).to_lowercase();
    decoded.trim_end_matches('/').to_owned()
}

/// Decodes `%XX` escapes (invalid ones are kept as they are); invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            // Two hex digits make a value below 256.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const EMULATOR_KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// A token built byte for byte as the .NET SDK does: its header (with a meaningless `kid`),
    /// its payload, HMAC over the UTF-8 key.
    fn sdk_token(key: &str, alg: Algorithm, header: &str, payload: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(header.as_bytes());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(key.as_bytes()).unwrap(),
            alg,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn rest_token(key: &str, aud: &str) -> String {
        let now = now();
        sdk_token(
            key,
            Algorithm::HS256,
            r#"{"alg":"HS256","typ":"JWT","kid":"123"}"#,
            &json!({
                "nameid": "BUILD-HOST_5d0f0a4c8a6b4bb0a4a3e1b6e4d7c9f1",
                "nbf": now,
                "exp": now + 3600,
                "iat": now,
                "aud": aud,
            }),
        )
    }

    #[test]
    fn accepts_a_management_sdk_rest_token() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        let token = rest_token(
            EMULATOR_KEY,
            "http://localhost/api/hubs/chat/:send?api-version=2022-06-01",
        );
        let claims = keys.verify_rest(&token, "/api/hubs/chat/:send").unwrap();
        assert_eq!(
            claims["nameid"],
            "BUILD-HOST_5d0f0a4c8a6b4bb0a4a3e1b6e4d7c9f1"
        );
        // The hub name is lowercased by the SDK; the request may spell it otherwise.
        assert!(keys.verify_rest(&token, "/api/hubs/Chat/:send/").is_ok());
        assert_eq!(
            keys.verify_rest(&token, "/api/hubs/chat/users/a/:send"),
            Err(KeyError::InvalidAudience)
        );
    }

    #[test]
    fn accepts_escaped_segments_and_the_application_query() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        let token = rest_token(
            EMULATOR_KEY,
            "https://x.service.signalr.net/api/hubs/chat/users/user%2Fa/:send?application=app&api-version=2022-06-01",
        );
        assert!(
            keys.verify_rest(&token, "/api/hubs/chat/users/user%2Fa/:send")
                .is_ok()
        );
        assert!(
            keys.verify_rest(&token, "/api/hubs/chat/users/user%2fa/:send")
                .is_ok()
        );
    }

    #[test]
    fn accepts_the_documented_audience_form() {
        let keys = AccessKeys::new(vec!["a key".to_owned()]);
        let token = rest_token(
            "a key",
            "https://example.service.signalr.net:443/api/v1/hubs/myhub/",
        );
        assert!(keys.verify_rest(&token, "/api/v1/hubs/myhub").is_ok());
    }

    #[test]
    fn tries_every_key() {
        let keys = AccessKeys::new(vec!["primary".to_owned(), "secondary".to_owned()]);
        let token = rest_token("secondary", "http://h/api/hubs/chat/:send");
        assert!(keys.verify_rest(&token, "/api/hubs/chat/:send").is_ok());
        let token = rest_token("other", "http://h/api/hubs/chat/:send");
        assert_eq!(
            keys.verify_rest(&token, "/api/hubs/chat/:send"),
            Err(KeyError::InvalidSignature)
        );
        assert_eq!(
            AccessKeys::new(Vec::new()).verify_rest(&token, "/"),
            Err(KeyError::NoKeys)
        );
    }

    #[test]
    fn requires_exp_and_honours_nbf() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let aud = "http://h/api/hubs/chat";
        let no_exp = sdk_token(EMULATOR_KEY, Algorithm::HS256, header, &json!({"aud": aud}));
        assert_eq!(
            keys.verify_rest(&no_exp, "/api/hubs/chat"),
            Err(KeyError::MissingClaim("exp".to_owned()))
        );
        let expired = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS256,
            header,
            &json!({"aud": aud, "exp": now() - 120}),
        );
        assert_eq!(
            keys.verify_rest(&expired, "/api/hubs/chat"),
            Err(KeyError::Expired)
        );
        let skewed = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS256,
            header,
            &json!({"aud": aud, "exp": now() - 5}),
        );
        assert!(keys.verify_rest(&skewed, "/api/hubs/chat").is_ok());
        let early = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS256,
            header,
            &json!({"aud": aud, "exp": now() + 600, "nbf": now() + 300}),
        );
        assert_eq!(
            keys.verify_rest(&early, "/api/hubs/chat"),
            Err(KeyError::NotYetValid)
        );
        let no_aud = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS256,
            header,
            &json!({"exp": now() + 600}),
        );
        assert_eq!(
            keys.verify_rest(&no_aud, "/api/hubs/chat"),
            Err(KeyError::MissingClaim("aud".to_owned()))
        );
    }

    #[test]
    fn algorithms_are_pinned() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        let payload = json!({"aud": "http://h/client/?hub=chat", "exp": now() + 600});
        let hs512 = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS512,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            &payload,
        );
        assert!(keys.verify_client(&hs512, "chat").is_ok());
        let rest512 = sdk_token(
            EMULATOR_KEY,
            Algorithm::HS512,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            &json!({"aud": "http://h/api/hubs/chat", "exp": now() + 600}),
        );
        assert_eq!(
            keys.verify_rest(&rest512, "/api/hubs/chat"),
            Err(KeyError::InvalidAlgorithm)
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        assert!(keys.verify_client(&none, "chat").is_err());
        assert_eq!(
            keys.verify_client("not a token", "chat"),
            Err(KeyError::Malformed)
        );
    }

    #[test]
    fn client_audience_names_the_hub() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        let token = |aud: &str| {
            sdk_token(
                EMULATOR_KEY,
                Algorithm::HS256,
                r#"{"alg":"HS256","typ":"JWT","kid":"-1585316204"}"#,
                &json!({"asrs.s.uid": "alice", "aud": aud, "exp": now() + 600, "nbf": now(), "iat": now()}),
            )
        };
        let sdk = token("http://localhost/client/?hub=app_chat");
        assert_eq!(
            keys.verify_client(&sdk, "app_chat").unwrap()["asrs.s.uid"],
            "alice"
        );
        assert!(keys.verify_client(&sdk, "App_Chat").is_ok());
        assert_eq!(
            keys.verify_client(&sdk, "chat"),
            Err(KeyError::InvalidAudience)
        );
        assert!(
            keys.verify_client(
                &token("https://h:8443/client?hub=chat&asrs.op=%2Fchat"),
                "chat"
            )
            .is_ok()
        );
        assert!(
            keys.verify_client(&token("https://h/client/"), "chat")
                .is_ok()
        );
        assert_eq!(
            keys.verify_client(&token("https://h/api/hubs/chat"), "chat"),
            Err(KeyError::InvalidAudience)
        );
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_sdk_claims() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned(), "secondary".to_owned()]);
        let token = keys
            .mint_client(
                "http://localhost/client/?hub=chat",
                Some("user/a"),
                Duration::from_secs(3600),
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let claims = keys.verify_client(&token, "chat").unwrap();
        assert_eq!(claims["asrs.s.uid"], "user/a");
        assert_eq!(claims["aud"], "http://localhost/client/?hub=chat");
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64(), Some(iat + 3600));
        // Signed with the primary key alone.
        let secondary = AccessKeys::new(vec!["secondary".to_owned()]);
        assert_eq!(
            secondary.verify_client(&token, "chat"),
            Err(KeyError::InvalidSignature)
        );
        let anonymous = keys
            .mint_client("http://h/client/?hub=chat", None, Duration::from_secs(60))
            .unwrap();
        assert!(
            !keys
                .verify_client(&anonymous, "chat")
                .unwrap()
                .contains_key("asrs.s.uid")
        );
        assert_eq!(
            AccessKeys::new(Vec::new()).mint_client("a", None, Duration::ZERO),
            Err(KeyError::NoKeys)
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("user%2Fa"), "user/a");
        assert_eq!(percent_decode("%E2%82%AC%zz%4"), "€%zz%4");
        assert_eq!(normalize_path("/API/Hubs/Chat/"), "/api/hubs/chat");
    }

    #[test]
    fn debug_hides_the_keys() {
        let keys = AccessKeys::new(vec![EMULATOR_KEY.to_owned()]);
        assert!(!format!("{keys:?}").contains("ABCDEF"));
        assert_eq!(keys.keys(), [EMULATOR_KEY.to_owned()]);
    }
}
