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
/// its transport, its hub caller and each invocation context). They are kept compactly, as
/// every idle connection holds them: the claim names in one string, the values in a list sorted
/// by name, the user id pointing at its claim when it is that claim's value; [`Principal::claims`]
/// builds a map the first time it is called.
#[derive(Clone)]
pub struct Principal(Arc<Claims>);

struct Claims {
    /// The user id, when it is not the value of one of the claims.
    own_user_id: Option<Box<str>>,
    /// The claim whose (string) value is the user id.
    user_id_claim: Option<u32>,
    /// Every claim name, one after the other, in the order of `entries`.
    names: Box<str>,
    /// Sorted by claim name, unique: where the name ends in `names`, and the value.
    entries: Box<[(u32, Value)]>,
    /// Boxed: most principals never build it.
    map: OnceLock<Box<Map<String, Value>>>,
}

impl Claims {
    fn name(&self, index: usize) -> &str {
        let start = match index.checked_sub(1) {
            Some(previous) => self.entries[previous].0 as usize,
            None => 0,
        };
        &self.names[start..self.entries[index].0 as usize]
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        (0..self.entries.len()).map(|i| (self.name(i), &self.entries[i].1))
    }

    fn user_id(&self) -> Option<&str> {
        match (&self.own_user_id, self.user_id_claim) {
            (Some(id), _) => Some(id),
            (None, Some(index)) => self.entries[index as usize].1.as_str(),
            (None, None) => None,
        }
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.0.user_id() == other.0.user_id() && self.0.iter().eq(other.0.iter())
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.0.user_id())
            .field("claims", &self.0.iter().collect::<Vec<_>>())
            .finish()
    }
}

/// How a principal's user id is found.
enum UserId<'a> {
    /// The value of this claim (a string, or a number or boolean as text).
    Claim(&'a str),
    /// This id, whatever the claims say.
    Given(String),
}

impl Principal {
    /// Builds a principal from a claim set, taking the user id from `user_id_claim`.
    pub fn new(claims: Map<String, Value>, user_id_claim: &str) -> Self {
        Self::from_parts(claims, UserId::Claim(user_id_claim))
    }

    fn from_parts(claims: Map<String, Value>, user_id: UserId<'_>) -> Self {
        let mut sorted: Vec<(String, Value)> = claims.into_iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut names = String::with_capacity(sorted.iter().map(|(name, _)| name.len()).sum());
        let mut own_user_id = None;
        let mut user_id_claim = None;
        let mut entries = Vec::with_capacity(sorted.len());
        for (index, (name, value)) in sorted.into_iter().enumerate() {
            names.push_str(&name);
            match (&user_id, &value) {
                // Pointing at the claim: the id is not stored twice.
                (UserId::Claim(claim), Value::String(_)) if name == *claim => {
                    user_id_claim = u32::try_from(index).ok();
                }
                (UserId::Claim(claim), other) if name == *claim => {
                    own_user_id = claim_as_string(other).map(String::into_boxed_str);
                }
                (UserId::Given(id), Value::String(text))
                    if user_id_claim.is_none() && text == id =>
                {
                    user_id_claim = u32::try_from(index).ok();
                }
                _ => {}
            }
            // Claim names of a token are far below 4 GiB.
            entries.push((u32::try_from(names.len()).unwrap_or(u32::MAX), value));
        }
        if let UserId::Given(id) = user_id
            && user_id_claim.is_none()
        {
            own_user_id = Some(id.into_boxed_str());
        }
        Self(Arc::new(Claims {
            own_user_id,
            user_id_claim,
            names: names.into_boxed_str(),
            entries: entries.into_boxed_slice(),
            map: OnceLock::new(),
        }))
    }

    /// A principal with the given claims whose user id is `user_id`, whatever the claims say: for
    /// an application that maps a token to one of its own users (an external issuer's `sub` or
    /// e-mail to a local account name), so that hubs, user targets and logs see the local user.
    pub fn with_user_id(claims: Map<String, Value>, user_id: impl Into<String>) -> Self {
        Self::from_parts(claims, UserId::Given(user_id.into()))
    }

    /// The user id (by default the `sub` claim); `None` when the token has no such claim.
    pub fn user_id(&self) -> Option<&str> {
        self.0.user_id()
    }

    /// All claims of the token (built on first use).
    pub fn claims(&self) -> &Map<String, Value> {
        self.0.map.get_or_init(|| {
            Box::new(
                self.0
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.clone()))
                    .collect(),
            )
        })
    }

    /// The raw value of one claim.
    pub fn claim(&self, claim_type: &str) -> Option<&Value> {
        let claims = &self.0;
        let (mut low, mut high) = (0, claims.entries.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match claims.name(middle).cmp(claim_type) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(&claims.entries[middle].1),
            }
        }
        None
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
        assert_eq!(principal(json!({"sub": 42})).user_id(), Some("42"));
        assert_eq!(principal(json!({"sub": ["a"]})).user_id(), None);
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
        // The same id as a claim's value: still that id.
        let Value::Object(map) = json!({"sub": "alice", "name": "alice"}) else {
            unreachable!()
        };
        let p = Principal::with_user_id(map, "alice");
        assert_eq!(p.user_id(), Some("alice"));
        assert_eq!(p, Principal::with_user_id(p.claims().clone(), "alice"));
        assert_ne!(p, Principal::with_user_id(p.claims().clone(), "bob"));
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
