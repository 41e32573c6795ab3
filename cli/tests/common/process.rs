//! A `qwire broker` child process for tests that SIGKILL and restart it.

use std::net::SocketAddr;

use qwire::client::ConnectConfig;

use super::Certs;

/// A `qwire broker` child process on a fixed address and data directory, so it can be
/// SIGKILLed and started again in place. Killed when dropped.
pub struct BrokerProcess {
    pub certs: Certs,
    pub data: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Extra arguments (e.g. `--config FILE`).
    pub extra_args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec NS ...`).
    pub netns: Option<String>,
    /// Extra environment variables (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    logs: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// Successful starts so far.
    pub starts: u32,
}

impl BrokerProcess {
    /// A broker on a free loopback port (not started yet: call [`BrokerProcess::start`]).
    pub fn new(config_toml: &str) -> BrokerProcess {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        drop(socket);
        Self::at(addr, None, config_toml)
    }

    /// A broker listening on `addr`, optionally inside network namespace `netns`.
    pub fn at(addr: SocketAddr, netns: Option<String>, config_toml: &str) -> BrokerProcess {
        let logs = tempfile::tempdir().unwrap();
        let mut extra_args = Vec::new();
        if !config_toml.is_empty() {
            let path = logs.path().join("broker.toml");
            std::fs::write(&path, config_toml).unwrap();
            extra_args = vec!["--config".into(), path.display().to_string()];
        }
        BrokerProcess {
            certs: Certs::new(),
            data: tempfile::tempdir().unwrap(),
            addr,
            extra_args,
            netns,
            env: Vec::new(),
            logs,
            child: None,
            starts: 0,
        }
    }

    /// Starts the broker and waits for its `listening` line; retries for up to 20 s while
    /// the port is still taken.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match self.try_start() {
                Ok(child) => {
                    self.child = Some(child);
                    self.starts += 1;
                    return;
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("broker start failed, retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("broker did not start: {e}\n{}", self.stderr()),
            }
        }
    }

    fn try_start(&mut self) -> Result<std::process::Child, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let bin = env!("CARGO_BIN_EXE_qwire");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs.path().join("stderr.log")).unwrap();
        cmd.arg("broker")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--certs")
            .arg(self.certs.path())
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().map_err(|e| format!("spawn {bin}: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout so the broker never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(line) if line.contains("qwire broker listening on") => return Ok(child),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("broker exited with {status}"));
                    }
                    if std::time::Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err("no 'listening' line within 15 s".into());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    return Err(format!("broker exited with {status}"));
                }
            }
        }
    }

    /// SIGKILL (no shutdown, no final fsync) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Whether the process is still alive.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Everything the broker wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn client_config(&self, name: &str) -> ConnectConfig {
        self.certs.client(self.addr, name)
    }

    /// A producer builder for `client` against this broker.
    pub fn producer(&self, client: &str) -> qwire::producer::ProducerBuilder {
        qwire::producer::Producer::builder()
            .bootstrap(self.addr.to_string())
            .tls(qwire::producer::TlsConfig::from_dir(self.certs.path(), client).unwrap())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
