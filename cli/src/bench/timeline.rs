//! Throughput and latency over time: a task samples the harness's live [`Stats`] at a
//! fixed interval during the measured phase (for `qwire bench --report`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{BenchConfig, LatencyMs, Stats};

/// One interval of the measured phase.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Seconds since the measured phase began, at the end of the interval.
    pub t: f64,
    /// Length of the interval in seconds (the last one may be shorter).
    pub seconds: f64,
    /// Records acknowledged in the interval.
    pub records: u64,
    /// Acknowledged records per second in the interval.
    pub records_per_sec: f64,
    /// Acknowledged value bytes per second in the interval, in MB (10^6).
    pub mb_per_sec: f64,
    /// Latency of the records acknowledged in the interval (`None` when there were none).
    pub latency_ms: Option<LatencyMs>,
}

/// The samples of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    /// Sampling interval in seconds.
    pub interval_secs: f64,
    /// One point per interval, in time order.
    pub points: Vec<Point>,
}

/// The sampling interval for a run: 0.5 s, or longer for long timed runs so a report
/// keeps at most about 600 points.
pub fn interval_for(cfg: &BenchConfig) -> Duration {
    let secs = cfg.duration_secs.map_or(0.5, |d| (d / 600.0).clamp(0.5, 10.0));
    Duration::from_secs_f64(secs)
}

/// A running sampler.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Timeline>,
}

impl Sampler {
    /// Starts sampling `stats` every `every` once its measured phase begins.
    pub fn spawn(stats: Arc<Stats>, record_size: usize, every: Duration) -> Sampler {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut timeline = Timeline { interval_secs: every.as_secs_f64(), points: Vec::new() };
            // Warm-up: wait for the measured phase (records acknowledged before it are not
            // recorded in the histograms).
            while !stats.measuring() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = &mut stopped => return timeline,
                }
            }
            let start = Instant::now();
            let mut last = start;
            let mut tick = tokio::time::interval_at((start + every).into(), every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let done = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                let now = Instant::now();
                let h = stats.take_interval();
                let seconds = now.duration_since(last).as_secs_f64().max(1e-9);
                last = now;
                let records = h.len();
                // A final sliver (stopped just after a tick) with nothing in it adds no point.
                if !(done && records == 0 && seconds < every.as_secs_f64() / 2.0) {
                    let rps = records as f64 / seconds;
                    timeline.points.push(Point {
                        t: now.duration_since(start).as_secs_f64(),
                        seconds,
                        records,
                        records_per_sec: rps,
                        mb_per_sec: rps * record_size as f64 / 1e6,
                        latency_ms: (records > 0).then(|| LatencyMs::of(&h)),
                    });
                }
                if done {
                    return timeline;
                }
            }
        });
        Sampler { stop, task }
    }

    /// Takes the last (partial) interval and returns every point.
    pub async fn finish(self) -> Timeline {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
