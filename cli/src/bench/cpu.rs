//! CPU time per record over the measured phase, split into the producer side and the
//! embedded broker, so that a change's cost per record shows even when the machine's speed
//! drifts from run to run.
//!
//! What is measured, exactly (snapshots at the start of the measured phase and after the
//! last acknowledgement):
//! - **producer**: the thread that runs the harness (the producers' runtime with
//!   `--threads 1`, the `block_on` thread otherwise), read from its own CPU clock
//!   (`CLOCK_THREAD_CPUTIME_ID`), plus every thread named [`PRODUCER_THREAD`] (the worker
//!   and blocking threads of a multi-threaded producers' runtime), read from
//!   `/proc/self/task/<tid>/schedstat` (the same per-thread run time the thread CPU clock
//!   reports). It includes the benchmark's generator, its completion callbacks, the
//!   progress display and the timeline sampler (a few wake-ups per second).
//! - **process**: the whole process's CPU clock (`CLOCK_PROCESS_CPUTIME_ID`), which also
//!   counts threads that exited during the run.
//! - **broker** (embedded broker only): process − producer − the slow-link relay thread
//!   ([`SLOW_LINK_THREAD`], with `--link-mbps`). That is the broker's runtime thread and its
//!   blocking-pool threads (storage, fsync), and nothing else runs in the process then.
//!
//! A thread that starts during the phase counts from zero; one that ends during it loses
//! its share from the producer figure (no producer thread ends while records are sent).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Name of the producers' runtime threads (worker and blocking threads).
pub const PRODUCER_THREAD: &str = "qwire-producer";
/// Name of the slow-link relay's thread (`--link-mbps`).
pub const SLOW_LINK_THREAD: &str = "qwire-slow-link";

/// CPU clocks at one instant.
#[derive(Debug, Clone)]
pub(crate) struct CpuSnapshot {
    process_ns: u64,
    /// The calling thread: its id and its own CPU clock.
    own: (i32, u64),
    /// Every other thread of the process: name and run time (ns).
    threads: HashMap<i32, (String, u64)>,
}

/// CPU time of the measured phase (see the module docs for what each figure covers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CpuReport {
    /// Producer threads' CPU time per acknowledged record, ns.
    pub producer_ns_per_record: f64,
    /// Embedded broker's CPU time per acknowledged record, ns (`None` with `--broker`).
    pub broker_ns_per_record: Option<f64>,
    /// The whole process's CPU time per acknowledged record, ns.
    pub process_ns_per_record: f64,
    /// Producer CPU seconds per second of the phase (1.0 = one core busy).
    pub producer_cores: f64,
    /// Broker CPU seconds per second of the phase.
    pub broker_cores: Option<f64>,
    /// CPU milliseconds in the phase by thread name (the harness thread is `harness`).
    pub threads_ms: BTreeMap<String, f64>,
}

impl CpuSnapshot {
    /// Reads the clocks. Call both snapshots of a phase from the same thread.
    pub(crate) fn take() -> CpuSnapshot {
        let own_tid = rustix::thread::gettid().as_raw_nonzero().get();
        let own_ns = ns(rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime));
        let process_ns = ns(rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime));
        let mut threads = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
                if tid == own_tid {
                    continue;
                }
                let path = entry.path();
                let name = std::fs::read_to_string(path.join("comm")).map(|s| s.trim_end().to_string());
                if let (Ok(name), Some(t)) = (name, thread_ns(&path)) {
                    threads.insert(tid, (name, t));
                }
            }
        }
        CpuSnapshot { process_ns, own: (own_tid, own_ns), threads }
    }
}

