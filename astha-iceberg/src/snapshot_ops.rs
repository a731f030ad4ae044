//! Operations that produce a snapshot: fast append and replace (compaction).
//!
//! Owns the manifest layout of each operation:
//! - append: one new manifest with the files ADDED; every manifest of the parent is carried
//!   over unchanged (a "fast append": nothing is rewritten).
//! - replace: one manifest with the new files ADDED, and one manifest that rewrites every
//!   parent manifest holding a removed file: removed files become DELETED (new snapshot id,
//!   original sequence numbers), the others stay EXISTING. Untouched manifests are carried.
//!
//! Both refuse inputs that would corrupt the table: a file already live, a file missing on
//! disk or of another size than recorded, statistics for columns the table does not have, and
//! (replace) a removed file that is not live or a rewrite that changes the row count.
//!
//! Cost: both read the current manifests (to refuse duplicates and compute exact totals), so a
//! commit's work grows with the number of manifests. Appends add one manifest each; a replace
//! folds every manifest it touches into one, so regular compaction keeps the count bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::commit::CommitFiles;
use super::data_file::DataFileInfo;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::manifest::{write_manifest, EntryStatus, ManifestContext, ManifestEntry};
use super::manifest_list::{write_manifest_list, ListContext, ManifestFile};
use super::metadata::Snapshot;
use super::summary::{summarize, Change};
use super::table::{IcebergTable, SnapshotInfo};

/// A snapshot under construction: ids and the file names it will use.
struct Draft {
    snapshot_id: i64,
    sequence_number: i64,
    commit_id: uuid::Uuid,
    files: CommitFiles,
}

impl IcebergTable {
    /// Adds `files` in one new snapshot (operation `append`).
    pub fn append(&mut self, files: &[DataFileInfo]) -> Result<SnapshotInfo> {
        if files.is_empty() {
            return Err(IcebergError::InvalidArgument(
                "append needs at least one data file".into(),
            ));
        }
        let parent = self.current_entries()?;
        let live: Vec<DataFileInfo> = live_files(&parent).cloned().collect();
        self.check_new_files(files, &live)?;

        let mut draft = self.draft();
        let added = self.write_added_manifest(&mut draft, files)?;
        let mut manifests = vec![added];
        manifests.extend(parent.into_iter().map(|(m, _)| m));

        let mut live_after = live;
        live_after.extend_from_slice(files);
        let summary = summarize(&Change {
            operation: "append",
            added: files,
            removed: &[],
            live_after: &live_after,
        });
        self.commit_snapshot(draft, manifests, summary)
    }

    /// Replaces the live files at `removed` by `added` in one snapshot (operation `replace`):
    /// the table's rows stay the same, only their files change, so the record counts on both
    /// sides must be equal.
    pub fn replace<P: AsRef<Path>>(
        &mut self,
        removed: &[P],
        added: &[DataFileInfo],
    ) -> Result<SnapshotInfo> {
        if removed.is_empty() {
            return Err(IcebergError::InvalidArgument(
                "replace needs at least one file to remove".into(),
            ));
        }
        let removed_paths = normalize_paths(removed)?;
        let parent = self.current_entries()?;
        let live: BTreeMap<&Path, &DataFileInfo> =
            live_files(&parent).map(|f| (f.path.as_path(), f)).collect();
        let mut removed_files = Vec::with_capacity(removed_paths.len());
        for p in &removed_paths {
            let f = live
                .get(p.as_path())
                .ok_or_else(|| IcebergError::UnknownDataFile(p.display().to_string()))?;
            removed_files.push((*f).clone());
        }
        let live_vec: Vec<DataFileInfo> = live.values().map(|f| (*f).clone()).collect();
        self.check_new_files(added, &live_vec)?;
        let rows_out: u64 = removed_files.iter().map(|f| f.record_count).sum();
        let rows_in: u64 = added.iter().map(|f| f.record_count).sum();
        if rows_out != rows_in {
            return Err(IcebergError::InvalidArgument(format!(
                "replace must keep the table's rows: removing {rows_out} records but adding {rows_in}"
            )));
        }

        let mut draft = self.draft();
        let mut manifests = Vec::new();
        if !added.is_empty() {
            manifests.push(self.write_added_manifest(&mut draft, added)?);
        }
        let removed_set: BTreeSet<&Path> = removed_paths.iter().map(PathBuf::as_path).collect();
        let mut rewritten = Vec::new();
        let mut carried = Vec::new();
        for (manifest, entries) in parent {
            let touched = entries
                .iter()
                .any(|e| e.status.is_live() && removed_set.contains(e.file.path.as_path()));
            if !touched {
                carried.push(manifest);
                continue;
            }
            // Entries DELETED by older snapshots are dropped: they only matter to the
            // snapshot that deleted them.
            for e in entries.into_iter().filter(|e| e.status.is_live()) {
                rewritten.push(if removed_set.contains(e.file.path.as_path()) {
                    ManifestEntry {
                        status: EntryStatus::Deleted,
                        snapshot_id: draft.snapshot_id,
                        ..e
                    }
                } else {
                    ManifestEntry {
                        status: EntryStatus::Existing,
                        ..e
                    }
                });
            }
        }
        let path =
            self.metadata_dir()?
                .join(format!("{}-m{}.avro", draft.commit_id, manifests.len()));
        draft.files.track(path.clone());
        manifests.push(write_manifest(
            &path,
            &rewritten,
            self.manifest_context(&draft)?,
        )?);
        manifests.extend(carried);

        let mut live_after: Vec<DataFileInfo> = live_vec
            .into_iter()
            .filter(|f| !removed_set.contains(f.path.as_path()))
            .collect();
        live_after.extend_from_slice(added);
        let summary = summarize(&Change {
            operation: "replace",
            added,
            removed: &removed_files,
            live_after: &live_after,
        });
        self.commit_snapshot(draft, manifests, summary)
    }

