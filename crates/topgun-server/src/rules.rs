//! Per-map read and write rules, by user or role.
//!
//! Rules come from a TOML file (see [`AccessRules`]). They decide who may
//! read a map (`SYNC_INIT`, `MERKLE_REQ_BUCKET`, `QUERY_SUB`; refused with
//! `ERROR 403`) and who may write it (each op; refused with
//! `OP_REJECTED 403`).

use crate::auth::Principal;
use crate::error::ServerError;
use serde::Deserialize;
use std::path::Path;

/// Who may read and write which map.
///
/// The file format is TOML, one `[[rule]]` table per rule:
///
/// ```toml
/// [[rule]]
/// map = "public_*"          # a map name; `*` matches any run of characters
/// read = ["*"]              # "*" = every authenticated user
/// write = ["role:admin", "user:alice"]
///
/// [[rule]]
/// map = "*"
/// read = ["role:staff"]
/// ```
///
/// The **first** rule whose `map` pattern matches a map decides; a missing
/// `read` or `write` list grants nothing. A map that no rule matches may be
/// neither read nor written (deny by default) — end with a `map = "*"` rule
/// to say otherwise. [`AccessRules::allow_all`] (no file) lets every
/// authenticated user do everything. With auth disabled the rules are
/// ignored.
///
/// ```
/// use topgun_server::{AccessRules, Principal};
/// let rules = AccessRules::from_toml(r#"
///     [[rule]]
///     map = "public_*"
///     read = ["*"]
///     write = ["role:admin", "user:alice"]
/// "#)?;
/// let bob = Principal::new("bob", vec![]);
/// assert!(rules.can_read(&bob, "public_news"));
/// assert!(!rules.can_write(&bob, "public_news"));
/// assert!(rules.can_write(&Principal::new("alice", vec![]), "public_news"));
/// assert!(!rules.can_read(&bob, "private"));
/// # Ok::<(), topgun_server::ServerError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// `None`: allow everything.
    rules: Option<Vec<Rule>>,
}

#[derive(Debug, Clone)]
struct Rule {
    map: String,
    read: Vec<Grantee>,
    write: Vec<Grantee>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grantee {
    Anyone,
    User(String),
    Role(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    map: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

impl AccessRules {
    /// No rules: every authenticated user may read and write every map.
    pub fn allow_all() -> Self {
        Self { rules: None }
    }

    /// Parses rules from TOML text (format above). An empty text gives an
    /// empty rule list, which denies everything.
    ///
    /// # Errors
    /// [`ServerError::RulesSyntax`] for invalid TOML or unknown fields,
    /// [`ServerError::RulesGrantee`] for a grantee that is none of `"*"`,
    /// `"user:<id>"`, `"role:<name>"`.
    pub fn from_toml(text: &str) -> Result<Self, ServerError> {
        let file: RulesFile =
            toml::from_str(text).map_err(|source| ServerError::RulesSyntax { source })?;
        let rules = file
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let parse = |list: Vec<String>| -> Result<Vec<Grantee>, ServerError> {
                    list.into_iter()
                        .map(|g| {
                            Grantee::parse(&g).ok_or(ServerError::RulesGrantee {
                                rule: i + 1,
                                grantee: g,
                            })
                        })
                        .collect()
                };
                Ok(Rule {
                    map: spec.map,
                    read: parse(spec.read)?,
                    write: parse(spec.write)?,
                })
            })
            .collect::<Result<Vec<_>, ServerError>>()?;
        Ok(Self { rules: Some(rules) })
    }

    /// Reads and parses a rules file; see [`AccessRules::from_toml`].
    ///
    /// # Errors
    /// [`ServerError::RulesFile`] if the file cannot be read, else as
    /// [`AccessRules::from_toml`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::RulesFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Whether `who` may read `map`.
    pub fn can_read(&self, who: &Principal, map: &str) -> bool {
        self.decide(map, |rule| &rule.read, who)
    }

    /// Whether `who` may write `map`.
    pub fn can_write(&self, who: &Principal, map: &str) -> bool {
        self.decide(map, |rule| &rule.write, who)
    }

    fn decide(&self, map: &str, list: impl Fn(&Rule) -> &Vec<Grantee>, who: &Principal) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        rules
            .iter()
            .find(|rule| glob_match(&rule.map, map))
            .is_some_and(|rule| list(rule).iter().any(|g| g.admits(who)))
    }
}

impl Grantee {
    fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Grantee::Anyone);
        }
        match s.split_once(':') {
            Some(("user", id)) if !id.is_empty() => Some(Grantee::User(id.to_owned())),
            Some(("role", role)) if !role.is_empty() => Some(Grantee::Role(role.to_owned())),
            _ => None,
        }
    }

    fn admits(&self, who: &Principal) -> bool {
        match self {
            Grantee::Anyone => true,
            Grantee::User(id) => who.user_id == *id,
            Grantee::Role(role) => who.roles.iter().any(|r| r == role),
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (the empty one included) and every other character itself.
/// Linear backtracking on the last `*`, so no pattern is exponential.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("public_*", "public_"));
        assert!(glob_match("public_*", "public_news"));
        assert!(!glob_match("public_*", "private"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn first_matching_rule_decides_and_unmatched_is_denied() {
        let rules = AccessRules::from_toml(
            r#"
            [[rule]]
            map = "admin_*"
            read = ["role:admin"]
            write = ["role:admin"]
            [[rule]]
            map = "*"
            read = ["*"]
            write = ["user:carol"]
            "#,
        )
        .unwrap();
        let admin = Principal::new("dave", vec!["admin".into()]);
        let carol = Principal::new("carol", vec![]);
        assert!(rules.can_write(&admin, "admin_x"));
        assert!(!rules.can_read(&carol, "admin_x"));
        assert!(rules.can_read(&carol, "todos"));
        assert!(rules.can_write(&carol, "todos"));
        assert!(!rules.can_write(&admin, "todos"));
        let none = AccessRules::from_toml("").unwrap();
        assert!(!none.can_read(&carol, "todos"));
        assert!(AccessRules::allow_all().can_write(&carol, "todos"));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(
            AccessRules::from_toml("[[rule]]\nmap = \"x\"\nread = [\"bob\"]"),
            Err(ServerError::RulesGrantee { rule: 1, .. })
        ));
        assert!(matches!(
            AccessRules::from_toml("[[rule]]\nmapp = \"x\""),
            Err(ServerError::RulesSyntax { .. })
        ));
    }
}
