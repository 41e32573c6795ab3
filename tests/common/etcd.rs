//! A real etcd for tests: `etcd` from PATH (Debian's `etcd-server`), on loopback ports
//! chosen by the OS, in a temporary data directory.
//!
//! [`Etcd::shared`] starts one per test binary (tests use a key prefix each);
//! [`Etcd::start`] starts a private one for tests that stop, pause or kill it. Each etcd
//! runs under a small shell watchdog that kills it when the test process is gone, so a
//! test binary that panics or is killed leaves no etcd behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running etcd.
pub struct Etcd {
    /// `127.0.0.1:<client port>`.
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    watchdog: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `etcd` is on PATH; the message to show when it is not.
pub fn etcd_missing() -> Option<String> {
    match Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("etcd is not on PATH: install it (`apt-get install etcd-server`) to run the cluster tests".into()),
    }
}

impl Etcd {
    /// The etcd of this test binary, started on first use.
    pub fn shared() -> &'static Etcd {
        static SHARED: OnceLock<Etcd> = OnceLock::new();
        SHARED.get_or_init(Etcd::start)
    }

    /// A private etcd, stopped when dropped.
    pub fn start() -> Etcd {
        if let Some(msg) = etcd_missing() {
            panic!("{msg}");
        }
        for attempt in 0..5 {
            let (client_port, peer_port) = (free_port(), free_port());
            let mut e = Etcd {
                endpoint: format!("127.0.0.1:{client_port}"),
                client_port,
                peer_port,
                dir: tempfile::tempdir().unwrap(),
                watchdog: None,
            };
            e.spawn();
            if e.wait_ready(Duration::from_secs(60)) {
                return e;
            }
            eprintln!("etcd on ports {client_port}/{peer_port} did not become ready (attempt {attempt}); retrying");
            e.stop();
        }
        panic!("etcd did not start; see its log in the test output");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("etcd.pid")
    }

    fn spawn(&mut self) {
        let c = format!("http://127.0.0.1:{}", self.client_port);
        let p = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        // The watchdog shell starts etcd, writes its pid, and kills it when the test
        // process (its parent's pid, passed in) is gone or when it is told to stop.
        let script = r#"
            etcd "$@" & E=$!
            echo $E > "$PIDFILE"
            trap 'kill -CONT $E 2>/dev/null; kill $E 2>/dev/null; wait $E; exit 0' TERM
            while kill -0 "$OWNER" 2>/dev/null && kill -0 $E 2>/dev/null; do sleep 0.5; done
            kill -CONT $E 2>/dev/null; kill $E 2>/dev/null; wait $E
        "#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(["--name", "t0", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
            .args(["--initial-cluster", &format!("t0={p}")])
            .args(["--log-level", "warn"])
            .env("OWNER", std::process::id().to_string())
            .env("PIDFILE", self.pid_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning etcd");
        self.watchdog = Some(child);
    }

    /// Polls etcd's `/health` until it reports healthy.
    fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.healthy() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether `/health` answers `"health":"true"` right now.
    pub fn healthy(&self) -> bool {
        let addr: SocketAddr = self.endpoint.parse().unwrap();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    fn etcd_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.pid_file()).ok().map(|s| s.trim().to_owned())
    }

    fn signal(&self, sig: &str) {
        let pid = self.etcd_pid().expect("etcd's pid file");
        let _ = Command::new("kill").args([sig, &pid]).status();
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers, as when the
    /// network to it fails. Returns once every thread of etcd is stopped (the signal takes
    /// effect asynchronously: a thread running on another CPU could otherwise still answer
    /// a request sent right after).
    pub fn pause(&self) {
        self.signal("-STOP");
        let pid = self.etcd_pid().expect("etcd's pid file");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(&pid) {
            assert!(std::time::Instant::now() < deadline, "etcd (pid {pid}) did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Unfreezes a paused etcd.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Stops etcd (data kept).
    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            if self.etcd_pid().is_some() {
                self.signal("-CONT");
                self.signal("-KILL");
            }
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Starts it again on the same ports and data directory, and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        assert!(self.wait_ready(Duration::from_secs(60)), "etcd did not come back");
    }

    /// A key prefix unique to one test.
    pub fn prefix(test: &str) -> String {
        format!("/qwire-test/{test}")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/PID/task/TID/stat`).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            // The state follows the command name's closing parenthesis.
            .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
            .unwrap_or(true)
    })
}
