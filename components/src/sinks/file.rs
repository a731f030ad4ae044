//! The file sink: each change as one JSON line ([`Change::to_json`]) appended to a file,
//! in commit order, rotated by size and age. With `transaction_events`, each marked
//! transaction's BEGIN and END markers are lines too, around its changes.
//!
//! Durability (the fsync policy, `fsync` in the settings):
//! - `batch` (default): every batch is written and `fdatasync`ed before it is confirmed,
//!   so a confirmed line survives a kill -9, an OS crash and a power cut;
//! - `never`: a batch is handed to the OS (`write(2)` returned) before it is confirmed; a
//!   confirmed line survives a kill -9 of Astha (the kernel holds it), not a power cut.
//!
//! Either way the slot moves only past lines that are durable by that policy, so after a
//! crash every change is in the file at least once, in commit order; the lines of the
//! batch in flight at the crash may appear twice (once before, once after the restart).
//! A line torn by a crash mid-write (never confirmed) is cut off when the file is opened
//! again, so every line of the file is whole JSON.
//!
//! Rotation: before a batch is written, the current file is closed and renamed to
//! `<stem>-<UTC time>-<nnnn>.<ext>` (then the directory is synced) once it holds `max_bytes` or
//! more, or is older than `max_age` (its creation time, or when this process opened it
//! where the file system records none). A batch is never split across files. Old files
//! are never deleted by Astha. The path may contain `{source}` (the source's name), which
//! a pipeline with several databases needs: one file is written by one component only,
//! and a second sink on the same path in one process is refused when it is built.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::format::Encoder;
use astha_core::Change;
use async_trait::async_trait;
use serde::Deserialize;

use super::registry::{SinkConfig, SinkContext};

/// When a written batch counts as durable; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// `fdatasync` after every batch, before confirming it.
    Batch,
    /// Confirm once the OS has the bytes (survives a process kill, not a power cut).
    Never,
}

/// Settings of the `file` sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file lines are appended to; `{source}` is replaced by the source's name.
    pub path: PathBuf,
    /// Rotate once the file holds this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotate once the file is older than this.
    #[serde(with = "duration_serde", default = "default_max_age")]
    pub max_age: Duration,
    /// The fsync policy.
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    /// Most changes written (and synced) per batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_fsync() -> Fsync {
    Fsync::Batch
}
fn default_max_batch() -> usize {
    500
}

impl FileSinkConfig {
    /// Defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSinkConfig {
            path: path.into(),
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
            fsync: default_fsync(),
            max_batch: default_max_batch(),
        }
    }

    /// The path for source `source`.
    pub fn path_for(&self, source: &str) -> PathBuf {
        PathBuf::from(self.path.to_string_lossy().replace("{source}", source))
    }
}

impl SinkConfig for FileSinkConfig {
    const TYPE: &'static str = "file";
    const ABOUT: &'static str =
        "appends each change as a JSON line to a file, fsynced per batch, rotated by size and age";
    // BEGIN and END markers are lines of the file, around their changes.
    const TRANSACTION_EVENTS: bool = true;

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path is empty".into());
        }
        if self.path_for(&ctx.source).file_name().is_none() {
            return Err(format!("path {} names no file", self.path.display()));
        }
        if self.max_bytes == 0 || self.max_age.is_zero() {
            return Err("max_bytes and max_age must be > 0".into());
        }
        if self.max_batch == 0 {
            return Err("max_batch must be > 0".into());
        }
        if ctx.tables.is_empty() {
            return Err("no tables".into());
        }
        Ok(())
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(FileSink::new(self, ctx)?))
    }
}

/// Paths written by a file sink of this process: one writer per file.
static OPEN_PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Appends changes to a file; see the module docs.
pub struct FileSink {
    encoder: Encoder,
    name: String,
    tables: Vec<String>,
    max_batch: usize,
    writer: Arc<Mutex<Writer>>,
    claimed: PathBuf,
}

impl FileSink {
    /// A sink for `ctx`; the file is opened at the first batch. Fails if another file
    /// sink of this process writes the same path.
    pub fn new(config: &FileSinkConfig, ctx: &SinkContext) -> Result<Self, String> {
        let path = config.path_for(&ctx.source);
        let claimed = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut open = OPEN_PATHS.lock().expect("not poisoned");
        if open.contains(&claimed) {
            return Err(format!(
                "{} is already written by another file sink; give each its own path \
                 (`{{source}}` in the path makes one file per source)",
                path.display()
            ));
        }
        let encoder = ctx.encoder()?;
        open.push(claimed.clone());
        Ok(FileSink {
            encoder,
            name: ctx.name.clone(),
            tables: ctx.tables.clone(),
            max_batch: config.max_batch,
            writer: Arc::new(Mutex::new(Writer {
                path,
                max_bytes: config.max_bytes,
                max_age: config.max_age,
                fsync: config.fsync,
                current: None,
            })),
            claimed,
        })
    }

    async fn append(&self, lines: Vec<u8>) -> Result<(), ComponentError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.lock().expect("not poisoned").append(&lines))
            .await
            .map_err(|e| ComponentError::transient(format!("file writer: {e}")))?
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Ok(mut open) = OPEN_PATHS.lock() {
            open.retain(|p| p != &self.claimed);
        }
    }
}