fn ns(t: rustix::time::Timespec) -> u64 {
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// A thread's run time: `schedstat`'s first field (ns), else `stat`'s utime + stime.
fn thread_ns(task: &std::path::Path) -> Option<u64> {
    if let Some(t) = std::fs::read_to_string(task.join("schedstat")).ok().and_then(|s| parse_schedstat(&s)) {
        return Some(t);
    }
    let ticks = parse_stat_ticks(&std::fs::read_to_string(task.join("stat")).ok()?)?;
    Some(ticks.saturating_mul(1_000_000_000 / rustix::param::clock_ticks_per_second().max(1)))
}

/// `/proc/.../schedstat`: "run-ns wait-ns timeslices".
fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// `/proc/.../stat`: utime + stime (fields 14 and 15, counted after the parenthesised
/// name, which may itself contain spaces and parentheses).
fn parse_stat_ticks(s: &str) -> Option<u64> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time between two snapshots, per acknowledged record. `broker_embedded`: the
/// broker runs in this process (otherwise its figures are `None`).
pub(crate) fn between(
    start: &CpuSnapshot,
    end: &CpuSnapshot,
    records: u64,
    seconds: f64,
    broker_embedded: bool,
) -> CpuReport {
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    let own = if start.own.0 == end.own.0 { end.own.1.saturating_sub(start.own.1) } else { 0 };
    by_name.insert("harness".into(), own);
    for (tid, (name, t)) in &end.threads {
        let before = start.threads.get(tid).filter(|(n, _)| n == name).map_or(0, |(_, t0)| *t0);
        *by_name.entry(name.clone()).or_default() += t.saturating_sub(before);
    }
    let producer = own + by_name.get(PRODUCER_THREAD).copied().unwrap_or(0);
    let relay = by_name.get(SLOW_LINK_THREAD).copied().unwrap_or(0);
    let process = end.process_ns.saturating_sub(start.process_ns);
    let broker = broker_embedded.then(|| process.saturating_sub(producer + relay));
    let per = |ns: u64| if records == 0 { 0.0 } else { ns as f64 / records as f64 };
    let cores = |ns: u64| if seconds > 0.0 { ns as f64 / 1e9 / seconds } else { 0.0 };
    CpuReport {
        producer_ns_per_record: per(producer),
        broker_ns_per_record: broker.map(per),
        process_ns_per_record: per(process),
        producer_cores: cores(producer),
        broker_cores: broker.map(cores),
        threads_ms: by_name.into_iter().filter(|(_, ns)| *ns > 0).map(|(n, ns)| (n, ns as f64 / 1e6)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat_and_stat() {
        assert_eq!(parse_schedstat("120790 3857725 2\n"), Some(120_790));
        assert_eq!(parse_schedstat(""), None);
        let stat = "22755 (a (weird) name) R 22750 22750 18552 0 -1 4194304 116 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(10));
    }

    fn snap(process: u64, own: u64, threads: &[(i32, &str, u64)]) -> CpuSnapshot {
        CpuSnapshot {
            process_ns: process,
            own: (1, own),
            threads: threads.iter().map(|(t, n, ns)| (*t, (n.to_string(), *ns))).collect(),
        }
    }

    #[test]
    fn splits_producer_broker_and_relay() {
        let a = snap(1_000, 100, &[(2, PRODUCER_THREAD, 50), (3, "qwire-bench-broker", 400)]);
        let b = snap(
            11_000,
            4_100,
            &[(2, PRODUCER_THREAD, 1_050), (3, "qwire-bench-broker", 3_400), (4, SLOW_LINK_THREAD, 500)],
        );
        let r = between(&a, &b, 10, 1e-6, true);
        // producer: 4000 own + 1000 worker; relay 500; broker: 10000 - 5000 - 500.
        assert_eq!(r.producer_ns_per_record, 500.0);
        assert_eq!(r.broker_ns_per_record, Some(450.0));
        assert_eq!(r.process_ns_per_record, 1_000.0);
        assert!((r.producer_cores - 5.0).abs() < 1e-9);
        assert_eq!(r.threads_ms["qwire-bench-broker"], 0.003);
        let ext = between(&a, &b, 10, 1.0, false);
        assert_eq!(ext.broker_ns_per_record, None);
        assert_eq!(between(&a, &b, 0, 1.0, true).producer_ns_per_record, 0.0);
    }

    #[test]
    fn a_live_snapshot_sees_this_thread_spend_cpu() {
        let a = CpuSnapshot::take();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = CpuSnapshot::take();
        let r = between(&a, &b, 1, 1.0, true);
        assert!(r.producer_ns_per_record > 0.0, "{r:?}");
        assert!(r.process_ns_per_record >= r.producer_ns_per_record, "{r:?}");
    }
}
