//! Table properties the writer honours, with the names and defaults the Java implementation
//! gives them (except `commit.manifest.min-count-to-merge`, which is the fan-out of the
//! size-tiered merge here, default 8), and the values it writes into the tables it creates.
//!
//! Owns the one list of property keys this crate reads. Reading is lenient the way Java's
//! `PropertyUtil` is: a missing or unparsable value means the default, so a table written by
//! another engine with unknown or odd properties still commits. Tables created here get the
//! values that keep them bounded on disk ([`created_table_properties`]); other engines
//! reading those tables see the same settings and behave alike.

use std::collections::BTreeMap;

/// Merge small manifests on commit (Java: `true` for merge appends).
pub const MANIFEST_MERGE_ENABLED: &str = "commit.manifest-merge.enabled";
/// The fan-out of the size-tiered merge (`manifest_plan.rs`): a tier of manifests is merged
/// once it holds this many. Java reads it as "merge the bin holding the new manifest once
/// it has this many" and defaults to 100; under tiers that default would let 99 manifests
/// sit in each tier, so the default here is 8.
pub const MANIFEST_MIN_MERGE_COUNT: &str = "commit.manifest.min-count-to-merge";
/// A manifest at or past this many bytes is never merged again, and merges are packed to
/// at most this many bytes (Java: the bin size; same default).
pub const MANIFEST_TARGET_SIZE_BYTES: &str = "commit.manifest.target-size-bytes";
/// How many previous metadata files the `metadata-log` keeps.
pub const METADATA_PREVIOUS_VERSIONS_MAX: &str = "write.metadata.previous-versions-max";
/// Delete metadata files that fall out of the `metadata-log` after a commit.
pub const METADATA_DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

const MANIFEST_MERGE_ENABLED_DEFAULT: bool = true;
/// 8 rather than Java's 100: at most 7 small manifests per tier, each live file rewritten
/// once per tier (`1 + log_8` of the live files: 5 times by 10,000 files).
const MANIFEST_MIN_MERGE_COUNT_DEFAULT: usize = 8;
const MANIFEST_TARGET_SIZE_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
const METADATA_PREVIOUS_VERSIONS_MAX_DEFAULT: usize = 100;
const METADATA_DELETE_AFTER_COMMIT_DEFAULT: bool = false;

/// The settings one commit runs with, read from the table's properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSettings {
    pub manifest_merge_enabled: bool,
    /// The merge fan-out (see [`MANIFEST_MIN_MERGE_COUNT`]).
    pub manifest_min_merge_count: usize,
    pub manifest_target_size_bytes: u64,
    /// At least 1: the previous version is always remembered.
    pub previous_versions_max: usize,
    pub delete_after_commit: bool,
}

impl CommitSettings {
    pub fn from_properties(p: &BTreeMap<String, String>) -> Self {
        fn get<T: std::str::FromStr>(p: &BTreeMap<String, String>, key: &str, default: T) -> T {
            p.get(key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        }
        CommitSettings {
            manifest_merge_enabled: get(p, MANIFEST_MERGE_ENABLED, MANIFEST_MERGE_ENABLED_DEFAULT),
            manifest_min_merge_count: get(
                p,
                MANIFEST_MIN_MERGE_COUNT,
                MANIFEST_MIN_MERGE_COUNT_DEFAULT,
            ),
            manifest_target_size_bytes: get(
                p,
                MANIFEST_TARGET_SIZE_BYTES,
                MANIFEST_TARGET_SIZE_BYTES_DEFAULT,
            ),
            previous_versions_max: get(
                p,
                METADATA_PREVIOUS_VERSIONS_MAX,
                METADATA_PREVIOUS_VERSIONS_MAX_DEFAULT,
            )
            .max(1),
            delete_after_commit: get(
                p,
                METADATA_DELETE_AFTER_COMMIT,
                METADATA_DELETE_AFTER_COMMIT_DEFAULT,
            ),
        }
    }
}

/// Properties written into a table this crate creates: old metadata files are deleted once
/// they leave the log, so the metadata directory stays bounded (Java leaves them by default).
pub fn created_table_properties() -> BTreeMap<String, String> {
    BTreeMap::from([
        (METADATA_DELETE_AFTER_COMMIT.to_string(), "true".to_string()),
        (
            METADATA_PREVIOUS_VERSIONS_MAX.to_string(),
            METADATA_PREVIOUS_VERSIONS_MAX_DEFAULT.to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_or_bad_values() {
        let d = CommitSettings::from_properties(&BTreeMap::new());
        assert!(d.manifest_merge_enabled && !d.delete_after_commit);
        assert_eq!(
            (d.manifest_min_merge_count, d.previous_versions_max),
            (8, 100)
        );
        let p = BTreeMap::from([
            (MANIFEST_MIN_MERGE_COUNT.to_string(), "oops".to_string()),
            (METADATA_PREVIOUS_VERSIONS_MAX.to_string(), "0".to_string()),
            (MANIFEST_MERGE_ENABLED.to_string(), "false".to_string()),
        ]);
        let s = CommitSettings::from_properties(&p);
        assert_eq!(s.manifest_min_merge_count, 8);
        assert_eq!(s.previous_versions_max, 1);
        assert!(!s.manifest_merge_enabled);
        let created = CommitSettings::from_properties(&created_table_properties());
        assert!(created.delete_after_commit);
    }
}
