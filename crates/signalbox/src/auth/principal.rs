//! The authenticated user of a connection (SignalR's `ClaimsPrincipal`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Claim types that carry roles, in the order they are looked up.
const ROLE_CLAIMS: [&str; 3] = [
    "role",
    "roles",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
];

/// An authenticated caller: its user id and the claims of its token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    user_id: Option<String>,
    claims: Map<String, Value>,
}

impl Principal {
    /// Builds a principal from a claim set, taking the user id from `user_id_claim`.
    pub fn new(claims: Map<String, Value>, user_id_claim: &str) -> Self {
        let user_id = claims.get(user_id_claim).and_then(claim_as_string);
        Self { user_id, claims }
    }

    /// The user id (by default the `sub` claim); `None` when the token has no such claim.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// All claims of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The raw value of one claim.
    pub fn claim(&self, claim_type: &str) -> Option<&Value> {
        self.claims.get(claim_type)
    }

    /// The values of one claim as strings: a string claim gives one value, an array claim one per
    /// element, numbers and booleans their text.
    pub fn claim_values(&self, claim_type: &str) -> Vec<String> {
        match self.claims.get(claim_type) {
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
        let exp = self.claims.get("exp")?.as_f64()?;
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
