//! Per-topic and per-subject access control: which principal may read, write or
//! administer which topics and which schema registry subjects.
//!
//! The ACL file is TOML:
//!
//! ```toml
//! [[allow]]
//! principal = "alice"          # a certificate principal, or "*" for any
//! topics = ["orders", "logs.*"] # exact names, "*", or prefixes ending in "*"
//! subjects = ["orders-value"]   # schema registry subjects, same patterns (optional)
//! permissions = ["write", "read"]
//!
//! [[allow]]
//! principal = "qwire-broker"   # a cluster's brokers (their certificate's principal)
//! topics = ["*"]
//! permissions = ["cluster"]    # replicate: ReplicaFetch, OffsetForLeaderEpoch
//! ```
//!
//! On a subject, *read* fetches schemas, versions and compatibility levels, looks schemas
//! up and checks compatibility; *write* registers schemas; *admin* changes compatibility
//! levels and deletes. The registry-wide compatibility level needs the permission on every
//! subject (`subjects = ["*"]`). A topic's schema policy is set with *admin* on the topic.
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
    #[serde(default)]
    pub topics: Vec<String>,
    /// Schema registry subject patterns.
    #[serde(default)]
    pub subjects: Vec<String>,
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

    /// Whether `principal` holds `perm` on schema registry subject `subject`. `"*"` as
    /// the subject stands for every subject (the registry-wide configuration): only a
    /// `"*"` pattern grants it.
    pub fn allows_subject(&self, principal: &str, subject: &str, perm: Permission) -> bool {
        let Some(rules) = &self.rules else { return true };
        rules.iter().any(|r| {
            (r.principal == "*" || r.principal == principal)
                && r.permissions.contains(&perm)
                && r.subjects.iter().any(|p| topic_matches(p, subject))
        })
    }

    /// Whether this is the allow-everything ACL (no ACL file).
    pub fn is_allow_all(&self) -> bool {
        self.rules.is_none()
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
    fn subjects_are_protected_like_topics() {
        let acl = Acl::parse(
            r#"
            [[allow]]
            principal = "alice"
            topics = ["orders"]
            subjects = ["orders-value", "shared.*"]
            permissions = ["read", "write"]
            [[allow]]
            principal = "ops"
            subjects = ["*"]
            permissions = ["admin", "read"]
            "#,
        )
        .unwrap();
        assert!(acl.allows_subject("alice", "orders-value", Permission::Write));
        assert!(acl.allows_subject("alice", "shared.x", Permission::Read));
        assert!(!acl.allows_subject("alice", "orders-value", Permission::Admin));
        assert!(!acl.allows_subject("alice", "payments-value", Permission::Read));
        // A topic pattern grants nothing on subjects, and the other way round.
        assert!(!acl.allows_subject("alice", "orders", Permission::Read));
        assert!(!acl.allows("ops", "orders", Permission::Admin));
        // Only a "*" subject pattern grants the registry-wide configuration.
        assert!(acl.allows_subject("ops", "*", Permission::Admin));
        assert!(!acl.allows_subject("alice", "*", Permission::Read));
        assert!(Acl::allow_all().allows_subject("x", "*", Permission::Admin));
    }

    #[test]
    fn bad_files_are_reported() {
        assert!(Acl::parse("[[allow]]\nprincipal = \"a\"\ntopics = [\"t\"]\npermissions = [\"fly\"]").is_err());
        assert!(Acl::parse("[[allow]]\nprincipal = \"a\"\ntopics = [\"t\"]\npermissions = []\nextra = 1").is_err());
    }
}
