//! Authorization policies for hubs and hub methods (like `[Authorize]` and `RequireClaim`).

use std::fmt;
use std::sync::Arc;

use super::principal::Principal;

type Predicate = Arc<dyn Fn(&Principal) -> bool + Send + Sync>;

/// A requirement a caller must meet. Every policy except [`Policy::anonymous`] requires an
/// authenticated caller.
#[derive(Clone)]
pub struct Policy {
    requirements: Vec<Requirement>,
}

#[derive(Clone)]
enum Requirement {
    Authenticated,
    Claim {
        claim_type: String,
        allowed: Vec<String>,
    },
    Role(Vec<String>),
    Custom(Predicate),
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Authenticated => f.write_str("Authenticated"),
            Requirement::Claim {
                claim_type,
                allowed,
            } => f
                .debug_struct("Claim")
                .field("claim_type", claim_type)
                .field("allowed", allowed)
                .finish(),
            Requirement::Role(roles) => f.debug_tuple("Role").field(roles).finish(),
            Requirement::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.requirements).finish()
    }
}

impl Policy {
    /// Anyone, even unauthenticated callers.
    pub fn anonymous() -> Self {
        Self {
            requirements: Vec::new(),
        }
    }

    /// Any authenticated caller (`[Authorize]`).
    pub fn authenticated() -> Self {
        Self {
            requirements: vec![Requirement::Authenticated],
        }
    }

    /// The caller's token has the claim, with any value (`RequireClaim("type")`).
    pub fn require_claim(claim_type: impl Into<String>) -> Self {
        Self::authenticated().and_claim(claim_type, Vec::<String>::new())
    }

    /// The caller's token has the claim with one of `values` (`RequireClaim("type", values)`).
    pub fn require_claim_value<I, V>(claim_type: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        Self::authenticated().and_claim(claim_type, values)
    }

    /// The caller has one of the roles (`RequireRole`).
    pub fn require_role<I, V>(roles: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        let mut policy = Self::authenticated();
        policy.requirements.push(Requirement::Role(
            roles.into_iter().map(Into::into).collect(),
        ));
        policy
    }

    /// The caller satisfies a custom predicate.
    pub fn require(predicate: impl Fn(&Principal) -> bool + Send + Sync + 'static) -> Self {
        let mut policy = Self::authenticated();
        policy
            .requirements
            .push(Requirement::Custom(Arc::new(predicate)));
        policy
    }

    /// Adds a claim requirement to this policy (empty `values` = any value).
    pub fn and_claim<I, V>(mut self, claim_type: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        self.requirements.push(Requirement::Claim {
            claim_type: claim_type.into(),
            allowed: values.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Combines two policies: both must pass.
    pub fn and(mut self, other: Policy) -> Self {
        self.requirements.extend(other.requirements);
        self
    }

    /// Whether this policy lets anonymous callers through.
    pub fn allows_anonymous(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Evaluates the policy for a caller (`None` = not authenticated).
    pub fn is_satisfied_by(&self, principal: Option<&Principal>) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let Some(principal) = principal else {
            return false;
        };
        self.requirements.iter().all(|req| match req {
            Requirement::Authenticated => true,
            Requirement::Claim {
                claim_type,
                allowed,
            } => {
                let values = principal.claim_values(claim_type);
                if allowed.is_empty() {
                    principal.claim(claim_type).is_some()
                } else {
                    values.iter().any(|v| allowed.contains(v))
                }
            }
            Requirement::Role(roles) => roles.iter().any(|r| principal.is_in_role(r)),
            Requirement::Custom(predicate) => predicate(principal),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn principal(claims: Value) -> Principal {
        let Value::Object(map) = claims else {
            unreachable!()
        };
        Principal::new(map, "sub")
    }

    #[test]
    fn anonymous_and_authenticated() {
        assert!(Policy::anonymous().is_satisfied_by(None));
        assert!(!Policy::authenticated().is_satisfied_by(None));
        assert!(Policy::authenticated().is_satisfied_by(Some(&principal(json!({"sub": "a"})))));
    }

    #[test]
    fn claims_with_and_without_values() {
        let notify = principal(json!({"sub": "a", "permission": ["read", "notify"]}));
        let read = principal(json!({"sub": "b", "permission": "read"}));
        let none = principal(json!({"sub": "c"}));
        let any = Policy::require_claim("permission");
        assert!(any.is_satisfied_by(Some(&notify)));
        assert!(any.is_satisfied_by(Some(&read)));
        assert!(!any.is_satisfied_by(Some(&none)));
        let value = Policy::require_claim_value("permission", ["notify"]);
        assert!(value.is_satisfied_by(Some(&notify)));
        assert!(!value.is_satisfied_by(Some(&read)));
        assert!(!value.is_satisfied_by(None));
    }

    #[test]
    fn roles_and_combinations() {
        let admin = principal(json!({"sub": "a", "role": "admin", "tier": "1"}));
        let policy =
            Policy::require_role(["admin", "ops"]).and(Policy::require_claim_value("tier", ["1"]));
        assert!(policy.is_satisfied_by(Some(&admin)));
        let user = principal(json!({"sub": "a", "role": "user", "tier": "1"}));
        assert!(!policy.is_satisfied_by(Some(&user)));
        let custom = Policy::require(|p| p.user_id() == Some("a"));
        assert!(custom.is_satisfied_by(Some(&user)));
    }
}
