//! `qwire bench`'s live output: a progress bar on stderr (elapsed/total seconds for
//! `--duration` runs, records/total for count runs, with the current rate) and
//! kafka-producer-perf-test style lines every 5 s on stdout. Each appears only when its
//! stream is a terminal, so piped or redirected output holds only the final lines.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::{BenchConfig, Stats};

const TICK: Duration = Duration::from_millis(100);
const LINE_EVERY: Duration = Duration::from_secs(5);
/// The current rate is measured over this much recent time.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What the run aims for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Goal {
    /// Run this many seconds after warm-up.
    Seconds(f64),
    /// Send this many records after warm-up.
    Records(u64),
}

impl Goal {
    pub(crate) fn of(cfg: &BenchConfig) -> Goal {
        cfg.duration_secs.map_or(Goal::Records(cfg.records), Goal::Seconds)
    }
}

/// Bar length, bar position and message for the current state.
pub(crate) fn describe(
    goal: Goal,
    warmup: Option<(f64, f64)>,
    elapsed: f64,
    acked: u64,
    rate: f64,
) -> (u64, u64, String) {
    if let Some((done, total)) = warmup {
        return (1, 0, format!("warming up {done:.1}/{total:.1} s"));
    }
    let rate = format!("{} records/s", thousands(rate.round() as u64));
    match goal {
        Goal::Seconds(total) => {
            let len = (total * 1000.0).round().max(1.0) as u64;
            let pos = ((elapsed * 1000.0).round() as u64).min(len);
            (len, pos, format!("{:.1}/{total:.1} s  {} records  {rate}", elapsed.min(total), thousands(acked)))
        }
        Goal::Records(total) => (
            total.max(1),
            acked.min(total),
            format!("{}/{} records  {rate}  {elapsed:.1} s", thousands(acked), thousands(total)),
        ),
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The running progress display.
pub(crate) struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts the display for a run of `cfg` whose live counters are `stats`.
    pub(crate) fn spawn(stats: Arc<Stats>, cfg: &BenchConfig) -> Progress {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(1), target);
        bar.set_style(ProgressStyle::with_template("{spinner} {wide_bar} {msg}").expect("valid template"));
        let lines = std::io::stdout().is_terminal();
        let (goal, warmup, size) = (Goal::of(cfg), cfg.warmup_secs.max(0.0), cfg.record_size);
        let task = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut measuring_since: Option<Instant> = None;
                let mut recent: VecDeque<(Instant, u64)> = VecDeque::new();
                let mut since_line = Duration::ZERO;
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    if !stats.measuring() {
                        let (len, pos, msg) =
                            describe(goal, Some((started.elapsed().as_secs_f64(), warmup)), 0.0, 0, 0.0);
                        bar.set_length(len);
                        bar.set_position(pos);
                        bar.set_message(msg);
                        continue;
                    }
                    let since = *measuring_since.get_or_insert(now);
                    let acked = stats.acked.load(Relaxed);
                    recent.push_back((now, acked));
                    while recent.len() > 2 && now.duration_since(recent[0].0) > RATE_WINDOW {
                        recent.pop_front();
                    }
                    let (t0, a0) = recent[0];
                    let dt = now.duration_since(t0).as_secs_f64();
                    let rate = if dt > 0.0 { (acked - a0) as f64 / dt } else { 0.0 };
                    let (len, pos, msg) = describe(goal, None, now.duration_since(since).as_secs_f64(), acked, rate);
                    bar.set_length(len);
                    bar.set_position(pos);
                    bar.set_message(msg);
                    since_line += TICK;
                    if lines && since_line >= LINE_EVERY {
                        since_line = Duration::ZERO;
                        let w = stats.take_window();
                        let rps = w.records as f64 / w.seconds.max(1e-9);
                        bar.suspend(|| {
                            println!(
                                "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency.",
                                w.records,
                                rps,
                                rps * size as f64 / 1e6,
                                w.avg_ms,
                                w.max_ms
                            )
                        });
                    }
                }
            })
        };
        Progress { bar, task }
    }

    /// Stops and clears the display.
    pub(crate) fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_runs_show_elapsed_over_total_seconds() {
        let (len, pos, msg) = describe(Goal::Seconds(12.0), None, 5.04, 250_883, 50_123.4);
        assert_eq!((len, pos), (12_000, 5_040));
        assert_eq!(msg, "5.0/12.0 s  250,883 records  50,123 records/s");
        // Past the end (flushing the last records): the bar stays full.
        let (len, pos, msg) = describe(Goal::Seconds(12.0), None, 12.3, 600_000, 0.0);
        assert_eq!(pos, len);
        assert!(msg.starts_with("12.0/12.0 s"), "{msg}");
    }

    #[test]
    fn count_runs_show_records_over_total() {
        let (len, pos, msg) = describe(Goal::Records(1_000_000), None, 2.5, 250_883, 100_000.0);
        assert_eq!((len, pos), (1_000_000, 250_883));
        assert_eq!(msg, "250,883/1,000,000 records  100,000 records/s  2.5 s");
        let (_, _, msg) = describe(Goal::Records(10), Some((0.25, 1.0)), 0.0, 0, 0.0);
        assert_eq!(msg, "warming up 0.2/1.0 s");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
