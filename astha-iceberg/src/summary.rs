//! Snapshot summaries: the counters Iceberg writers put next to `operation`.
//!
//! Owns the key names (as the Java implementation spells them) and the arithmetic. Totals are
//! computed from the files actually live after the commit rather than carried from the parent
//! summary, so they stay right even after a parent written by another engine lacked them.

use std::collections::BTreeMap;

use super::data_file::DataFileInfo;

/// Data files added and removed by one snapshot, plus what is live afterwards.
pub struct Change<'a> {
    pub operation: &'a str,
    pub added: &'a [DataFileInfo],
    pub removed: &'a [DataFileInfo],
    /// Live files once the snapshot is committed.
    pub live_after: &'a [DataFileInfo],
}

/// The summary map of a snapshot, `operation` included.
pub fn summarize(change: &Change<'_>) -> BTreeMap<String, String> {
    let records = |files: &[DataFileInfo]| files.iter().map(|f| f.record_count).sum::<u64>();
    let bytes = |files: &[DataFileInfo]| files.iter().map(|f| f.file_size_in_bytes).sum::<u64>();
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: u64| {
        s.insert(k.to_string(), v.to_string());
    };
    if !change.added.is_empty() {
        put("added-data-files", change.added.len() as u64);
        put("added-records", records(change.added));
        put("added-files-size", bytes(change.added));
    }
    if !change.removed.is_empty() {
        put("deleted-data-files", change.removed.len() as u64);
        put("deleted-records", records(change.removed));
        put("removed-files-size", bytes(change.removed));
    }
    if !change.added.is_empty() || !change.removed.is_empty() {
        // Unpartitioned: every change touches the one partition.
        put("changed-partition-count", 1);
    }
    put("total-records", records(change.live_after));
    put("total-files-size", bytes(change.live_after));
    put("total-data-files", change.live_after.len() as u64);
    put("total-delete-files", 0);
    put("total-position-deletes", 0);
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
        }
    }

    #[test]
    fn replace_summary_reports_both_sides_and_totals() {
        let (a, b, m, c) = (f(2, 10), f(3, 20), f(5, 25), f(1, 5));
        let s = summarize(&Change {
            operation: "replace",
            added: std::slice::from_ref(&m),
            removed: &[a, b],
            live_after: &[m.clone(), c],
        });
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
