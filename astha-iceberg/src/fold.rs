//! Compaction of merge-on-read tables: folding position deletes into data files.
//!
//! Owns [`IcebergTable::fold_deletes`]: one `replace` snapshot in which every live data file
//! that some position delete applies to is replaced by one new data file holding its
//! surviving rows (in file order, file after file), and every live position delete file is
//! removed. The table's rows stay the same; afterwards no delete file is live, so readers
//! read data files only. Files no delete applies to are carried untouched.
//!
//! It reports where each surviving row moved ([`Folded::moved`]) before the swap, so a
//! caller keeping a row index (the Iceberg mirror) updates it in the swap's transaction.
//! Memory: the surviving rows of the rewritten files are held at once (as `read_rows`
//! does); it is meant to run often enough that those stay small.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::catalog::InSwap;
use super::data_file::DataFileInfo;
use super::error::{IcebergError, Result};
use super::manifest::{
    read_manifest, EntryStatus, ManifestEntry, CONTENT_DATA, CONTENT_POSITION_DELETES,
};
use super::manifest_list::ManifestFile;
use super::parquet_io::{read_parquet_rows, write_parquet};
use super::row_delta::delete_columns;
use super::summary::{summarize, Change};
use super::table::{IcebergTable, SnapshotInfo};

/// What a fold rewrote, known before its swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The new data file (`None` when every row of the rewritten files was deleted).
    pub new_file: Option<PathBuf>,
    /// Data files replaced.
    pub removed_files: Vec<PathBuf>,
    /// Position delete files removed.
    pub removed_delete_files: Vec<PathBuf>,
    /// (old data file, old position, new position in `new_file`) per surviving row.
    pub moved: Vec<(PathBuf, u64, u64)>,
}

/// Whether a manifest list holds a live position delete file (a delete manifest whose
/// entries are all DELETED, left by a fold, does not count).
pub(super) fn has_live_deletes(list: &[ManifestFile]) -> bool {
    list.iter().any(|m| {
        m.content == CONTENT_POSITION_DELETES && m.added_files_count + m.existing_files_count > 0
    })
}

impl IcebergTable {
    /// Folds every live position delete into the data files it applies to (see the module
    /// doc), writing the new data file at `new_file`. `in_swap` gets what was folded and may
    /// return work for the swap's transaction. `None` when the table has no delete file.
    pub fn fold_deletes(
        &mut self,
        new_file: &Path,
        in_swap: impl FnOnce(&Folded) -> Option<InSwap>,
    ) -> Result<Option<(SnapshotInfo, Folded)>> {
        let parent = self.current_manifest_list()?;
        if !has_live_deletes(&parent) {
            return Ok(None);
        }
        let mut data: Vec<(ManifestFile, Vec<ManifestEntry>)> = Vec::new();
        let mut delete_entries: Vec<ManifestEntry> = Vec::new();
        for m in &parent {
            let live: Vec<ManifestEntry> = read_manifest(m)?
                .into_iter()
                .filter(|e| e.status.is_live())
                .collect();
            if m.content == CONTENT_DATA {
                data.push((m.clone(), live));
            } else {
                delete_entries.extend(live);
            }
        }
        // Data file location -> (delete sequence number, position).
        let mut deleted: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
        for e in &delete_entries {
            for row in read_parquet_rows(&e.file.path, &delete_columns())? {
                let (Some(Value::String(path)), Some(pos)) =
                    (row.first(), row.get(1).and_then(Value::as_u64))
                else {
                    return Err(IcebergError::corrupt(
                        &e.file.path,
                        "a position delete row without file_path or pos",
                    ));
                };
                deleted
                    .entry(path.clone())
                    .or_default()
                    .push((e.sequence_number, pos));
            }
        }
        // The data files some delete applies to, and their surviving rows.
        let mut rows = Vec::new();
        let mut moved = Vec::new();
        let mut removed: Vec<DataFileInfo> = Vec::new();
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        for (m, entries) in &data {
            for e in entries {
                let gone: BTreeSet<u64> = deleted
                    .get(&e.file.location())
                    .into_iter()
                    .flatten()
                    .filter(|(seq, _)| *seq >= e.sequence_number)
                    .map(|(_, pos)| *pos)
                    .collect();
                if gone.is_empty() {
                    continue;
                }
                touched.insert(m.manifest_path.clone());
                for (pos, row) in read_parquet_rows(&e.file.path, self.columns())?
                    .into_iter()
                    .enumerate()
                {
                    if !gone.contains(&(pos as u64)) {
                        moved.push((e.file.path.clone(), pos as u64, rows.len() as u64));
                        rows.push(row);
                    }
                }
                removed.push(e.file.clone());
            }
        }
        let before = self.parent_totals(&parent)?;
        let mut draft = self.draft();
        let mut added = Vec::new();
        if !rows.is_empty() {
            draft.files.track(new_file.to_path_buf());
            added.push(write_parquet(new_file, self.columns(), &rows)?);
        }
        let folded = Folded {
            new_file: added.first().map(|f| f.path.clone()),
            removed_files: removed.iter().map(|f| f.path.clone()).collect(),
            removed_delete_files: delete_entries.iter().map(|e| e.file.path.clone()).collect(),
            moved,
        };

        let mut manifests = Vec::new();
        if !added.is_empty() {
            manifests.push(self.write_added_manifest(&mut draft, &added)?);
        }
        let removed_set: BTreeSet<&Path> = removed.iter().map(|f| f.path.as_path()).collect();
        let rewritten: Vec<ManifestEntry> = data
            .iter()
            .filter(|(m, _)| touched.contains(&m.manifest_path))
            .flat_map(|(_, entries)| entries.iter().cloned())
            .map(|e| {
                if removed_set.contains(e.file.path.as_path()) {
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
                }
            })
            .collect();
        if !rewritten.is_empty() {
            manifests.push(self.write_new_manifest(&mut draft, &rewritten)?);
        }
        let gone_deletes: Vec<ManifestEntry> = delete_entries
            .iter()
            .cloned()
            .map(|e| ManifestEntry {
                status: EntryStatus::Deleted,
                snapshot_id: draft.snapshot_id,
                ..e
            })
            .collect();
        manifests.push(self.write_manifest_of(
            &mut draft,
            &gone_deletes,
            CONTENT_POSITION_DELETES,
        )?);
        let carried: Vec<ManifestFile> = parent
            .iter()
            .filter(|m| m.content == CONTENT_DATA && !touched.contains(&m.manifest_path))
            .cloned()
            .collect();
        let removed_delete_files: Vec<DataFileInfo> =
            delete_entries.iter().map(|e| e.file.clone()).collect();
        let summary = summarize(&Change {
            operation: "replace",
            added: &added,
            removed: &removed,
            added_deletes: &[],
            removed_deletes: &removed_delete_files,
            before,
        });
        let manifests = self.plan_manifests(&mut draft, manifests, carried)?;
        self.in_swap = in_swap(&folded);
        let result = self.commit_snapshot(draft, manifests, summary);
        self.in_swap = None;
        Ok(Some((result?, folded)))
    }
}
