//! The key layout under a cluster's prefix. CLUSTER.md lists the same keys.
//!
//! ```text
//! PREFIX/brokers/<id>                    BrokerRegistration (JSON), under the broker's lease
//! PREFIX/controller/<lease hex>          election candidates (etcd election); value = broker id
//! PREFIX/topics/<topic>                  TopicSpec (JSON)
//! PREFIX/partitions/<topic>/<index>      PartitionState (JSON)
//! PREFIX/producer-ids/next               next unallocated producer id (decimal)
//! PREFIX/kv/<namespace>/<key>            generic compare-and-swap namespace (schema registry)
//! ```
//!
//! Topic names cannot contain `/`, so every key parses back unambiguously.

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    /// `brokers/<id>`.
    Broker(u32),
    /// `controller/<candidate>`.
    ControllerCandidate,
    /// `topics/<topic>`.
    Topic(&'a str),
    /// `partitions/<topic>/<index>`.
    Partition(&'a str, u32),
    /// Anything else (producer ids, the kv namespace, unknown keys).
    Other,
}

/// Builds and parses keys under one cluster prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, normalised to start with `/` and not end with one
    /// (`qwire`, `/qwire/` and `/qwire` are the same prefix).
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") };
        Keys { prefix }
    }

    /// The normalised prefix (empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key of the cluster starts with this.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `brokers/` prefix.
    pub fn brokers(&self) -> String {
        format!("{}/brokers/", self.prefix)
    }

    /// A broker's registration key.
    pub fn broker(&self, id: u32) -> String {
        format!("{}/brokers/{id}", self.prefix)
    }

    /// The controller election's name.
    pub fn controller_election(&self) -> String {
        format!("{}/controller", self.prefix)
    }

    /// `topics/` prefix.
    pub fn topics(&self) -> String {
        format!("{}/topics/", self.prefix)
    }

    /// A topic's spec key.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}/topics/{topic}", self.prefix)
    }

    /// A topic's partitions prefix.
    pub fn partitions_of(&self, topic: &str) -> String {
        format!("{}/partitions/{topic}/", self.prefix)
    }

    /// A partition's state key.
    pub fn partition(&self, topic: &str, index: u32) -> String {
        format!("{}/partitions/{topic}/{index}", self.prefix)
    }

    /// The producer-id allocator's counter.
    pub fn producer_ids(&self) -> String {
        format!("{}/producer-ids/next", self.prefix)
    }

    /// A generic namespace's prefix.
    pub fn kv(&self, namespace: &str) -> String {
        format!("{}/kv/{namespace}/", self.prefix)
    }

    /// What `key` names; `None` when it is not under this prefix.
    pub fn parse<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        Some(match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("brokers"), Some(id), None, None) => id.parse().map_or(KeyKind::Other, KeyKind::Broker),
            (Some("controller"), Some(_), None, None) => KeyKind::ControllerCandidate,
            (Some("topics"), Some(t), None, None) if !t.is_empty() => KeyKind::Topic(t),
            (Some("partitions"), Some(t), Some(p), None) if !t.is_empty() => {
                p.parse().map_or(KeyKind::Other, |p| KeyKind::Partition(t, p))
            }
            _ => KeyKind::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_prefixes_normalise() {
        for p in ["qwire/c1", "/qwire/c1/", "/qwire/c1"] {
            assert_eq!(Keys::new(p).prefix(), "/qwire/c1");
        }
        let k = Keys::new("/q");
        assert_eq!(k.broker(3), "/q/brokers/3");
        assert_eq!(k.parse(&k.broker(3)), Some(KeyKind::Broker(3)));
        assert_eq!(k.parse(&k.topic("a.b-c")), Some(KeyKind::Topic("a.b-c")));
        assert_eq!(k.parse(&k.partition("t", 7)), Some(KeyKind::Partition("t", 7)));
        assert_eq!(k.parse("/q/controller/694d7e"), Some(KeyKind::ControllerCandidate));
        assert_eq!(k.parse(&k.producer_ids()), Some(KeyKind::Other));
        assert_eq!(k.parse("/q/brokers/x"), Some(KeyKind::Other));
        assert_eq!(k.parse("/q/partitions/t/x"), Some(KeyKind::Other));
        assert_eq!(k.parse("/other/brokers/1"), None);
        assert_eq!(k.parse("/qq/brokers/1"), None);
        let root = Keys::new("/");
        assert_eq!(root.broker(1), "/brokers/1");
        assert_eq!(root.parse("/brokers/1"), Some(KeyKind::Broker(1)));
    }
}
