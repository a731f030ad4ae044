//! Row-level changes, merge-on-read: position delete files and the row-delta commit.
//!
//! Owns the one kind of delete file this writer produces, the Iceberg v2 *position delete*
//! (pyiceberg 0.12 refuses equality deletes, DuckDB 1.5 and pyiceberg both apply position
//! deletes: docs/ICEBERG.md, "Deleting rows"): a Parquet file of `(file_path, pos)` rows,
//! field ids 2147483546 and 2147483545, sorted, naming 0-based row positions of data files.
//! [`IcebergTable::row_delta`] adds data files and deletes rows in one snapshot (Java's
//! `RowDelta`: operation `append`, `delete` or `overwrite`). It writes one delete file per
//! commit, with the full smallest and largest target locations as the `file_path` bounds
//! (so readers skip it for data files outside them); the delete manifest has
//! `content` 1 and its entries inherit the snapshot's sequence number, so the deletes apply
//! to data files of that sequence number or older (a row added by the same commit is never
//! deleted by it: the caller leaves such rows out of the data file instead).
//!
//! It refuses deletes it can check are wrong: a target that is not a live data file of the
//! table, a position at or past the file's record count, a position named twice. A position
//! deleted by an earlier commit is not checked (that would read every delete file): the
//! caller must not delete a row twice. [`IcebergTable::read_rows`] applies the deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::catalog::InSwap;
use super::data_file::DataFileInfo;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::manifest::{read_manifest, ManifestEntry, CONTENT_DATA, CONTENT_POSITION_DELETES};
use super::parquet_io::{read_parquet_rows, write_parquet};
use super::schema::{ColumnSpec, IcebergType};
use super::summary::{summarize, Change};
use super::table::{IcebergTable, SnapshotInfo};

/// Field id of `file_path` in a position delete file (reserved by the spec).
pub const DELETE_FILE_PATH_FIELD_ID: i32 = 2147483546;
/// Field id of `pos` in a position delete file (reserved by the spec).
pub const DELETE_POS_FIELD_ID: i32 = 2147483545;

/// The deletion of row `pos` (0-based, in file order) of the data file at `data_file`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositionDelete {
    /// Absolute path (or `file://` location) of a live data file of the table.
    pub data_file: PathBuf,
    pub pos: u64,
}

pub(super) fn delete_columns() -> [ColumnSpec; 2] {
    [
        ColumnSpec::new(
            DELETE_FILE_PATH_FIELD_ID,
            "file_path",
            IcebergType::String,
            true,
        ),
        ColumnSpec::new(DELETE_POS_FIELD_ID, "pos", IcebergType::Long, true),
    ]
}

impl IcebergTable {
    /// Adds the data files `added` and deletes the rows `deletes` of live data files in one
    /// snapshot. Either may be empty, not both.
    pub fn row_delta(
        &mut self,
        added: &[DataFileInfo],
        deletes: &[PositionDelete],
    ) -> Result<SnapshotInfo> {
        if added.is_empty() && deletes.is_empty() {
            return Err(IcebergError::InvalidArgument(
                "row delta needs a data file or a delete".into(),
            ));
        }
        if !deletes.is_empty() && !self.partition_spec()?.is_unpartitioned() {
            // A delete file would need the partition of the files it targets; not written.
            return Err(IcebergError::Unsupported {
                location: self.metadata.location.clone(),
                reason: "position deletes on a partitioned table are not supported".into(),
            });
        }
        // Group by target, sorted by position; refuse duplicates.
        let mut by_file: BTreeMap<PathBuf, BTreeSet<u64>> = BTreeMap::new();
        for d in deletes {
            let path = fsutil::from_location(&d.data_file.to_string_lossy())?;
            if !by_file.entry(path.clone()).or_default().insert(d.pos) {
                return Err(IcebergError::InvalidArgument(format!(
                    "row {} of {} is deleted twice",
                    d.pos,
                    path.display()
                )));
            }
        }
        let parent = self.current_manifest_list()?;
        let (added, touched) = self.with_live_index(&parent, |index| {
            let mut touched = BTreeSet::new();
            for p in by_file.keys() {
                let m = index
                    .manifest_of(p)
                    .ok_or_else(|| IcebergError::UnknownDataFile(p.display().to_string()))?;
                touched.insert(m.to_path_buf());
            }
            Ok((self.check_new_files(added, index)?, touched))
        })?;
        // Each target must be a live *data* file, and each position inside it.
        let mut record_counts: BTreeMap<PathBuf, u64> = BTreeMap::new();
        for m in parent.iter().filter(|m| touched.contains(&m.manifest_path)) {
            if m.content != CONTENT_DATA {
                continue;
            }
            for e in read_manifest(m)?.into_iter().filter(|e| e.status.is_live()) {
                if by_file.contains_key(&e.file.path) {
                    record_counts.insert(e.file.path, e.file.record_count);
                }
            }
        }
        for (path, positions) in &by_file {
            let shown = path.display().to_string();
            let rows = *record_counts
                .get(path)
                .ok_or(IcebergError::UnknownDataFile(shown.clone()))?;
            if let Some(&last) = positions.iter().next_back().filter(|p| **p >= rows) {
                return Err(IcebergError::InvalidArgument(format!(
                    "row {last} of {shown} is deleted but the file has {rows} rows"
                )));
            }
        }
        let before = self.parent_totals(&parent)?;

        let mut draft = self.draft();
        let mut delete_files = Vec::with_capacity(1);
        if !by_file.is_empty() {
            let file = self
                .data_dir()?
                .join(format!("{}-deletes.parquet", draft.commit_id));
            draft.files.track(file.clone());
            delete_files.push(write_delete_file(&file, &by_file)?);
        }

        let mut manifests = Vec::new();
        if !added.is_empty() {
            manifests.push(self.write_added_manifest(&mut draft, &added)?);
        }
        if !delete_files.is_empty() {
            manifests.push(self.write_added(
                &mut draft,
                &delete_files,
                CONTENT_POSITION_DELETES,
            )?);
        }
        let operation = match (added.is_empty(), delete_files.is_empty()) {
            (false, true) => "append",
            (true, false) => "delete",
            _ => "overwrite",
        };
        let summary = summarize(&Change {
            operation,
            added: &added,
            removed: &[],
            added_deletes: &delete_files,
            removed_deletes: &[],
            before,
        });
        let manifests = self.plan_manifests(&mut draft, manifests, parent)?;
        self.commit_snapshot(draft, manifests, summary)
    }

