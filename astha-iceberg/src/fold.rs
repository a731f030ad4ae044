//! Compaction of merge-on-read tables: folding position deletes into data files.
//!
//! Owns [`IcebergTable::fold_deletes`]: one `replace` snapshot in which every live data file
//! that some position delete applies to is replaced by one new data file holding its
//! surviving rows (in file order, file after file), and every live position delete file is
//! removed. The table's rows stay the same; afterwards no delete file is live, so readers
//! read data files only. Files no delete applies to are carried untouched.
//!
//! It reports where each surviving row moved ([`Folded::rewritten`], [`Rewritten::new_position`])
//! before the swap, so a caller keeping a row index (the Iceberg mirror) updates it in the
//! swap's transaction. Memory: the rows are streamed into the new file one record batch at
//! a time; what is held is the deleted positions (16 bytes each) and the manifest entries,
//! never the rows (an earlier version held every surviving row, and one position triple per
//! row, at once).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::catalog::InSwap;
use super::data_file::DataFileInfo;
use super::error::Result;
use super::manifest::{
    read_manifest, EntryStatus, ManifestEntry, CONTENT_DATA, CONTENT_POSITION_DELETES,
};
use super::manifest_list::ManifestFile;
use super::parquet_io::{rewrite_parquet, Source};
use super::row_delta::read_position_deletes;
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
    /// Where the rows of each rewritten data file went, in the new file's order.
    pub rewritten: Vec<Rewritten>,
}

impl Folded {
    /// (old data file, old position, new position in `new_file`) of every surviving row,
    /// computed on the fly.
    pub fn moved(&self) -> impl Iterator<Item = (&Path, u64, u64)> + '_ {
        self.rewritten.iter().flat_map(|r| {
            (0..r.record_count).filter_map(move |old| {
                r.new_position(old)
                    .map(|new| (r.old_file.as_path(), old, new))
            })
        })
    }

    /// How many rows the new file holds.
    pub fn surviving_rows(&self) -> u64 {
        self.rewritten.iter().map(Rewritten::surviving).sum()
    }
}

/// One data file a fold rewrote: its surviving rows stand in the new file, in their old
/// order, from `first_new_position` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub old_file: PathBuf,
    /// Rows the old file held.
    pub record_count: u64,
    /// Its positions deleted (and so not carried), ascending.
    pub deleted: Vec<u64>,
    /// The new position of its first surviving row.
    pub first_new_position: u64,
}

impl Rewritten {
    /// Where the row at `old` of the old file stands in the new file; `None` if it was
    /// deleted (or past the end).
    pub fn new_position(&self, old: u64) -> Option<u64> {
        if old >= self.record_count {
            return None;
        }
        match self.deleted.binary_search(&old) {
            Ok(_) => None,
            Err(deleted_before) => Some(self.first_new_position + old - deleted_before as u64),
        }
    }

    /// How many of its rows survive.
    pub fn surviving(&self) -> u64 {
        self.record_count - self.deleted.len() as u64
    }
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
        let deleted = read_position_deletes(&delete_entries)?;
        // The data files some delete applies to, and where their surviving rows go.
        let mut skips: Vec<(DataFileInfo, BTreeSet<u64>)> = Vec::new();
        let mut rewritten = Vec::new();
        let mut next_position = 0u64;
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
                let r = Rewritten {
                    old_file: e.file.path.clone(),
                    record_count: e.file.record_count,
                    deleted: gone.range(..e.file.record_count).copied().collect(),
                    first_new_position: next_position,
                };
                next_position += r.surviving();
                rewritten.push(r);
                skips.push((e.file.clone(), gone));
            }
        }
        drop(deleted);
        let removed: Vec<DataFileInfo> = skips.iter().map(|(f, _)| f.clone()).collect();
        let before = self.parent_totals(&parent)?;
        let mut draft = self.draft();
        let mut added = Vec::new();
        if next_position > 0 {
            draft.files.track(new_file.to_path_buf());
            let sources: Vec<Source> = skips
                .iter()
                .map(|(file, skip)| Source { file, skip })
                .collect();
            added.extend(rewrite_parquet(new_file, self.columns(), &sources)?);
        }
        drop(skips);
        let folded = Folded {
            new_file: added.first().map(|f| f.path.clone()),
            removed_files: removed.iter().map(|f| f.path.clone()).collect(),
            removed_delete_files: delete_entries.iter().map(|e| e.file.path.clone()).collect(),
            rewritten,
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
                let removed = removed_set.contains(e.file.path.as_path());
                e.carried(removed, draft.snapshot_id)
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
