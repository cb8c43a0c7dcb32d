//! The authenticated user of a connection (SignalR's `ClaimsPrincipal`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Claim types that carry roles, in the order they are looked up.
const ROLE_CLAIMS: [&str; 3] = [
    "role",
    "roles",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
];

/// An authenticated caller: its user id and the claims of its token.
///
/// Cloning is cheap: the claims are shared, not copied (one connection's principal is held by
/// its transport, its hub caller and each invocation context). They are kept as a sorted list;
/// [`Principal::claims`] builds a map the first time it is called.
#[derive(Clone)]
pub struct Principal(Arc<Claims>);

struct Claims {
    user_id: Option<Box<str>>,
    /// Sorted by claim type, unique.
    entries: Box<[(Box<str>, Value)]>,
    map: OnceLock<Map<String, Value>>,
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.0.user_id == other.0.user_id && self.0.entries == other.0.entries
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.0.user_id)
            .field("claims", &self.0.entries)
            .finish()
    }
}

impl Principal {
    /// Builds a principal from a claim set, taking the user id from `user_id_claim`.
    pub fn new(claims: Map<String, Value>, user_id_claim: &str) -> Self {
        let user_id = claims
            .get(user_id_claim)
            .and_then(claim_as_string)
            .map(String::into_boxed_str);
        Self::from_parts(claims, user_id)
    }

    fn from_parts(claims: Map<String, Value>, user_id: Option<Box<str>>) -> Self {
        let mut entries: Box<[(Box<str>, Value)]> = claims
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self(Arc::new(Claims {
            user_id,
            entries,
            map: OnceLock::new(),
        }))
    }

    /// A principal with the given claims whose user id is `user_id`, whatever the claims say: for
    /// an application that maps a token to one of its own users (an external issuer's `sub` or
    /// e-mail to a local account name), so that hubs, user targets and logs see the local user.
    pub fn with_user_id(claims: Map<String, Value>, user_id: impl Into<String>) -> Self {
        Self::from_parts(claims, Some(user_id.into().into_boxed_str()))
    }

    /// The user id (by default the `sub` claim); `None` when the token has no such claim.
    pub fn user_id(&self) -> Option<&str> {
        self.0.user_id.as_deref()
    }

    /// All claims of the token (built on first use).
    pub fn claims(&self) -> &Map<String, Value> {
        self.0.map.get_or_init(|| {
            self.0
                .entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        })
    }

    /// The raw value of one claim.
    pub fn claim(&self, claim_type: &str) -> Option<&Value> {
        let entries = &self.0.entries;
        entries
            .binary_search_by(|(k, _)| (**k).cmp(claim_type))
            .ok()
            .and_then(|i| entries.get(i))
            .map(|(_, v)| v)
    }

    /// The values of one claim as strings: a string claim gives one value, an array claim one per
    /// element, numbers and booleans their text.
    pub fn claim_values(&self, claim_type: &str) -> Vec<String> {
        match self.claim(claim_type) {
            Some(Value::Array(items)) => items.iter().filter_map(claim_as_string).collect(),
            Some(value) => claim_as_string(value).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Whether the claim is present with (one of its values equal to) `value`.
    pub fn has_claim(&self, claim_type: &str, value: &str) -> bool {
        self.claim_values(claim_type).iter().any(|v| v == value)
    }

    /// Whether the principal has `role` in any of the role claims (`role`, `roles`, or the .NET role
    /// claim type).
    pub fn is_in_role(&self, role: &str) -> bool {
        ROLE_CLAIMS.iter().any(|claim| self.has_claim(claim, role))
    }

    /// When the token expires (`exp`), if it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let exp = self.claim("exp")?.as_f64()?;
        if !exp.is_finite() || exp < 0.0 {
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp))
    }
}

fn claim_as_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(claims: Value) -> Principal {
        let Value::Object(map) = claims else {
            panic!("claims must be an object")
        };
        Principal::new(map, "sub")
    }

    #[test]
    fn user_id_from_configured_claim() {
        let p = principal(json!({"sub": "alice", "email": "a@example.com"}));
        assert_eq!(p.user_id(), Some("alice"));
        let Value::Object(map) = json!({"sub": "alice", "email": "a@example.com"}) else {
            unreachable!()
        };
        assert_eq!(
            Principal::new(map, "email").user_id(),
            Some("a@example.com")
        );
        assert_eq!(principal(json!({"name": "x"})).user_id(), None);
    }

    #[test]
    fn an_explicit_user_id_wins_over_the_claims() {
        let Value::Object(map) = json!({"sub": "google-123", "email": "a@example.com"}) else {
            unreachable!()
        };
        let p = Principal::with_user_id(map, "alice");
        assert_eq!(p.user_id(), Some("alice"));
        assert_eq!(p.claim("sub"), Some(&json!("google-123")));
        assert_eq!(p.claim("email"), Some(&json!("a@example.com")));
    }

    #[test]
    fn every_claim_is_kept_and_clones_share_them() {
        let claims = json!({"sub": "a", "z": 1, "aud": ["x", "y"], "m": {"k": true}, "b": null});
        let p = principal(claims.clone());
        for (k, v) in claims.as_object().unwrap() {
            assert_eq!(p.claim(k), Some(v), "{k}");
        }
        assert_eq!(p.claim("nope"), None);
        assert_eq!(&Value::Object(p.claims().clone()), &claims);
        let copy = p.clone();
        assert_eq!(copy, p);
        assert!(std::ptr::eq(copy.claims(), p.claims()));
        assert_ne!(copy, principal(json!({"sub": "a"})));
    }

    #[test]
    fn claim_values_flatten_arrays_and_scalars() {
        let p = principal(json!({"sub": "a", "permission": ["notify", "read"], "level": 3}));
        assert_eq!(p.claim_values("permission"), vec!["notify", "read"]);
        assert_eq!(p.claim_values("level"), vec!["3"]);
        assert!(p.has_claim("permission", "notify"));
        assert!(!p.has_claim("permission", "admin"));
        assert!(p.claim_values("missing").is_empty());
    }

    #[test]
    fn roles_from_any_role_claim() {
        assert!(principal(json!({"role": "admin"})).is_in_role("admin"));
        assert!(principal(json!({"roles": ["x", "admin"]})).is_in_role("admin"));
        assert!(
            principal(
                json!({"http://schemas.microsoft.com/ws/2008/06/identity/claims/role": "admin"})
            )
            .is_in_role("admin")
        );
        assert!(!principal(json!({"role": "user"})).is_in_role("admin"));
    }

    #[test]
    fn expiry_from_exp() {
        let p = principal(json!({"exp": 2_000_000_000u64}));
        assert_eq!(
            p.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(principal(json!({})).expires_at(), None);
        assert_eq!(principal(json!({"exp": -5})).expires_at(), None);
    }
}
