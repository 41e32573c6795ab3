//! Per-topic access control: which principal may read, write or administer which topics.
//!
//! The ACL file is TOML:
//!
//! ```toml
//! [[allow]]
//! principal = "alice"          # a certificate principal, or "*" for any
//! topics = ["orders", "logs.*"] # exact names, "*", or prefixes ending in "*"
//! permissions = ["write", "read"]
//!
//! [[allow]]
//! principal = "qwire-broker"   # a cluster's brokers (their certificate's principal)
//! topics = ["*"]
//! permissions = ["cluster"]    # replicate: ReplicaFetch, OffsetForLeaderEpoch
//! ```
//!
//! Without an ACL file every authenticated principal may do everything. With one, what
//! is not allowed is denied: an empty file denies everything.

use std::path::Path;

use serde::Deserialize;

/// A permission on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Fetch and describe.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Admin,
    /// Replicate the topic's partitions (`ReplicaFetch`, `OffsetForLeaderEpoch`): what a
    /// broker's principal needs in a cluster.
    Cluster,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
            Permission::Cluster => "cluster",
        })
    }
}

/// One rule of the ACL file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Principal the rule applies to, or `*`.
    pub principal: String,
    /// Topic patterns.
    pub topics: Vec<String>,
    /// Granted permissions.
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    allow: Vec<AclRule>,
}

/// The access-control list in force.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Option<Vec<AclRule>>,
}

impl Acl {
    /// Everyone authenticated may do everything.
    pub fn allow_all() -> Acl {
        Acl { rules: None }
    }

    /// An ACL from rules (anything not allowed is denied).
    pub fn from_rules(rules: Vec<AclRule>) -> Acl {
        Acl { rules: Some(rules) }
    }

    /// Parses an ACL file's text.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let file: AclFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for r in &file.allow {
            if r.principal.is_empty() {
                return Err("an [[allow]] rule has an empty principal".into());
            }
        }
        Ok(Acl::from_rules(file.allow))
    }

    /// Loads an ACL file.
    pub fn load(path: &Path) -> Result<Acl, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Acl::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// True for an ACL file with no rule: it denies everything.
    pub fn denies_everything(&self) -> bool {
        self.rules.as_ref().is_some_and(|r| r.is_empty())
    }

    /// Whether `principal` holds `perm` on `topic`.
    pub fn allows(&self, principal: &str, topic: &str, perm: Permission) -> bool {
        let Some(rules) = &self.rules else { return true };
        rules.iter().any(|r| {
            (r.principal == "*" || r.principal == principal)
                && r.permissions.contains(&perm)
                && r.topics.iter().any(|p| topic_matches(p, topic))
        })
    }

    /// Whether `principal` may write at least one topic: what `InitProducerId` requires
    /// (like Kafka's `IdempotentWrite`). True without an ACL file.
    pub fn may_write_some_topic(&self, principal: &str) -> bool {
        let Some(rules) = &self.rules else { return true };
        rules.iter().any(|r| {
            (r.principal == "*" || r.principal == principal)
                && r.permissions.contains(&Permission::Write)
                && !r.topics.is_empty()
        })
    }

    /// Whether `principal` holds any permission on `topic` (for listing).
    pub fn sees(&self, principal: &str, topic: &str) -> bool {
        [Permission::Read, Permission::Write, Permission::Admin].into_iter().any(|p| self.allows(principal, topic, p))
    }
}

fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_grant_only_what_they_say() {
        let acl = Acl::parse(
            r#"
            [[allow]]
            principal = "alice"
            topics = ["orders", "logs.*"]
            permissions = ["write", "read"]
            [[allow]]
            principal = "*"
            topics = ["public"]
            permissions = ["read"]
            [[allow]]
            principal = "ops"
            topics = ["*"]
            permissions = ["admin"]
            "#,
        )
        .unwrap();
        assert!(acl.allows("alice", "orders", Permission::Write));
        assert!(acl.allows("alice", "logs.app", Permission::Read));
        assert!(!acl.allows("alice", "orders2", Permission::Write));
        assert!(!acl.allows("alice", "orders", Permission::Admin));
        assert!(acl.allows("bob", "public", Permission::Read));
        assert!(!acl.allows("bob", "public", Permission::Write));
        assert!(acl.allows("ops", "anything", Permission::Admin));
        assert!(!acl.sees("bob", "orders"));
        assert!(acl.may_write_some_topic("alice"));
        assert!(!acl.may_write_some_topic("bob"));
        assert!(!acl.may_write_some_topic("ops"));
        assert!(Acl::allow_all().may_write_some_topic("anyone"));
        assert!(Acl::allow_all().allows("x", "y", Permission::Admin));
        assert!(!acl.allows("ops", "anything", Permission::Cluster), "cluster is granted only by name");
        let brokers =
            Acl::parse("[[allow]]\nprincipal = \"qwire-broker\"\ntopics = [\"*\"]\npermissions = [\"cluster\"]")
                .unwrap();
        assert!(brokers.allows("qwire-broker", "orders", Permission::Cluster));
        assert!(!brokers.allows("qwire-broker", "orders", Permission::Write));
    }

    #[test]
    fn bad_files_are_reported() {
        assert!(Acl::parse("[[allow]]\nprincipal = \"a\"\ntopics = [\"t\"]\npermissions = [\"fly\"]").is_err());
        assert!(Acl::parse("[[allow]]\nprincipal = \"a\"\ntopics = [\"t\"]\npermissions = []\nextra = 1").is_err());
    }
}
