//! Helpers for the fault tests that need root: commands, network namespaces with an
//! impaired veth pair, small mounts, a full disk; and the rule that a fault test which
//! cannot set up its fault fails under `QWIRE_REQUIRE_PRIVILEGED_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test that needs root (mounts, namespaces) and could not set up its fault: prints
/// `SKIPPED` and passes, unless `QWIRE_REQUIRE_PRIVILEGED_TESTS=1` (CI sets it), where a
/// skipped fault test is a failure: a green run then says the faults were injected.
pub fn skip(what: &str, reason: &str) {
    if std::env::var("QWIRE_REQUIRE_PRIVILEGED_TESTS").is_ok_and(|v| v == "1") {
        panic!("QWIRE_REQUIRE_PRIVILEGED_TESTS=1 but {what} could not run: {reason}");
    }
    println!("SKIPPED: {what}: {reason}");
}

/// Runs a command; on failure, the command and its stderr.
pub fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A network namespace joined to this one by a veth pair; removed when dropped.
pub struct NetNs {
    pub name: String,
    host_if: String,
    ns_if: String,
    pub host_ip: String,
    pub ns_ip: String,
    /// How loss (and delay) is applied.
    pub impairment: String,
    /// Loss applied with iptables rules (else with `tc netem`).
    iptables: bool,
}

impl NetNs {
    /// Creates the namespace with `loss_pct` loss on the broker side (both directions)
    /// and, where `tc netem` exists, `delay_ms` of delay.
    pub fn create(loss_pct: f64, delay_ms: u32) -> Result<NetNs, String> {
        let id = std::process::id() % 100_000;
        let net = 1 + std::process::id() % 250;
        let ns = NetNs {
            name: format!("qwire-fault-{id}"),
            host_if: format!("qwh{id}"),
            host_ip: format!("10.254.{net}.1"),
            ns_ip: format!("10.254.{net}.2"),
            ns_if: format!("qwn{id}"),
            impairment: String::new(),
            iptables: false,
        };
        run(&["ip", "netns", "add", &ns.name])?;
        let mut ns = ns;
        let ns_if = ns.ns_if.clone();
        run(&["ip", "link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name])?;
        run(&["ip", "addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if])?;
        run(&["ip", "link", "set", &ns.host_if, "up"])?;
        run(&["ip", "-n", &ns.name, "addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns_if])?;
        run(&["ip", "-n", &ns.name, "link", "set", &ns_if, "up"])?;
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        let loss = format!("{loss_pct}%");
        let delay = format!("{delay_ms}ms");
        let netem = run(&[
            "ip", "netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", &ns_if, "root", "netem", "loss", &loss,
            "delay", &delay,
        ]);
        match netem {
            Ok(()) => ns.impairment = format!("tc netem: {loss} loss, {delay} delay (broker side)"),
            Err(netem_err) => {
                let p = format!("{}", loss_pct / 100.0);
                let rule = |chain: &str| {
                    run(&[
                        "ip",
                        "netns",
                        "exec",
                        &ns.name,
                        "iptables",
                        "-A",
                        chain,
                        "-p",
                        "udp",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &p,
                        "-j",
                        "DROP",
                    ])
                };
                rule("INPUT")
                    .and_then(|_| rule("OUTPUT"))
                    .map_err(|e| format!("neither tc netem ({netem_err}) nor iptables ({e}) can impair the veth"))?;
                ns.impairment =
                    format!("iptables statistic: {loss} loss each way; no delay (tc netem unavailable: {netem_err})");
                ns.iptables = true;
            }
        }
        Ok(ns)
    }

    /// Packets the impairment dropped so far: the packet counters of the iptables DROP
    /// rules, or netem's `dropped` count.
    pub fn dropped(&self) -> Result<u64, String> {
        let output = |cmd: &[&str]| -> Result<String, String> {
            let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
            if !out.status.success() {
                return Err(format!("{}: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let mut dropped = 0;
        if self.iptables {
            for chain in ["INPUT", "OUTPUT"] {
                let listing = output(&["ip", "netns", "exec", &self.name, "iptables", "-L", chain, "-v", "-n", "-x"])?;
                // Rows: pkts bytes target prot opt in out source destination [match]
                for line in listing.lines().filter(|l| l.split_whitespace().nth(2) == Some("DROP")) {
                    let pkts = line.split_whitespace().next().unwrap_or("");
                    dropped += pkts.parse::<u64>().map_err(|e| format!("iptables counter {pkts:?}: {e}"))?;
                }
            }
        } else {
            let stats = output(&["ip", "netns", "exec", &self.name, "tc", "-s", "qdisc", "show", "dev", &self.ns_if])?;
            let after = stats.split("dropped ").nth(1).ok_or_else(|| format!("no drop count in: {stats}"))?;
            let n: String = after.chars().take_while(char::is_ascii_digit).collect();
            dropped = n.parse().map_err(|e| format!("netem drop count {n:?}: {e}"))?;
        }
        Ok(dropped)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the veth pair, and with it ours.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Mounts made by a test; unmounted (newest first) when dropped.
pub struct Mounts(pub Vec<PathBuf>);

impl Mounts {
    pub fn tmpfs(&mut self, dir: &Path, size: &str) -> Result<(), String> {
        run(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &dir.display().to_string()])?;
        self.0.push(dir.into());
        Ok(())
    }

    pub fn ext4_image(&mut self, image: &Path, dir: &Path, size: &str) -> Result<(), String> {
        run(&["truncate", "-s", size, &image.display().to_string()])?;
        run(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,nodiscard",
            &image.display().to_string(),
        ])?;
        run(&["mount", "-o", "loop,errors=continue", &image.display().to_string(), &dir.display().to_string()])?;
        self.0.push(dir.into());
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let d = dir.display().to_string();
            if run(&["umount", &d]).is_err() {
                let _ = run(&["umount", "-l", &d]);
            }
        }
    }
}

/// Fills the file system holding `dir` with `path`, then frees `leave` bytes.
pub fn fill_disk(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
}
