//! Making files durable: every `fsync` the broker's storage does goes through a
//! [`Syncer`] (so tests can delay or fail it), and small state files are replaced with
//! one function, [`write_atomic`] (write a temporary file, fsync it, rename it over the
//! old one, fsync the directory).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// What an fsync is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `fdatasync` of a segment's data (group commit, a sealed segment, recovery).
    Data,
    /// `fsync` of a file whose size or metadata changed (a truncated segment, a state file).
    All,
    /// `fsync` of a directory, so files created, renamed or removed in it stay so.
    Dir,
}

/// A hook run before every fsync; an error fails that fsync as the OS would.
pub type SyncHook = dyn Fn(&Path, SyncKind) -> io::Result<()> + Send + Sync;

/// How storage makes data durable: the OS's `fdatasync`/`fsync`, optionally preceded by a
/// hook that may delay or fail it (fault injection in tests; the default has none).
#[derive(Clone, Default)]
pub struct Syncer {
    hook: Option<Arc<SyncHook>>,
}

impl fmt::Debug for Syncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.hook.is_some() { "Syncer(with hook)" } else { "Syncer(os)" })
    }
}

impl Syncer {
    /// The OS's fsync, no hook (the default).
    pub fn os() -> Syncer {
        Syncer { hook: None }
    }

    /// Runs `hook(path, kind)` before every fsync; when it returns an error the fsync is
    /// not made and the error is returned in its place. A hook that blocks delays the fsync.
    pub fn with_hook(hook: impl Fn(&Path, SyncKind) -> io::Result<()> + Send + Sync + 'static) -> Syncer {
        Syncer { hook: Some(Arc::new(hook)) }
    }

    /// fsyncs `file` (found at `path`) as `kind` says.
    pub fn sync(&self, file: &File, path: &Path, kind: SyncKind) -> io::Result<()> {
        if let Some(hook) = &self.hook {
            hook(path, kind)?;
        }
        match kind {
            SyncKind::Data => file.sync_data(),
            SyncKind::All | SyncKind::Dir => file.sync_all(),
        }
    }

    /// fsyncs the directory `dir`.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = File::open(dir)?;
        self.sync(&d, dir, SyncKind::Dir)
    }
}

/// Replaces the file at `path` with `data` so that a crash leaves either the old or the
/// new contents, never a mix: writes `path.tmp` (created with `mode`, e.g. `0o600` for a
/// secret), fsyncs it, renames it over `path` and fsyncs the directory. Returns once the
/// new contents are durable.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, syncer: &Syncer) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(data)?;
    syncer.sync(&f, &tmp, SyncKind::All)?;
    drop(f);
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => syncer.sync_dir(dir),
        _ => syncer.sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    #[test]
    fn write_atomic_replaces_contents_syncs_file_then_directory_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let syncer = Syncer::with_hook(move |p, k| {
            log.lock().unwrap().push((p.to_path_buf(), k));
            Ok(())
        });
        write_atomic(&path, b"one", 0o600, &syncer).unwrap();
        write_atomic(&path, b"two", 0o600, &syncer).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[..2], [(path.with_extension("tmp"), SyncKind::All), (dir.path().to_path_buf(), SyncKind::Dir)]);
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn a_failing_hook_fails_the_write_and_leaves_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"old", 0o644, &Syncer::os()).unwrap();
        let failing = Syncer::with_hook(|_, _| Err(io::Error::other("injected")));
        assert_eq!(write_atomic(&path, b"new", 0o644, &failing).unwrap_err().to_string(), "injected");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