    /// [`row_delta`](Self::row_delta), with `in_swap` run in the same SQLite transaction as
    /// the catalog swap that publishes the snapshot (see `append_with`).
    pub fn row_delta_with(
        &mut self,
        added: &[DataFileInfo],
        deletes: &[PositionDelete],
        in_swap: InSwap,
    ) -> Result<SnapshotInfo> {
        self.in_swap = Some(in_swap);
        let result = self.row_delta(added, deletes);
        self.in_swap = None;
        result
    }

    /// The rows of snapshot `snapshot_id`, its position deletes applied, in file order.
    pub(super) fn live_rows(&self, snapshot_id: i64) -> Result<Vec<Vec<Value>>> {
        let manifests = self.entries_at(snapshot_id)?;
        // Data file -> (sequence number of the delete file, deleted position).
        let deleted = read_position_deletes(
            manifests
                .iter()
                .filter(|(m, _)| m.content == CONTENT_POSITION_DELETES)
                .flat_map(|(_, entries)| entries.iter().filter(|e| e.status.is_live())),
        )?;
        let mut rows = Vec::new();
        for (m, entries) in &manifests {
            if m.content != CONTENT_DATA {
                continue;
            }
            for e in entries.iter().filter(|e| e.status.is_live()) {
                let gone: BTreeSet<u64> = deleted
                    .get(&e.file.location())
                    .into_iter()
                    .flatten()
                    .filter(|(seq, _)| *seq >= e.sequence_number)
                    .map(|(_, pos)| *pos)
                    .collect();
                let file_rows = read_parquet_rows(&e.file.path, self.columns())?;
                rows.extend(
                    file_rows
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !gone.contains(&(*i as u64)))
                        .map(|(_, r)| r),
                );
            }
        }
        Ok(rows)
    }
}

/// Writes the position delete file at `file` deleting `deletes` (data file -> positions),
/// sorted by location then position as the spec asks, with the smallest and largest
/// location as the `file_path` bounds, never truncated: a reader compares them with a data
/// file's location to skip the delete file (pyiceberg targets it at one data file when
/// they are equal).
fn write_delete_file(
    file: &Path,
    deletes: &BTreeMap<PathBuf, BTreeSet<u64>>,
) -> Result<DataFileInfo> {
    let mut located: Vec<(String, &BTreeSet<u64>)> = deletes
        .iter()
        .map(|(path, positions)| (fsutil::to_location(path), positions))
        .collect();
    located.sort();
    let rows: Vec<Vec<Value>> = located
        .iter()
        .flat_map(|(location, positions)| {
            positions
                .iter()
                .map(move |p| vec![Value::String(location.clone()), Value::from(*p)])
        })
        .collect();
    let mut info = write_parquet(file, &delete_columns(), &rows)?;
    if let Some(stats) = info.column_stats.get_mut(&DELETE_FILE_PATH_FIELD_ID) {
        stats.lower_bound = located.first().map(|(l, _)| l.clone().into_bytes());
        stats.upper_bound = located.last().map(|(l, _)| l.clone().into_bytes());
    }
    Ok(info)
}

/// The positions the position delete files of `entries` delete: data file location ->
/// (the delete file's sequence number, position), in file order.
pub(super) fn read_position_deletes<'e>(
    entries: impl IntoIterator<Item = &'e ManifestEntry>,
) -> Result<BTreeMap<String, Vec<(i64, u64)>>> {
    let mut deleted: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for e in entries {
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
    Ok(deleted)
}