#[async_trait]
impl Component for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.append(self.encoder.json_lines([change])).await
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        self.append(self.encoder.json_lines(changes.iter().map(|c| &**c)))
            .await
            .map_err(|error| BatchError { handled: 0, error })
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        // After a timeout or panic the file state is unknown: reopen (and repair) it.
        self.writer.lock().expect("not poisoned").current = None;
        Ok(())
    }
}

/// The open file and its rotation state (runs on the blocking pool).
struct Writer {
    path: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    fsync: Fsync,
    current: Option<Current>,
}

struct Current {
    file: File,
    len: u64,
    born: SystemTime,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> ComponentError {
    ComponentError::transient(format!("file sink {what} {}: {err}", path.display()))
}

impl Writer {
    fn append(&mut self, lines: &[u8]) -> Result<(), ComponentError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        if self.due_for_rotation() {
            self.rotate()?;
            self.current = Some(self.open()?);
        }
        let current = self.current.as_mut().expect("opened above");
        let written = current
            .file
            .write_all(lines)
            .and_then(|_| match self.fsync {
                Fsync::Batch => current.file.sync_data(),
                Fsync::Never => Ok(()),
            });
        match written {
            Ok(()) => {
                current.len += lines.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Take back what part of the batch got in; if that fails too, the next
                // open cuts any torn line.
                if current.file.set_len(current.len).is_err() {
                    self.current = None;
                }
                Err(io_error("write", &self.path, err))
            }
        }
    }

    fn due_for_rotation(&self) -> bool {
        let Some(current) = &self.current else {
            return false;
        };
        let old = current
            .born
            .elapsed()
            .map(|age| age >= self.max_age)
            .unwrap_or(false);
        current.len > 0 && (current.len >= self.max_bytes || old)
    }

    fn open(&self) -> Result<Current, ComponentError> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_error("create directory of", path, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io_error("open", path, e))?;
        let len = cut_torn_tail(&mut file).map_err(|e| io_error("repair", path, e))?;
        let born = file
            .metadata()
            .and_then(|m| m.created())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(Current { file, len, born })
    }

    fn rotate(&mut self) -> Result<(), ComponentError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let path = &self.path;
        current
            .file
            .sync_all()
            .map_err(|e| io_error("sync", path, e))?;
        drop(current);
        let target = rotated_name(path);
        std::fs::rename(path, &target).map_err(|e| io_error("rotate", path, e))?;
        sync_dir(path).map_err(|e| io_error("sync directory of", path, e))?;
        tracing::info!(from = %path.display(), to = %target.display(), "file sink rotated");
        Ok(())
    }
}

/// Truncates `file` after its last newline (a line a crash tore is dropped: it was never
/// confirmed) and returns the length.
fn cut_torn_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end != len {
        tracing::warn!(
            cut = len - end,
            "file sink: cut a torn last line left by a crash"
        );
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(end)
}

/// `<stem>-<UTC time>-<nnnn>.<ext>` next to `path`, not yet existing. The sequence is
/// always written, zero-padded, so rotated files sort by name in the order they were
/// written even when two rotations fall in the same millisecond (a bare `-1` suffix
/// sorted before the unsuffixed name: `-` is below `.`).
fn rotated_name(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let time = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    (0u32..)
        .map(|n| path.with_file_name(format!("{stem}-{time}-{n:04}{ext}")))
        .find(|candidate| !candidate.exists())
        .expect("fewer than 2^32 rotations in one millisecond")
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(path: &Path, max_bytes: u64) -> Writer {
        Writer {
            path: path.into(),
            max_bytes,
            max_age: Duration::from_secs(3600),
            fsync: Fsync::Batch,
            current: None,
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_when_the_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"{\"lsn\":1}\n{\"lsn\":2}\n{\"ls").unwrap();
        let mut w = writer(&path, 1 << 20);
        w.append(b"{\"lsn\":3}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"lsn\":1}\n{\"lsn\":2}\n{\"lsn\":3}\n"
        );
        std::fs::write(&path, b"no newline at all").unwrap();
        let mut w = writer(&path, 1 << 20);
        w.append(b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
    }

    #[test]
    fn files_rotate_by_size_without_splitting_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut w = writer(&path, 10);
        w.append(b"aaaa\nbbbb\n").unwrap(); // 10 bytes: full
        w.append(b"cccccccccccccccc\n").unwrap(); // rotates first, then one big batch
        w.append(b"d\n").unwrap(); // rotates again
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[2], "out.jsonl");
        assert!(names[0].starts_with("out-") && names[0].ends_with(".jsonl"));
        let contents: Vec<String> = names
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(contents[0], "aaaa\nbbbb\n");
        assert_eq!(contents[1], "cccccccccccccccc\n");
        assert_eq!(contents[2], "d\n");
    }

    #[test]
    fn files_rotate_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut w = writer(&path, 1 << 20);
        w.max_age = Duration::from_millis(1);
        w.append(b"a\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        w.append(b"b\n").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
    }

    #[test]
    fn one_path_has_one_writer_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig::new(dir.path().join("{source}.jsonl"));
        let a = SinkContext::new("f", "a.db", "id", &["t"]);
        let first = FileSink::new(&config, &a).unwrap();
        let err = FileSink::new(&config, &a).err().unwrap();
        assert!(err.contains("{source}"), "{err}");
        let mut b = a.clone();
        b.source = "other".into();
        assert!(
            FileSink::new(&config, &b).is_ok(),
            "{{source}} separates them"
        );
        drop(first);
        assert!(FileSink::new(&config, &a).is_ok(), "released on drop");
    }
}
