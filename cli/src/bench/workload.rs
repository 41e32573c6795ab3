//! Workload generation: payloads, keys, pacing, warm-up, and the per-record latency
//! callback.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{BenchConfig, Stats};
use qwire::producer::{Producer, ProducerRecord};

/// What the record values contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// Random bytes: incompressible.
    Random,
    /// English-like words: compressible text.
    Text,
    /// JSON events with repeated field names: compressible.
    Json,
    /// One JSON object per value, exactly the record size, valid against
    /// [`BENCH_JSON_SCHEMA`] (for `--schema-validation`).
    JsonObject,
}

/// The JSON Schema `--schema-validation` registers: the `json-object` payload's shape,
/// with the checks real event schemas have (types, a pattern, an enum, bounds, required
/// fields, no other fields).
pub(crate) const BENCH_JSON_SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "properties": {
    "id": {"type": "integer", "minimum": 0},
    "user": {"type": "string", "pattern": "^user-[0-9]+$"},
    "event": {"enum": ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "order", "payment",
      "shipped", "customer", "account", "balance", "event", "stream", "partition", "broker", "record",
      "latency", "throughput", "batch"]},
    "amount": {"type": "number", "minimum": 0, "maximum": 1000},
    "note": {"type": "string", "maxLength": 65536}
  },
  "required": ["id", "user", "event", "amount", "note"],
  "additionalProperties": false
}"#;

impl std::str::FromStr for PayloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(PayloadKind::Random),
            "text" => Ok(PayloadKind::Text),
            "json" => Ok(PayloadKind::Json),
            "json-object" => Ok(PayloadKind::JsonObject),
            _ => Err(format!("unknown payload '{s}' (random, text, json, json-object)")),
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "order",
    "payment",
    "shipped",
    "customer",
    "account",
    "balance",
    "event",
    "stream",
    "partition",
    "broker",
    "record",
    "latency",
    "throughput",
    "batch",
];

/// Distinct values used round-robin by the generators.
const DISTINCT_VALUES: usize = 256;
/// Keys are pre-built up to this many; beyond, they are formatted per record.
const PREBUILT_KEYS: u64 = 65_536;

pub(crate) struct Plan {
    topic: Arc<str>,
    values: Vec<Bytes>,
    keys: Vec<Bytes>,
    key_space: u64,
}

impl Plan {
    pub(crate) fn new(cfg: &BenchConfig) -> Plan {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e37_79b9);
        let values =
            (0..DISTINCT_VALUES).map(|i| Bytes::from(value(cfg.payload, cfg.record_size, i, &mut rng))).collect();
        let keys = (0..cfg.key_space.min(PREBUILT_KEYS)).map(|k| Bytes::from(format!("key-{k}"))).collect();
        Plan { topic: Arc::from(cfg.topic.as_str()), values, keys, key_space: cfg.key_space }
    }

    fn record(&self, n: u64) -> ProducerRecord {
        let mut r = ProducerRecord::new(self.topic.clone(), self.values[n as usize % self.values.len()].clone());
        if self.key_space > 0 {
            let k = n % self.key_space;
            r.key =
                Some(if k < PREBUILT_KEYS { self.keys[k as usize].clone() } else { Bytes::from(format!("key-{k}")) });
        }
        r
    }
}

fn value(kind: PayloadKind, size: usize, i: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut v = match kind {
        PayloadKind::Random => (0..size).map(|_| rng.gen()).collect(),
        PayloadKind::Text => {
            let mut s = String::with_capacity(size + 16);
            while s.len() < size {
                s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
                s.push(' ');
            }
            s.into_bytes()
        }
        PayloadKind::Json => {
            let mut s = String::with_capacity(size + 128);
            let mut n = 0;
            s.push('[');
            while s.len() < size {
                if n > 0 {
                    s.push(',');
                }
                s.push_str(&format!(
                    "{{\"id\":{},\"user\":\"user-{}\",\"event\":\"{}\",\"amount\":{}.{:02}}}",
                    i * 1000 + n,
                    rng.gen_range(0..500),
                    WORDS[rng.gen_range(0..WORDS.len())],
                    rng.gen_range(0..1000),
                    rng.gen_range(0..100)
                ));
                n += 1;
            }
            s.push(']');
            s.into_bytes()
        }
        PayloadKind::JsonObject => {
            let head = format!(
                "{{\"id\":{},\"user\":\"user-{}\",\"event\":\"{}\",\"amount\":{}.{:02},\"note\":\"",
                i,
                rng.gen_range(0..500),
                WORDS[rng.gen_range(0..WORDS.len())],
                rng.gen_range(0..1000),
                rng.gen_range(0..100)
            );
            // The note pads the object to exactly `size` bytes (when `size` leaves room).
            let pad = size.saturating_sub(head.len() + 2);
            let mut s = head;
            s.extend((0..pad).map(|k| (b'a' + (k % 26) as u8) as char));
            s.push_str("\"}");
            return s.into_bytes();
        }
    };
    v.truncate(size);
    v.resize(size, b' ');
    v
}

