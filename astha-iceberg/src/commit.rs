//! Publishing a new table version: the only place the catalog pointer moves.
//!
//! Owns the commit protocol and its crash story. Order of writes:
//! 1. manifests and the manifest list (by the operation, through a [`CommitFiles`] guard),
//!    each synced under its final, unique name (nothing names them yet);
//! 2. `NNNNN-<uuid>.metadata.json` under a temporary name, fsynced, renamed, directory fsynced
//!    (which also makes step 1's names durable: they live in the same directory);
//! 3. the catalog compare-and-swap from the metadata this handle was built on to the new file,
//!    in one SQLite transaction with the caller's [`super::InSwap`] work, if any (see
//!    [`IcebergTable::append_with`]);
//! 4. after the swap, housekeeping that a crash may skip: `metadata/version-hint.text` names
//!    the new file (so readers given only the table directory, such as DuckDB's
//!    `iceberg_scan('<table dir>')` or pyiceberg's `StaticTable`, find it), and with
//!    `write.metadata.delete-after-commit.enabled` the metadata files that fell out of the
//!    `metadata-log` are deleted. A crash here leaves a stale hint (rewritten by the next
//!    commit) or orphans (`orphans.rs` finds them), never a broken table.
//!
//! Until step 3 succeeds the previous version stays current and readable, so a crash anywhere
//! before it only leaves unreferenced files. When the commit is known to have failed (an error
//! before the swap, or a lost swap) those files are removed; when the outcome is unknown (the
//! swap itself errored, [`IcebergError::CommitStateUnknown`]) they are kept, because they
//! might be live. [`CommitFailpoint`] lets tests stop at each step exactly as a crash would.
//! Retrying a lost swap is not done here but by the caller's loop, [`super::commit_with_retry`].

use std::path::PathBuf;

use std::collections::BTreeSet;

use super::catalog::SwapCrash;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::metadata::{metadata_file_name, metadata_version, TableMetadata};
use super::properties::CommitSettings;
use super::table::IcebergTable;

/// A step of the commit protocol at which a test can simulate a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailpoint {
    /// Manifests and manifest list are written; no metadata file exists yet.
    AfterManifests,
    /// The new metadata is written and synced under its temporary name, not yet renamed.
    AfterMetadataTemp,
    /// The new metadata file is in place under its final name; the catalog was not swapped.
    BeforeCatalogSwap,
    /// Inside the swap's SQLite transaction: the swap matched and the commit's
    /// [`InSwap`](super::InSwap) work ran, but the transaction never committed (rolled back,
    /// as SQLite does for a process killed there).
    InSwapTransaction,
    /// The catalog points at the new version (the commit happened); the version hint and
    /// the deletion of old metadata files (step 4), and an expiry's file deletions, are
    /// not done.
    AfterCatalogSwap,
}

/// Files a commit attempt wrote. Dropping the guard deletes them unless the commit succeeded,
/// "crashed" at a failpoint, or ended with an unknown outcome.
pub(super) struct CommitFiles {
    written: Vec<PathBuf>,
    keep: bool,
}

impl CommitFiles {
    pub(super) fn new() -> Self {
        CommitFiles {
            written: Vec::new(),
            keep: false,
        }
    }

    pub(super) fn track(&mut self, path: PathBuf) {
        self.written.push(path);
    }

    fn keep(&mut self) {
        self.keep = true;
    }

    /// Deletes `path` now if this attempt wrote it, and forgets it: a file the attempt
    /// itself superseded before committing (a manifest merged again in the same commit)
    /// would otherwise stay behind, referenced by nothing. Files not written by this
    /// attempt are left alone.
    pub(super) fn discard(&mut self, path: &std::path::Path) {
        let before = self.written.len();
        self.written.retain(|p| p != path);
        if self.written.len() < before {
            if let Err(e) = fsutil::remove_if_exists(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a superseded manifest");
            }
        }
    }
}

impl Drop for CommitFiles {
    fn drop(&mut self) {
        if !self.keep {
            for path in &self.written {
                if let Err(e) = fsutil::remove_if_exists(path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove file of a failed Iceberg commit");
                }
            }
        }
    }
}

impl IcebergTable {
    /// Fires the installed failpoint if it is `at`; the files written so far are left behind.
    pub(super) fn crash_at(&mut self, at: CommitFailpoint, files: &mut CommitFiles) -> Result<()> {
        if self.failpoint == Some(at) {
            if self.failpoint_aborts {
                std::process::abort();
            }
            self.failpoint = None;
            files.keep();
            return Err(IcebergError::InjectedFailure(at));
        }
        Ok(())
    }

