//! Facts about the machine a benchmark ran on, read from /proc and /etc (Linux); a fact
//! that cannot be read is left out rather than guessed.

use serde::{Deserialize, Serialize};

/// The machine of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Machine {
    /// Host name.
    pub(crate) hostname: Option<String>,
    /// Operating system (`PRETTY_NAME` of /etc/os-release).
    pub(crate) os: Option<String>,
    /// Kernel release.
    pub(crate) kernel: Option<String>,
    /// CPU model name.
    pub(crate) cpu_model: Option<String>,
    /// Logical CPUs this process may use.
    pub(crate) logical_cpus: Option<usize>,
    /// Physical memory, MiB.
    pub(crate) memory_mib: Option<u64>,
    /// 1, 5 and 15 minute load averages when the run started (a busy machine skews figures).
    pub(crate) load_average: Option<[f64; 3]>,
    /// Target architecture the binary was built for.
    pub(crate) arch: String,
    /// Whether the binary was built with optimisations (`cargo build --release`).
    pub(crate) optimized_build: bool,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Machine {
    /// Reads what it can about this machine now.
    pub(crate) fn detect() -> Machine {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        Machine {
            hostname: read("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()),
            os: read("/etc/os-release").and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
            }),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned()),
            logical_cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
            memory_mib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb / 1024),
            load_average: read("/proc/loadavg").and_then(|s| {
                let v: Vec<f64> = s.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
                (v.len() == 3).then(|| [v[0], v[1], v[2]])
            }),
            arch: std::env::consts::ARCH.to_owned(),
            optimized_build: !cfg!(debug_assertions),
        }
    }

    /// `(name, value)` rows for a table.
    pub(crate) fn rows(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        vec![
            ("host", opt(&self.hostname)),
            ("os", opt(&self.os)),
            ("kernel", opt(&self.kernel)),
            ("cpu", opt(&self.cpu_model)),
            ("logical cpus", self.logical_cpus.map_or("unknown".into(), |n| n.to_string())),
            ("memory", self.memory_mib.map_or("unknown".into(), |m| format!("{m} MiB"))),
            (
                "load average at start",
                self.load_average.map_or("unknown".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])),
            ),
            ("arch", self.arch.clone()),
            ("build", if self.optimized_build { "optimized" } else { "debug (figures not representative)" }.into()),
        ]
    }
}
