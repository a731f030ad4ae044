//! Orphan files: what crashed commits and interrupted expiries leave in the table directory.
//! The sweep is also where a version hint left stale by a crash after the swap is repaired.
//!
//! Owns finding and removing files under the table directory that the table's metadata does
//! not reach, as Iceberg's orphan-file removal does. Reached are: the current metadata file
//! and those its `metadata-log` names, `version-hint.text`, and for every snapshot its
//! manifest list, its manifests and every data file they name (DELETED entries included:
//! deleting those is expiry's job). Anything else is an orphan once its last modification is
//! older than the caller's threshold.
//!
//! The threshold is the whole safety story against concurrent writers, exactly as in Java: a
//! commit in flight writes its files before the catalog names them, so they look orphaned
//! until it publishes. Pick a threshold far longer than any commit (Java's default is three
//! days). Files the caller owns but has not committed yet (data files waiting to be
//! appended) are passed in `keep`. Reachability is computed from the catalog's current
//! version (the handle is refreshed first), and an unreadable manifest list or manifest is
//! an error rather than a reason to delete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::commit::VERSION_HINT;
use super::error::{IcebergError, Result};
use super::expire::reach;
use super::fsutil;
use super::table::IcebergTable;

impl IcebergTable {
    /// Files under the table directory that no metadata reaches, not in `keep`, last
    /// modified before `older_than_ms` (Unix milliseconds), sorted. Refreshes the handle.
    pub fn find_orphan_files(
        &mut self,
        older_than_ms: i64,
        keep: &BTreeSet<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        self.refresh()?;
        let table_dir = self.location()?;
        let metadata_dir = self.metadata_dir()?;
        let snapshots: Vec<_> = self.metadata.snapshots.iter().collect();
        let reached = reach(&snapshots, true)?;
        let mut known: BTreeSet<PathBuf> = reached.metadata_files;
        known.extend(reached.any_data);
        known.insert(fsutil::from_location(&self.metadata_location)?);
        for entry in &self.metadata.metadata_log {
            if let Ok(p) = fsutil::from_location(&entry.metadata_file) {
                known.insert(p);
            }
        }
        known.insert(metadata_dir.join(VERSION_HINT));

        let mut orphans = Vec::new();
        let mut dirs = vec![table_dir];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(IcebergError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| IcebergError::io(&dir, e))?;
                let path = entry.path();
                let meta = entry.metadata().map_err(|e| IcebergError::io(&path, e))?;
                if meta.is_dir() {
                    dirs.push(path);
                } else if !known.contains(&path)
                    && !keep.contains(&path)
                    && modified_ms(&path, &meta)? < older_than_ms
                {
                    orphans.push(path);
                }
            }
        }
        orphans.sort();
        Ok(orphans)
    }

    /// Deletes what [`find_orphan_files`](Self::find_orphan_files) finds and rewrites
    /// `version-hint.text` if a crash after a catalog swap left it naming the previous
    /// version; returns the files deleted, sorted.
    pub fn remove_orphan_files(
        &mut self,
        older_than_ms: i64,
        keep: &BTreeSet<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        let orphans = self.find_orphan_files(older_than_ms, keep)?;
        let mut deleted = Vec::with_capacity(orphans.len());
        for path in orphans {
            if fsutil::remove_if_exists(&path)? {
                deleted.push(path);
            }
        }
        super::commit::write_version_hint(&self.metadata_dir()?, &self.metadata_location)?;
        if !deleted.is_empty() {
            tracing::info!(table = %self.identifier(), deleted = deleted.len(), "iceberg orphan files removed");
        }
        Ok(deleted)
    }
}

fn modified_ms(path: &Path, meta: &std::fs::Metadata) -> Result<i64> {
    let modified = meta.modified().map_err(|e| IcebergError::io(path, e))?;
    Ok(modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}