    /// Publishes `next` as the new current metadata (steps 2 and 3 of the module doc).
    pub(super) fn publish(&mut self, next: TableMetadata, mut files: CommitFiles) -> Result<()> {
        self.crash_at(CommitFailpoint::AfterManifests, &mut files)?;

        let version = metadata_version(&self.metadata_location) + 1;
        let target = self.metadata_dir()?.join(metadata_file_name(version));
        let tmp = fsutil::temp_sibling(&target);
        files.track(tmp.clone());
        fsutil::write_synced(&tmp, &next.to_json())?;
        self.crash_at(CommitFailpoint::AfterMetadataTemp, &mut files)?;
        files.track(target.clone());
        fsutil::publish(&tmp, &target)?;
        self.crash_at(CommitFailpoint::BeforeCatalogSwap, &mut files)?;

        let new_location = fsutil::to_location(&target);
        let crash_in_swap = match self.failpoint {
            Some(CommitFailpoint::InSwapTransaction) if self.failpoint_aborts => SwapCrash::Abort,
            Some(CommitFailpoint::InSwapTransaction) => {
                self.failpoint = None;
                SwapCrash::Return
            }
            _ => SwapCrash::No,
        };
        match self.catalog.commit_with(
            &self.namespace,
            &self.name,
            &self.metadata_location,
            &new_location,
            self.in_swap.take(),
            crash_in_swap,
        ) {
            Ok(()) => {
                files.keep();
                tracing::debug!(table = %self.identifier(), metadata = %new_location, "iceberg commit published");
                let previous = std::mem::replace(&mut self.metadata, next);
                self.metadata_location = new_location;
                self.crash_at(CommitFailpoint::AfterCatalogSwap, &mut files)?;
                self.after_commit(&previous);
                Ok(())
            }
            // A "crash" inside the transaction: rolled back, files left as a crash leaves them.
            Err(e @ IcebergError::InjectedFailure(_)) => {
                files.keep();
                Err(e)
            }
            // Definitely not committed: the guard removes the new files.
            Err(
                e @ (IcebergError::CommitConflict { .. }
                | IcebergError::NoSuchTable(_)
                | IcebergError::SwapAborted { .. }),
            ) => Err(e),
            Err(e) => {
                // The swap may or may not have happened; a reload will tell, so keep the files.
                files.keep();
                Err(IcebergError::CommitStateUnknown {
                    table: self.identifier(),
                    metadata_location: new_location,
                    source: Box::new(e),
                })
            }
        }
    }

    /// Step 4 of the module doc. Best effort: the commit stands whatever happens here.
    fn after_commit(&self, previous: &TableMetadata) {
        let Ok(metadata_dir) = self.metadata_dir() else {
            return;
        };
        if let Err(e) = write_version_hint(&metadata_dir, &self.metadata_location) {
            tracing::warn!(table = %self.identifier(), error = %e, "could not write version-hint.text");
        }
        if !CommitSettings::from_properties(&self.metadata.properties).delete_after_commit {
            return;
        }
        let kept: BTreeSet<&str> = self
            .metadata
            .metadata_log
            .iter()
            .map(|l| l.metadata_file.as_str())
            .chain([self.metadata_location.as_str()])
            .collect();
        for entry in &previous.metadata_log {
            if kept.contains(entry.metadata_file.as_str()) {
                continue;
            }
            let Ok(path) = fsutil::from_location(&entry.metadata_file) else {
                continue;
            };
            // Only our own metadata directory: a log entry may name a file elsewhere.
            if path.parent() != Some(metadata_dir.as_path()) {
                continue;
            }
            if let Err(e) = fsutil::remove_if_exists(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete an old metadata file");
            }
        }
    }
}

/// Name of the file that points readers at the current metadata file.
pub(super) const VERSION_HINT: &str = "version-hint.text";

/// Writes `metadata/version-hint.text` with the current metadata file's name without its
/// `.metadata.json` suffix: DuckDB tries `<hint>.metadata.json` and pyiceberg reads a
/// non-numeric hint the same way. (Java's Hadoop tables write a bare version number for
/// `v<N>.metadata.json` names, which this writer does not use.)
pub(super) fn write_version_hint(metadata_dir: &std::path::Path, location: &str) -> Result<()> {
    let name = location.rsplit('/').next().unwrap_or(location);
    let stem = name.strip_suffix(".metadata.json").unwrap_or(name);
    // A hint: a crash may lose or stale it (the next commit or the orphan sweep rewrites
    // it), so it costs no sync.
    fsutil::replace_unsynced(&metadata_dir.join(VERSION_HINT), stem.as_bytes())
}
