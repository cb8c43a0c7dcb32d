//! The JWT pair of the functional-test app (spec §10.1–10.2): a random HS256 key made at startup,
//! `GET /generateJwtToken` issuing short-lived tokens with it, and the validator of
//! `/authorizedhub`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use signalbox::JwtAuth;

/// `iss` of issued tokens, required by the validator.
pub(crate) const ISSUER: &str = "SignalRTestServer";
/// `aud` of issued tokens, required by the validator.
pub(crate) const AUDIENCE: &str = "SignalRTests";
/// The user every issued token names.
pub(crate) const TEST_USER: &str = "testuser";
/// .NET's `ClaimTypes.NameIdentifier`.
pub(crate) const NAME_IDENTIFIER: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";
/// The JWT claim .NET writes `ClaimTypes.NameIdentifier` as; also the user id claim.
pub(crate) const NAME_IDENTIFIER_CLAIM: &str = "nameid";
/// Lifetime of issued tokens (the official app's `DateTime.Now.AddSeconds(5)`).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(5);
/// Length of the random signing key, in bytes.
const SECRET_LEN: usize = 32;

/// Issues tokens signed with the key generated at startup. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TokenIssuer {
    key: Arc<EncodingKey>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Generates a random key; returns the issuer and the matching validator (issuer and
    /// audience required, user id from `nameid`, no clock leeway so the 5 s expiry is real).
    pub(crate) fn generate() -> anyhow::Result<(Self, JwtAuth)> {
        let mut secret = [0u8; SECRET_LEN];
        getrandom::fill(&mut secret)
            .map_err(|e| anyhow::anyhow!("cannot generate the JWT key: {e}"))?;
        let auth = JwtAuth::builder()
            .hmac_secret(secret, &[Algorithm::HS256])
            .context("invalid JWT key")?
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .user_id_claim(NAME_IDENTIFIER_CLAIM)
            .leeway_secs(0)
            .build()
            .context("cannot build the JWT validator")?;
        let issuer = Self {
            key: Arc::new(EncodingKey::from_secret(&secret).context("invalid JWT key")?),
        };
        Ok((issuer, auth))
    }

    /// A token for `testuser`, valid for [`TOKEN_LIFETIME`].
    pub(crate) fn issue(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            NAME_IDENTIFIER_CLAIM: TEST_USER,
            NAME_IDENTIFIER: TEST_USER,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_LIFETIME.as_secs(),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}

/// `GET /generateJwtToken`: a fresh token as `text/plain`.
pub(crate) async fn generate_jwt_token(State(issuer): State<TokenIssuer>) -> Response {
    match issuer.issue() {
        Ok(token) => (
            [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            token,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot sign a token");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_validate_and_name_the_test_user() {
        let (issuer, auth) = TokenIssuer::generate().unwrap();
        let principal = auth.validate(&issuer.issue().unwrap()).unwrap();
        assert_eq!(principal.user_id(), Some(TEST_USER));
        assert_eq!(principal.claim_values(NAME_IDENTIFIER), vec![TEST_USER]);
    }

    #[test]
    fn tokens_from_another_key_are_rejected() {
        let (issuer, _) = TokenIssuer::generate().unwrap();
        let (_, other) = TokenIssuer::generate().unwrap();
        assert!(other.validate(&issuer.issue().unwrap()).is_err());
    }
}
