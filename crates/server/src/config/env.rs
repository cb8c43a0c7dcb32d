//! `SIGNALBOX_*` variables that are no setting: reported at start, with the likely intended one.

use super::settings::SETTINGS;

/// Variables read by something other than the settings: the binary (`SIGNALBOX_CONFIG`), the
/// test suites and scripts (`SIGNALBOX_*_BIN`, `SIGNALBOX_TEST_POSTGRES`,
/// `SIGNALBOX_UPDATE_DOCS`) and the conformance server.
pub const OTHER_VARIABLES: &[&str] = &[
    "SIGNALBOX_CONFIG",
    "SIGNALBOX_SERVER_BIN",
    "SIGNALBOX_CHAT_BIN",
    "SIGNALBOX_STREAMING_BIN",
    "SIGNALBOX_CONFORMANCE_BIN",
    "SIGNALBOX_CONFORMANCE_STATIC_DIR",
    "SIGNALBOX_TEST_POSTGRES",
    "SIGNALBOX_UPDATE_DOCS",
];

/// A `SIGNALBOX_*` variable that no setting reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable.
    pub name: String,
    /// The variable of the closest setting, when one is close.
    pub suggestion: Option<&'static str>,
}

impl std::fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown environment variable {} is ignored", self.name)?;
        if let Some(suggestion) = self.suggestion {
            write!(f, " (did you mean {suggestion}?)")?;
        }
        Ok(())
    }
}

/// The `SIGNALBOX_*` variables among `names` that are neither a setting's nor one of
/// [`OTHER_VARIABLES`], sorted.
pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<UnknownVariable> {
    let known: Vec<&'static str> = SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.info().env).chain(s.info().env_alias))
        .chain(OTHER_VARIABLES.iter().copied())
        .collect();
    let mut unknown: Vec<UnknownVariable> = names
        .into_iter()
        .filter(|name| name.starts_with("SIGNALBOX_") && !known.contains(&name.as_str()))
        .map(|name| {
            // SIGNALBOX_AUTH_JWT_SECRET: the file key spelled as a variable.
            let by_key = SETTINGS.iter().find(|s| {
                let spelled = format!("SIGNALBOX_{}", s.info().key.replace('.', "_"));
                spelled.eq_ignore_ascii_case(&name)
            });
            let suggestion = by_key
                .map(|s| s.info().env)
                .or_else(|| closest(&name.to_ascii_uppercase(), known.iter().copied()));
            UnknownVariable { name, suggestion }
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}

/// Logs a warning for each unknown `SIGNALBOX_*` variable of the process environment.
pub fn report_unknown_env() {
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for unknown in unknown_variables(names) {
        tracing::warn!(
            variable = %unknown.name,
            suggestion = unknown.suggestion,
            "{unknown}"
        );
    }
}

/// The candidate closest to `name` by edit distance, when it is close (at most a third of its
/// length, and at most 4 edits).
pub(super) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 4);
    candidates
        .map(|candidate| (distance(name, candidate), candidate))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(names: &[&str]) -> Vec<UnknownVariable> {
        unknown_variables(names.iter().map(|n| (*n).to_owned()))
    }

    #[test]
    fn known_variables_are_not_reported() {
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.info().env).collect();
        names.extend(OTHER_VARIABLES);
        names.extend(["SIGNALBOX_NODE", "PATH", "HOME", "RUST_LOG"]);
        assert_eq!(unknown(&names), Vec::new());
    }

    #[test]
    fn typos_are_reported_with_the_likely_variable() {
        let found = unknown(&[
            "SIGNALBOX_JWT_SECRT",
            "SIGNALBOX_CORS_ORIGIN",
            "SIGNALBOX_AUTH_ACCESS_TOKEN_TTL",
            "SIGNALBOX_SOMETHING_ELSE_ENTIRELY",
            "SIGNALBOX_LISTEN",
        ]);
        let pairs: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.suggestion))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "SIGNALBOX_AUTH_ACCESS_TOKEN_TTL",
                    Some("SIGNALBOX_ACCESS_TOKEN_TTL")
                ),
                ("SIGNALBOX_CORS_ORIGIN", Some("SIGNALBOX_CORS_ORIGINS")),
                ("SIGNALBOX_JWT_SECRT", Some("SIGNALBOX_JWT_SECRET")),
                ("SIGNALBOX_SOMETHING_ELSE_ENTIRELY", None),
            ]
        );
        let line = found[2].to_string();
        assert!(line.contains("SIGNALBOX_JWT_SECRT"), "{line}");
        assert!(line.contains("did you mean SIGNALBOX_JWT_SECRET"), "{line}");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
