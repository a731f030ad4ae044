//! Snapshot expiry: forget old snapshots, then delete the files only they used.
//!
//! Owns two promises. First, what is kept: the current snapshot and its `keep_last - 1`
//! nearest ancestors, every snapshot a ref points to, and (when `older_than_ms` is given)
//! every snapshot at least that young. Second, what is deleted: only manifest lists, manifests
//! and data files that an expired snapshot referenced, that no remaining snapshot reaches, and
//! that lie inside the table directory. Files are deleted only after the new metadata is
//! committed, so a reader of the current version never loses a file; a crash in between leaves
//! orphans (`orphans.rs` sweeps them), never a broken table. Old metadata JSON files are not
//! expiry's business: they leave with the metadata log (`commit.rs`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::commit::CommitFiles;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::manifest::read_manifest;
use super::manifest_list::{read_manifest_list, ManifestFile};
use super::metadata::Snapshot;
use super::table::IcebergTable;

/// What an expiry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireResult {
    pub expired_snapshot_ids: Vec<i64>,
    /// Files removed from disk, sorted.
    pub deleted_files: Vec<PathBuf>,
}

/// Files one set of snapshots references.
#[derive(Default)]
pub(super) struct Reached {
    /// Manifest lists and manifests.
    pub(super) metadata_files: BTreeSet<PathBuf>,
    /// Data files live in at least one of the snapshots.
    pub(super) live_data: BTreeSet<PathBuf>,
    /// Data files mentioned in any status (DELETED entries included).
    pub(super) any_data: BTreeSet<PathBuf>,
}

impl IcebergTable {
    /// Expires snapshots older than the last `keep_last` (at least 1) and, if given, older
    /// than `older_than_ms`; then deletes the files nothing remaining reaches.
    pub fn expire_snapshots(
        &mut self,
        keep_last: usize,
        older_than_ms: Option<i64>,
    ) -> Result<ExpireResult> {
        let mut keep: BTreeSet<i64> = self
            .metadata
            .ancestry()
            .iter()
            .take(keep_last.max(1))
            .map(|s| s.snapshot_id)
            .collect();
        keep.extend(self.metadata.refs.values().map(|r| r.snapshot_id));
        if let Some(cutoff) = older_than_ms {
            keep.extend(
                self.metadata
                    .snapshots
                    .iter()
                    .filter(|s| s.timestamp_ms >= cutoff)
                    .map(|s| s.snapshot_id),
            );
        }
        self.expire_all_but(&keep)
    }

    /// Expires every snapshot except the current one, those refs point to and those in
    /// `retain`; then deletes the files nothing remaining reaches. For callers (the
    /// snapshotter) that decide retention themselves.
    pub fn expire_snapshots_retaining(&mut self, retain: &BTreeSet<i64>) -> Result<ExpireResult> {
        let mut keep = retain.clone();
        keep.extend(self.metadata.current_snapshot_id);
        keep.extend(self.metadata.refs.values().map(|r| r.snapshot_id));
        self.expire_all_but(&keep)
    }

    fn expire_all_but(&mut self, keep: &BTreeSet<i64>) -> Result<ExpireResult> {
        let (kept, expired): (Vec<&Snapshot>, Vec<&Snapshot>) = self
            .metadata
            .snapshots
            .iter()
            .partition(|s| keep.contains(&s.snapshot_id));
        if expired.is_empty() {
            return Ok(ExpireResult::default());
        }
        // Must be complete: a file missed here would be deleted while still in use.
        let retained = reach(&kept, true)?;
        // Best effort: files of an earlier, interrupted expiry may already be gone.
        let doomed = reach(&expired, false)?;
        let expired_ids: Vec<i64> = expired.iter().map(|s| s.snapshot_id).collect();

        let mut next = self
            .metadata
            .successor(&self.metadata_location, self.catalog.clock().now_ms());
        next.remove_snapshots(&expired_ids);
        self.publish(next, CommitFiles::new())?;

        let table_dir = self.location()?;
        let candidates = doomed
            .metadata_files
            .iter()
            .filter(|p| !retained.metadata_files.contains(*p))
            .chain(
                doomed
                    .any_data
                    .iter()
                    .filter(|p| !retained.live_data.contains(*p)),
            );
        let mut deleted = Vec::new();
        for path in candidates {
            if !path.starts_with(&table_dir) {
                tracing::warn!(path = %path.display(), "not deleting a file outside the table directory");
                continue;
            }
            match fsutil::remove_if_exists(path) {
                Ok(true) => deleted.push(path.clone()),
                Ok(false) => {}
                // The commit stands; an undeleted file is only an orphan.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete expired file")
                }
            }
        }
        deleted.sort();
        tracing::info!(
            table = %self.identifier(),
            expired = expired_ids.len(),
            deleted_files = deleted.len(),
            "iceberg snapshots expired"
        );
        Ok(ExpireResult {
            expired_snapshot_ids: expired_ids,
            deleted_files: deleted,
        })
    }
}

/// Collects the files `snapshots` reference. With `strict`, any unreadable manifest list or
/// manifest is an error; otherwise a missing one is skipped.
pub(super) fn reach(snapshots: &[&Snapshot], strict: bool) -> Result<Reached> {
    let tolerate = |e: IcebergError| -> Result<()> {
        match e {
            IcebergError::Io { ref source, .. }
                if !strict && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            e => Err(e),
        }
    };
    let mut out = Reached::default();
    let mut seen_manifests: BTreeSet<PathBuf> = BTreeSet::new();
    for s in snapshots {
        let list_path = fsutil::from_location(&s.manifest_list)?;
        out.metadata_files.insert(list_path.clone());
        let manifests: Vec<ManifestFile> = match read_manifest_list(&list_path) {
            Ok(m) => m,
            Err(e) => {
                tolerate(e)?;
                continue;
            }
        };
        for m in manifests {
            if !seen_manifests.insert(m.manifest_path.clone()) {
                continue;
            }
            out.metadata_files.insert(m.manifest_path.clone());
            let entries = match read_manifest(&m) {
                Ok(e) => e,
                Err(e) => {
                    tolerate(e)?;
                    continue;
                }
            };
            for e in entries {
                if e.status.is_live() {
                    out.live_data.insert(e.file.path.clone());
                }
                out.any_data.insert(e.file.path);
            }
        }
    }
    Ok(out)
}
