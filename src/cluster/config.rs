//! Cluster settings of a broker, each default with its reason, and the `--metadata` URL.

use std::str::FromStr;
use std::time::Duration;

/// Where the cluster's metadata lives: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataUrl {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster (several clusters may share an etcd). `/qwire` when the
    /// URL has no path.
    pub prefix: String,
}

impl FromStr for MetadataUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<MetadataUrl, String> {
        let rest = s.strip_prefix("etcd://").ok_or_else(|| {
            format!("metadata URL '{s}' must start with etcd:// (etcd://HOST:PORT[,HOST:PORT]/PREFIX)")
        })?;
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let (host, port) =
                h.rsplit_once(':').ok_or_else(|| format!("metadata URL '{s}': '{h}' must be HOST:PORT"))?;
            if host.is_empty() {
                return Err(format!("metadata URL '{s}': empty host in '{h}'"));
            }
            port.parse::<u16>().map_err(|_| format!("metadata URL '{s}': bad port in '{h}'"))?;
            endpoints.push(h.to_owned());
        }
        let trimmed = path.trim_matches('/');
        if trimmed.chars().any(|c| c.is_whitespace()) {
            return Err(format!("metadata URL '{s}': the prefix may not contain spaces"));
        }
        let prefix = if trimmed.is_empty() { "/qwire".to_owned() } else { format!("/{trimmed}") };
        Ok(MetadataUrl { endpoints, prefix })
    }
}

impl std::fmt::Display for MetadataUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// Default session lease TTL: 6 s. Failover takes about one TTL (the dead leader's lease
/// must expire); shorter TTLs fail over faster but turn a longer GC-free pause or a slow
/// etcd into a lost session. Kafka's KRaft default broker session timeout is 9 s.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(6);
/// Default time a follower may stay behind before it leaves the in-sync set: 10 s
/// (Kafka's `replica.lag.time.max.ms` is 30 s; acks=all waits for in-sync replicas, so a
/// shorter bound keeps a stuck follower from stalling producers for long).
pub const DEFAULT_REPLICA_LAG_MAX: Duration = Duration::from_secs(10);
/// Default long-poll wait of a follower's fetch when the leader has nothing new: 500 ms
/// (Kafka's `replica.fetch.wait.max.ms`). New data or a high-watermark change answers at
/// once, so this bounds idle traffic, not latency.
pub const DEFAULT_REPLICA_FETCH_WAIT: Duration = Duration::from_millis(500);

/// A broker's cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This broker's id, unique in the cluster.
    pub broker_id: u32,
    /// Where the metadata lives.
    pub metadata: MetadataUrl,
    /// `host:port` clients and other brokers use to reach this broker; default the
    /// listen address.
    pub advertise: Option<String>,
    /// Session lease TTL (see [`DEFAULT_SESSION_TTL`]).
    pub session_ttl: Duration,
    /// See [`DEFAULT_REPLICA_LAG_MAX`].
    pub replica_lag_max: Duration,
    /// See [`DEFAULT_REPLICA_FETCH_WAIT`].
    pub replica_fetch_wait: Duration,
    /// Replication factor of topics created without one (plain `CreateTopic`,
    /// auto-creation). Default 1, as Kafka's `default.replication.factor`.
    pub default_replication_factor: u16,
    /// `min_insync_replicas` of topics created without one. Default 1.
    pub default_min_insync_replicas: u16,
    /// Elect a replica outside the in-sync set when no in-sync replica is alive. Off by
    /// default: acknowledged records are lost when it happens.
    pub unclean_leader_election: bool,
    /// The name other brokers' certificates are checked against when this broker
    /// connects to them (their certificate must carry it). Default `localhost`, as for
    /// `qwire certs` development certificates.
    pub peer_server_name: String,
}

impl ClusterConfig {
    /// Defaults for a broker id and metadata URL.
    pub fn new(broker_id: u32, metadata: MetadataUrl) -> ClusterConfig {
        ClusterConfig {
            broker_id,
            metadata,
            advertise: None,
            session_ttl: DEFAULT_SESSION_TTL,
            replica_lag_max: DEFAULT_REPLICA_LAG_MAX,
            replica_fetch_wait: DEFAULT_REPLICA_FETCH_WAIT,
            default_replication_factor: 1,
            default_min_insync_replicas: 1,
            unclean_leader_election: false,
            peer_server_name: "localhost".into(),
        }
    }

    /// Checks ranges; returns a message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_ttl < Duration::from_secs(2) {
            return Err(format!("session TTL must be at least 2 s (etcd's minimum lease), got {:?}", self.session_ttl));
        }
        if self.default_replication_factor == 0 || self.default_min_insync_replicas == 0 {
            return Err("default replication factor and min in-sync replicas must be at least 1".into());
        }
        if self.default_min_insync_replicas > self.default_replication_factor {
            return Err(format!(
                "default min in-sync replicas ({}) exceeds the default replication factor ({})",
                self.default_min_insync_replicas, self.default_replication_factor
            ));
        }
        if let Some(a) = &self.advertise {
            let (h, p) = a.rsplit_once(':').ok_or_else(|| format!("advertised address '{a}' must be HOST:PORT"))?;
            if h.is_empty() || p.parse::<u16>().is_err() {
                return Err(format!("advertised address '{a}' must be HOST:PORT"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_parse_or_say_what_is_wrong() {
        let u: MetadataUrl = "etcd://127.0.0.1:2379/prod/c1/".parse().unwrap();
        assert_eq!(u, MetadataUrl { endpoints: vec!["127.0.0.1:2379".into()], prefix: "/prod/c1".into() });
        assert_eq!(u.to_string(), "etcd://127.0.0.1:2379/prod/c1");
        let u: MetadataUrl = "etcd://a:1,b:2".parse().unwrap();
        assert_eq!((u.endpoints.len(), u.prefix.as_str()), (2, "/qwire"));
        assert_eq!("etcd://[::1]:2379/x".parse::<MetadataUrl>().unwrap().endpoints, vec!["[::1]:2379"]);
        for (bad, says) in [
            ("http://a:1/x", "etcd://"),
            ("etcd://a/x", "HOST:PORT"),
            ("etcd://a:99999/x", "bad port"),
            ("etcd://:1/x", "empty host"),
            ("etcd://a:1/x y", "spaces"),
        ] {
            let e = bad.parse::<MetadataUrl>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let url: MetadataUrl = "etcd://a:1/p".parse().unwrap();
        assert!(ClusterConfig::new(1, url.clone()).validate().is_ok());
        let mut c = ClusterConfig::new(1, url);
        c.session_ttl = Duration::from_secs(1);
        assert!(c.validate().unwrap_err().contains("TTL"));
        c.session_ttl = DEFAULT_SESSION_TTL;
        c.default_min_insync_replicas = 2;
        assert!(c.validate().unwrap_err().contains("exceeds"));
        c.default_min_insync_replicas = 1;
        c.advertise = Some("nohost".into());
        assert!(c.validate().unwrap_err().contains("HOST:PORT"));
    }
}
