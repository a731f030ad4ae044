//! Snapshot summaries: the counters Iceberg writers put next to `operation`.
//!
//! Owns the key names (as the Java implementation spells them) and the arithmetic. Totals are
//! carried: the parent's totals plus what the commit added, minus what it removed, so a
//! commit never reads the table's other files to count them. A parent without totals (written
//! by another engine, say) is counted once from its manifests by the caller
//! ([`Totals::from_summary`] says when that is needed).

use std::collections::BTreeMap;

use super::data_file::DataFileInfo;

/// Data files added and removed by one snapshot, and the totals before it.
pub struct Change<'a> {
    pub operation: &'a str,
    pub added: &'a [DataFileInfo],
    pub removed: &'a [DataFileInfo],
    /// Position delete files added (each record is one deleted row).
    pub added_deletes: &'a [DataFileInfo],
    /// Position delete files removed (folded into data files by compaction).
    pub removed_deletes: &'a [DataFileInfo],
    /// Totals of the parent snapshot (zero for the first snapshot).
    pub before: Totals,
}

/// What a snapshot's live files add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    /// Data and delete files, as Java counts `total-files-size`.
    pub files_size: u64,
    pub data_files: u64,
    pub delete_files: u64,
    pub position_deletes: u64,
}

impl Totals {
    /// The totals a snapshot summary reports, if it reports all three.
    pub fn from_summary(summary: &BTreeMap<String, String>) -> Option<Totals> {
        let get = |k: &str| summary.get(k)?.parse::<u64>().ok();
        Some(Totals {
            records: get(TOTAL_RECORDS)?,
            files_size: get(TOTAL_FILES_SIZE)?,
            data_files: get(TOTAL_DATA_FILES)?,
            // Summaries of tables without delete files may leave these out.
            delete_files: get(TOTAL_DELETE_FILES).unwrap_or(0),
            position_deletes: get(TOTAL_POSITION_DELETES).unwrap_or(0),
        })
    }

    /// The totals of data files `files`.
    pub fn of<'a>(files: impl IntoIterator<Item = &'a DataFileInfo>) -> Totals {
        let mut t = Totals::default();
        for f in files {
            t.records += f.record_count;
            t.files_size += f.file_size_in_bytes;
            t.data_files += 1;
        }
        t
    }

    /// The totals of position delete files `files`.
    pub fn of_deletes<'a>(files: impl IntoIterator<Item = &'a DataFileInfo>) -> Totals {
        let mut t = Totals::default();
        for f in files {
            t.position_deletes += f.record_count;
            t.files_size += f.file_size_in_bytes;
            t.delete_files += 1;
        }
        t
    }
}

const TOTAL_RECORDS: &str = "total-records";
const TOTAL_FILES_SIZE: &str = "total-files-size";
const TOTAL_DATA_FILES: &str = "total-data-files";
const TOTAL_DELETE_FILES: &str = "total-delete-files";
const TOTAL_POSITION_DELETES: &str = "total-position-deletes";

/// The summary map of a snapshot, `operation` included.
pub fn summarize(change: &Change<'_>) -> BTreeMap<String, String> {
    let records = |files: &[DataFileInfo]| files.iter().map(|f| f.record_count).sum::<u64>();
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        s.insert(k.to_string(), v.to_string());
    };
    if !change.added.is_empty() {
        put("added-data-files", change.added.len() as u64);
        put("added-records", records(change.added));
    }
    if !change.removed.is_empty() {
        put("deleted-data-files", change.removed.len() as u64);
        put("deleted-records", records(change.removed));
    }
    let deletes = Totals::of_deletes(change.added_deletes);
    let gone = Totals::of_deletes(change.removed_deletes);
    if !change.removed_deletes.is_empty() {
        put("removed-delete-files", gone.delete_files);
        put("removed-position-delete-files", gone.delete_files);
        put("removed-position-deletes", gone.position_deletes);
    }
    if !change.added_deletes.is_empty() {
        put("added-delete-files", deletes.delete_files);
        put("added-position-delete-files", deletes.delete_files);
        put("added-position-deletes", deletes.position_deletes);
    }
    if !change.added.is_empty()
        || !change.removed.is_empty()
        || !change.added_deletes.is_empty()
        || !change.removed_deletes.is_empty()
    {
        // Unpartitioned: every change touches the one partition.
        put("changed-partition-count", 1);
    }
    let (mut added, mut removed) = (Totals::of(change.added), Totals::of(change.removed));
    if !change.added.is_empty() || !change.added_deletes.is_empty() {
        // Java's `added-files-size` counts data and delete files.
        put("added-files-size", added.files_size + deletes.files_size);
    }
    added.files_size += deletes.files_size;
    if !change.removed.is_empty() || !change.removed_deletes.is_empty() {
        put("removed-files-size", removed.files_size + gone.files_size);
    }
    removed.files_size += gone.files_size;
    let after = |before: u64, plus: u64, minus: u64| (before + plus).saturating_sub(minus);
    let b = change.before;
    put(
        TOTAL_RECORDS,
        after(b.records, added.records, removed.records),
    );
    put(
        TOTAL_FILES_SIZE,
        after(b.files_size, added.files_size, removed.files_size),
    );
    put(
        TOTAL_DATA_FILES,
        after(b.data_files, added.data_files, removed.data_files),
    );
    put(
        TOTAL_DELETE_FILES,
        after(b.delete_files, deletes.delete_files, gone.delete_files),
    );
    put(
        TOTAL_POSITION_DELETES,
        after(
            b.position_deletes,
            deletes.position_deletes,
            gone.position_deletes,
        ),
    );
    put("total-equality-deletes", 0);
    s.insert("operation".into(), change.operation.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rows: u64, size: u64) -> DataFileInfo {
        DataFileInfo {
            path: format!("/d/{rows}-{size}").into(),
            file_size_in_bytes: size,
            record_count: rows,
            column_stats: BTreeMap::new(),
            partition: Vec::new(),
        }
    }

    #[test]
    fn replace_summary_reports_both_sides_and_totals() {
        let (a, b, m, c) = (f(2, 10), f(3, 20), f(5, 25), f(1, 5));
        let before = Totals::of([&a, &b, &c]);
        let s = summarize(&Change {
            operation: "replace",
            added: std::slice::from_ref(&m),
            removed: &[a, b],
            added_deletes: &[],
            removed_deletes: &[],
            before,
        });
        assert_eq!(Totals::from_summary(&s), Some(Totals::of([&m, &c])));
        let get = |k: &str| s[k].as_str();
        assert_eq!(get("operation"), "replace");
        assert_eq!(
            (
                get("added-data-files"),
                get("added-records"),
                get("added-files-size")
            ),
            ("1", "5", "25")
        );
        assert_eq!(
            (
                get("deleted-data-files"),
                get("deleted-records"),
                get("removed-files-size")
            ),
            ("2", "5", "30")
        );
        assert_eq!(
            (
                get("total-data-files"),
                get("total-records"),
                get("total-files-size")
            ),
            ("2", "6", "30")
        );
    }
}