    fn draft(&self) -> Draft {
        let taken: BTreeSet<i64> = self
            .metadata
            .snapshots
            .iter()
            .map(|s| s.snapshot_id)
            .collect();
        // Positive 63-bit ids from a random UUID, as the Java implementation does.
        let snapshot_id = loop {
            let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
            let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
            if id != 0 && !taken.contains(&id) {
                break id;
            }
        };
        Draft {
            snapshot_id,
            sequence_number: self.metadata.last_sequence_number + 1,
            commit_id: uuid::Uuid::new_v4(),
            files: CommitFiles::new(),
        }
    }

    fn manifest_context<'a>(&'a self, draft: &Draft) -> Result<ManifestContext<'a>> {
        Ok(ManifestContext {
            schema: self.metadata.current_schema()?,
            snapshot_id: draft.snapshot_id,
            sequence_number: draft.sequence_number,
        })
    }

    fn write_added_manifest(
        &self,
        draft: &mut Draft,
        files: &[DataFileInfo],
    ) -> Result<ManifestFile> {
        let entries: Vec<ManifestEntry> = files
            .iter()
            .map(|f| ManifestEntry {
                status: EntryStatus::Added,
                snapshot_id: draft.snapshot_id,
                sequence_number: draft.sequence_number,
                file_sequence_number: draft.sequence_number,
                file: f.clone(),
            })
            .collect();
        let path = self
            .metadata_dir()?
            .join(format!("{}-m0.avro", draft.commit_id));
        draft.files.track(path.clone());
        write_manifest(&path, &entries, self.manifest_context(draft)?)
    }

    /// Writes the manifest list and publishes the snapshot.
    fn commit_snapshot(
        &mut self,
        mut draft: Draft,
        manifests: Vec<ManifestFile>,
        summary: BTreeMap<String, String>,
    ) -> Result<SnapshotInfo> {
        let parent_snapshot_id = self.metadata.current_snapshot_id;
        let list_path = self.metadata_dir()?.join(format!(
            "snap-{}-1-{}.avro",
            draft.snapshot_id, draft.commit_id
        ));
        draft.files.track(list_path.clone());
        let ctx = ListContext {
            snapshot_id: draft.snapshot_id,
            parent_snapshot_id,
            sequence_number: draft.sequence_number,
        };
        write_manifest_list(&list_path, &manifests, ctx)?;

        let now = self
            .catalog
            .clock()
            .now_ms()
            .max(self.metadata.last_updated_ms);
        let snapshot = Snapshot {
            snapshot_id: draft.snapshot_id,
            parent_snapshot_id,
            sequence_number: draft.sequence_number,
            timestamp_ms: now,
            manifest_list: fsutil::to_location(&list_path),
            summary,
            schema_id: Some(self.metadata.current_schema_id),
            extra: BTreeMap::new(),
        };
        let info = SnapshotInfo::from_snapshot(&snapshot);
        let mut next = self.metadata.successor(&self.metadata_location, now);
        next.add_snapshot(snapshot);
        self.publish(next, draft.files)?;
        tracing::info!(
            table = %self.identifier(),
            snapshot_id = info.snapshot_id,
            operation = %info.operation,
            added_files = info.summary_u64("added-data-files"),
            deleted_files = info.summary_u64("deleted-data-files"),
            "iceberg snapshot committed"
        );
        Ok(info)
    }

    /// Refuses new files that are duplicates, missing or inconsistent with the table.
    fn check_new_files(&self, files: &[DataFileInfo], live: &[DataFileInfo]) -> Result<()> {
        let live_paths: BTreeSet<&Path> = live.iter().map(|f| f.path.as_path()).collect();
        let mut seen = BTreeSet::new();
        let field_ids: BTreeSet<i32> = self.columns.iter().map(|c| c.field_id).collect();
        for f in files {
            let shown = f.path.display().to_string();
            if !f.path.is_absolute() {
                return Err(IcebergError::InvalidArgument(format!(
                    "data file path {shown} is not absolute"
                )));
            }
            if live_paths.contains(f.path.as_path()) || !seen.insert(f.path.as_path()) {
                return Err(IcebergError::DuplicateDataFile(shown));
            }
            let on_disk = std::fs::metadata(&f.path)
                .map_err(|e| IcebergError::io(&f.path, e))?
                .len();
            if on_disk != f.file_size_in_bytes {
                return Err(IcebergError::InvalidArgument(format!(
                    "data file {shown} is {on_disk} bytes on disk but {} bytes were recorded",
                    f.file_size_in_bytes
                )));
            }
            if let Some(id) = f.column_stats.keys().find(|id| !field_ids.contains(id)) {
                return Err(IcebergError::InvalidArgument(format!(
                    "data file {shown} has statistics for field id {id}, which table {} does not have",
                    self.identifier()
                )));
            }
        }
        Ok(())
    }
}

fn live_files(
    entries: &[(ManifestFile, Vec<ManifestEntry>)],
) -> impl Iterator<Item = &DataFileInfo> {
    entries
        .iter()
        .flat_map(|(_, es)| es)
        .filter(|e| e.status.is_live())
        .map(|e| &e.file)
}

/// Accepts plain absolute paths or `file://` locations; refuses duplicates.
fn normalize_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(paths.len());
    let mut seen = BTreeSet::new();
    for p in paths {
        let text = p.as_ref().to_string_lossy();
        let path = fsutil::from_location(&text)?;
        if !seen.insert(path.clone()) {
            return Err(IcebergError::InvalidArgument(format!(
                "{} is listed twice",
                path.display()
            )));
        }
        out.push(path);
    }
    Ok(out)
}
