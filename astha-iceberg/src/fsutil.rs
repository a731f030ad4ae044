//! Durable file publication and `file://` locations.
//!
//! Owns the ways this crate makes bytes visible. The default ([`write_atomic`]): write a
//! temporary file in the target's directory, fsync it, rename it over the final name, fsync
//! the directory, so a reader sees either no file or the complete file, never a torn one,
//! and a crash leaves at most a `.tmp-*` file behind. Two cheaper ones for files whose loss
//! is harmless until a later step names them ([`write_new_synced`]) or at all
//! ([`replace_unsynced`]). Also owns the conversion between local paths and the absolute
//! `file://` locations Iceberg metadata stores; other URI schemes are refused, never guessed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{IcebergError, Result};

/// Prefix of every location this writer stores.
pub const FILE_SCHEME: &str = "file://";

/// `file:///abs/path` for an absolute local path.
pub fn to_location(path: &Path) -> String {
    format!("{FILE_SCHEME}{}", path.display())
}

/// Local path of a `file://` location (or of a plain absolute path, which some writers store).
pub fn from_location(location: &str) -> Result<PathBuf> {
    let raw = location.strip_prefix(FILE_SCHEME).unwrap_or(location);
    // `file:/abs` (one slash) is what Hadoop-style writers produce; accept it too.
    let raw = if !raw.starts_with('/') && location.starts_with("file:/") {
        &location["file:".len()..]
    } else {
        raw
    };
    let path = PathBuf::from(raw);
    if path.is_absolute() && !raw.contains("://") {
        Ok(path)
    } else {
        Err(IcebergError::InvalidArgument(format!(
            "location {location:?} is not a local absolute file:// path"
        )))
    }
}

/// Absolute form of `path` (made absolute against the current directory, not canonicalised:
/// symlinks stay as the caller wrote them).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| IcebergError::io(path, e))
}

/// Temporary sibling name for `target`; hidden, unique, and recognisable as debris.
pub fn temp_sibling(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `bytes` to `target` atomically and durably (see the module doc).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(target);
    let result = write_synced(&tmp, bytes).and_then(|()| publish(&tmp, target));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (which must not exist) with `bytes` and syncs its data, without a
/// temporary name or a directory sync. For files with fresh unique names that nothing
/// references until a later step publishes them (manifests, manifest lists): a crash leaves
/// at worst an unreferenced, possibly partial file (an orphan), and the directory sync of
/// the publishing step makes the name durable, as all of a commit's files share one
/// directory. Saves a rename and a directory sync per file.
pub fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let result = File::create_new(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_data()
        })
        .map_err(|e| IcebergError::io(path, e));
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Replaces `target` atomically (temporary name, rename) without syncing anything: for
/// files that may be lost or stale after a crash without harm (the version hint).
pub fn replace_unsynced(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(target);
    let result = fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, target))
        .map_err(|e| IcebergError::io(target, e));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a whole file and fsyncs it, without publishing it anywhere.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| IcebergError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| IcebergError::io(path, e))
}

/// Renames a synced temporary file to its final name and makes the rename durable.
pub fn publish(tmp: &Path, target: &Path) -> Result<()> {
    fs::rename(tmp, target).map_err(|e| IcebergError::io(target, e))?;
    sync_parent(target)
}

/// fsyncs the directory holding `path`, so a rename or create in it survives a power loss.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IcebergError::io(dir, e))
}

/// `mkdir -p` with the path in the error.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| IcebergError::io(dir, e))
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IcebergError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_reject_remote_schemes() {
        let p = Path::new("/tmp/wh/ns/t/data/a.parquet");
        let loc = to_location(p);
        assert_eq!(loc, "file:///tmp/wh/ns/t/data/a.parquet");
        assert_eq!(from_location(&loc).unwrap(), p);
        assert_eq!(from_location("/tmp/x").unwrap(), Path::new("/tmp/x"));
        assert_eq!(from_location("file:/tmp/x").unwrap(), Path::new("/tmp/x"));
        assert!(from_location("s3://bucket/x").is_err());
        assert!(from_location("relative/x").is_err());
    }

    #[test]
    fn atomic_write_leaves_only_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }
}