struct Phase {
    measure_start: Mutex<Option<Instant>>,
}

/// Drives every producer until the record count or duration is reached (after the
/// warm-up); returns when everything has been handed to the producers. The returned
/// instant is the start of the measured phase.
pub(crate) async fn drive(cfg: &BenchConfig, plan: &Plan, producers: &[Producer], stats: &Arc<Stats>) -> Instant {
    let plan = Arc::new(Plan {
        topic: plan.topic.clone(),
        values: plan.values.clone(),
        keys: plan.keys.clone(),
        key_space: plan.key_space,
    });
    let phase = Arc::new(Phase { measure_start: Mutex::new(None) });
    let k = producers.len() as u64;
    let mut tasks = Vec::new();
    for (i, p) in producers.iter().enumerate() {
        let share = cfg.records / k + u64::from((i as u64) < cfg.records % k);
        let rate = if cfg.rate == 0 { 0.0 } else { cfg.rate as f64 / k as f64 };
        let duration = cfg.duration_secs.map(Duration::from_secs_f64);
        let (p, plan, stats, phase) = (p.clone(), plan.clone(), stats.clone(), phase.clone());
        tasks.push(tokio::spawn(async move { generate(p, plan, stats, phase, share, rate, duration, i as u64).await }));
    }
    let warmup = Duration::from_secs_f64(cfg.warmup_secs.max(0.0));
    if !warmup.is_zero() {
        tokio::time::sleep(warmup).await;
    }
    let start = Instant::now();
    *phase.measure_start.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
    stats.take_window();
    stats.measuring.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    start
}

#[allow(clippy::too_many_arguments)]
async fn generate(
    p: Producer,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    phase: Arc<Phase>,
    share: u64,
    rate: f64,
    duration: Option<Duration>,
    seed: u64,
) {
    let t0 = Instant::now();
    let mut n: u64 = seed * 7919;
    let mut total: u64 = 0;
    let mut measured: u64 = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        let measuring = stats.measuring.load(Relaxed);
        if measuring {
            if deadline.is_none() {
                if let Some(d) = duration {
                    let start =
                        phase.measure_start.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(Instant::now);
                    deadline = Some(start + d);
                }
            }
            match (duration, deadline) {
                (Some(_), Some(d)) if Instant::now() >= d => break,
                (None, _) if measured >= share => break,
                _ => {}
            }
        }
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(total as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        } else if total % 256 == 255 {
            // Let the driver and connection tasks run between bursts.
            tokio::task::yield_now().await;
        }
        let record = plan.record(n);
        n += 1;
        total += 1;
        if measuring {
            measured += 1;
            stats.sent.fetch_add(1, Relaxed);
        }
        let st = stats.clone();
        let sent_at = quanta::Instant::now();
        let res = p
            .send_with_callback(record, move |r| match r {
                Ok(_) if measuring => {
                    st.acked.fetch_add(1, Relaxed);
                    st.record((sent_at.elapsed().as_micros() as u64).max(1));
                }
                Ok(_) => {}
                Err(e) => fail(&st, e.to_string()),
            })
            .await;
        if let Err(e) = res {
            fail(&stats, e.to_string());
        }
    }
}

fn fail(stats: &Stats, msg: String) {
    stats.failed.fetch_add(1, Relaxed);
    let mut first = stats.first_error.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_none() {
        *first = Some(msg);
    }
}
