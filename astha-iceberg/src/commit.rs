//! Publishing a new table version: the only place the catalog pointer moves.
//!
//! Owns the commit protocol and its crash story. Order of writes:
//! 1. manifests and the manifest list (by the operation, through a [`CommitFiles`] guard);
//! 2. `NNNNN-<uuid>.metadata.json` under a temporary name, fsynced, renamed, directory fsynced;
//! 3. the catalog compare-and-swap from the metadata this handle was built on to the new file.
//!
//! Until step 3 succeeds the previous version stays current and readable, so a crash anywhere
//! before it only leaves unreferenced files. When the commit is known to have failed (an error
//! before the swap, or a lost swap) those files are removed; when the outcome is unknown (the
//! swap itself errored, [`IcebergError::CommitStateUnknown`]) they are kept, because they
//! might be live. [`CommitFailpoint`] lets tests stop at each step exactly as a crash would.
//! Retrying a lost swap is not done here but by the caller's loop, [`super::commit_with_retry`].

use std::path::PathBuf;

use super::error::{IcebergError, Result};
use super::fsutil;
use super::metadata::{metadata_file_name, metadata_version, TableMetadata};
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
    fn crash_at(&mut self, at: CommitFailpoint, files: &mut CommitFiles) -> Result<()> {
        if self.failpoint == Some(at) {
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
        match self.catalog.commit(
            &self.namespace,
            &self.name,
            &self.metadata_location,
            &new_location,
        ) {
            Ok(()) => {
                files.keep();
                tracing::debug!(table = %self.identifier(), metadata = %new_location, "iceberg commit published");
                self.metadata = next;
                self.metadata_location = new_location;
                Ok(())
            }
            // Definitely not committed: the guard removes the new files.
            Err(e @ (IcebergError::CommitConflict { .. } | IcebergError::NoSuchTable(_))) => Err(e),
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
}
