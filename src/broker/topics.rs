//! The topic registry: topics, their partitions, and their place in the data directory.
//!
//! ```text
//! DATA_DIR/topics/NAME/topic.json     {"partitions": N}   written last, atomically
//! DATA_DIR/topics/NAME/P/             one partition log per index
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::disk::{write_atomic, Syncer};
use super::log::RecoveryReport;
use super::metrics::BrokerMetrics;
use super::partition::{Partition, PartitionConfig, ProducerStateReport};
use crate::protocol::{validate_topic_name, ErrorCode};

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Topic name.
    pub name: Arc<str>,
    /// Partitions by index.
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

/// Why a topic operation failed, with the wire code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    /// Wire code.
    pub code: ErrorCode,
    /// Detail.
    pub message: String,
}

fn terr(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError { code, message: message.into() }
}

/// Result of recovering one partition at startup.
#[derive(Debug)]
pub struct Recovered {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// What the log's recovery found.
    pub report: RecoveryReport,
    /// How producer state was rebuilt.
    pub producers: ProducerStateReport,
}

/// All topics of a broker.
#[derive(Debug)]
pub struct TopicRegistry {
    root: PathBuf,
    config: PartitionConfig,
    max_partitions: u32,
    /// Most topics; creating one more is refused `TOPIC_LIMIT_REACHED`.
    max_topics: usize,
    metrics: Arc<BrokerMetrics>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    create_lock: std::sync::Mutex<()>,
}

impl TopicRegistry {
    /// Opens every topic under `data_dir/topics`, recovering each partition.
    pub fn open(
        data_dir: &Path,
        config: PartitionConfig,
        max_partitions: u32,
        metrics: Arc<BrokerMetrics>,
    ) -> Result<(TopicRegistry, Vec<Recovered>), String> {
        let root = data_dir.join("topics");
        fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let reg = TopicRegistry {
            root: root.clone(),
            config,
            max_partitions,
            max_topics: usize::MAX,
            metrics,
            topics: RwLock::new(BTreeMap::new()),
            create_lock: std::sync::Mutex::new(()),
        };
        let mut reports = Vec::new();
        let entries = fs::read_dir(&root).map_err(|e| format!("reading {}: {e}", root.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta_path = entry.path().join("topic.json");
            if validate_topic_name(&name).is_err() || !meta_path.exists() {
                tracing::warn!(path = %entry.path().display(), "ignoring directory that is not a complete topic");
                continue;
            }
            let meta: TopicMeta = fs::read(&meta_path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("{}: {e}", meta_path.display()))?;
            let (topic, recovered) = reg.open_topic(&name, meta.partitions)?;
            reports.extend(recovered);
            reg.write_topics().insert(name, topic);
        }
        Ok((reg, reports))
    }

    /// Sets the most topics the registry creates (topics found at start-up are all
    /// opened, even beyond it). Default: no limit.
    pub fn with_max_topics(mut self, max_topics: usize) -> TopicRegistry {
        self.max_topics = max_topics;
        self
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.read_topics().len()
    }

    /// True when there is no topic.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn open_topic(&self, name: &str, partitions: u32) -> Result<(Arc<Topic>, Vec<Recovered>), String> {
        let name: Arc<str> = Arc::from(name);
        let mut parts = Vec::with_capacity(partitions as usize);
        let mut reports = Vec::new();
        for i in 0..partitions {
            let dir = self.root.join(&*name).join(i.to_string());
            let (p, report) = Partition::open(&dir, name.clone(), i, self.config.clone(), self.metrics.clone())
                .map_err(|e| format!("opening {name}-{i}: {e}"))?;
            let p = Arc::new(p);
            p.spawn_flusher();
            parts.push(p);
            reports.push(Recovered {
                topic: name.to_string(),
                partition: i,
                report: report.log,
                producers: report.producers,
            });
        }
        Ok((Arc::new(Topic { name, partitions: parts }), reports))
    }

    /// The topic, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_topics().get(name).cloned()
    }

    /// All topics in name order.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.read_topics().values().cloned().collect()
    }

    /// Creates a topic; fails if it exists, the arguments are invalid or the topic limit
    /// is reached. Blocking (directories, files, fsyncs): call it off the async runtime.
    pub fn create(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name).map_err(|m| terr(ErrorCode::InvalidTopicName, m))?;
        if partitions == 0 || partitions > self.max_partitions {
            return Err(terr(
                ErrorCode::InvalidPartitions,
                format!("partition count must be between 1 and {}, got {partitions}", self.max_partitions),
            ));
        }
        let _guard = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.get(name).is_some() {
            return Err(terr(ErrorCode::TopicAlreadyExists, format!("topic '{name}' already exists")));
        }
        if self.len() >= self.max_topics {
            return Err(terr(
                ErrorCode::TopicLimitReached,
                format!("the broker holds {} topics, its limit (max_topics); '{name}' was not created", self.len()),
            ));
        }
        let dir = self.root.join(name);
        let storage = |e: String| terr(ErrorCode::StorageError, e);
        fs::create_dir_all(&dir).map_err(|e| storage(format!("creating {}: {e}", dir.display())))?;
        let (topic, _) = self.open_topic(name, partitions).map_err(storage)?;
        // The metadata file is written last and atomically: a crash before it leaves a
        // directory that the next start ignores.
        let meta = serde_json::to_vec(&TopicMeta { partitions }).expect("serialisable");
        write_atomic(&dir.join("topic.json"), &meta, 0o644, &Syncer::os())
            .map_err(|e| storage(format!("writing topic.json: {e}")))?;
        self.write_topics().insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// The directory of a partition's log.
    pub fn partition_dir(&self, name: &str, index: u32) -> PathBuf {
        self.root.join(name).join(index.to_string())
    }

    /// The topic with at least `partitions` partitions: created when missing, grown when it
    /// has fewer (a cluster's metadata decides the count; a topic never shrinks). Blocking.
    pub fn ensure(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            if t.partitions.len() as u32 >= partitions {
                return Ok(t);
            }
        } else {
            match self.create(name, partitions) {
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                other => return other,
            }
        }
        let _guard = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.get(name).ok_or_else(|| terr(ErrorCode::Unknown, "topic vanished"))?;
        let have = current.partitions.len() as u32;
        if have >= partitions {
            return Ok(current);
        }
        if partitions > self.max_partitions {
            return Err(terr(
                ErrorCode::InvalidPartitions,
                format!("partition count must be at most {}, got {partitions}", self.max_partitions),
            ));
        }
        let storage = |e: String| terr(ErrorCode::StorageError, e);
        let mut parts = current.partitions.clone();
        for i in have..partitions {
            let dir = self.partition_dir(name, i);
            let (p, _) = Partition::open(&dir, current.name.clone(), i, self.config.clone(), self.metrics.clone())
                .map_err(|e| storage(format!("opening {name}-{i}: {e}")))?;
            let p = Arc::new(p);
            p.spawn_flusher();
            parts.push(p);
        }
        let meta = serde_json::to_vec(&TopicMeta { partitions }).expect("serialisable");
        write_atomic(&self.root.join(name).join("topic.json"), &meta, 0o644, &Syncer::os())
            .map_err(|e| storage(format!("writing topic.json: {e}")))?;
        let topic = Arc::new(Topic { name: current.name.clone(), partitions: parts });
        self.write_topics().insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, from = have, to = partitions, "partitions added");
        Ok(topic)
    }

    /// The topic, created with `default_partitions` when missing (auto-create).
    /// Blocking when it creates: call it off the async runtime.
    pub fn get_or_create(&self, name: &str, default_partitions: u32) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        match self.create(name, default_partitions) {
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                self.get(name).ok_or_else(|| terr(ErrorCode::Unknown, "topic vanished"))
            }
            other => other,
        }
    }

    /// fsyncs every partition and writes its producer-state snapshot (shutdown).
    /// Blocking: call it off the async runtime.
    pub fn flush_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for t in self.list() {
            for p in &t.partitions {
                if let Err(e) = p.flush_blocking() {
                    errors.push(format!("{}-{}: {e}", t.name, p.index()));
                }
            }
        }
        errors
    }

    /// Runs retention on every partition (each on its owner, off the runtime); returns
    /// segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for t in self.list() {
            for p in &t.partitions {
                match p.apply_retention(now_ms).await {
                    Ok(n) => deleted += n,
                    Err(e) => tracing::warn!(topic = %t.name, partition = p.index(), error = %e, "retention failed"),
                }
            }
        }
        deleted
    }
}
