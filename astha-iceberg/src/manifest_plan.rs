//! Which manifests a new snapshot lists: the carry rules that keep their number bounded.
//!
//! Owns two rules, applied by every snapshot-producing operation after it wrote its own
//! manifests:
//! - **Deleted entries live as long as their snapshot.** A carried manifest that holds only
//!   DELETED entries (no ADDED or EXISTING ones) is dropped once the snapshot that wrote it
//!   has been expired; while that snapshot is in the table, its deletes stay listed.
//! - **Small manifests are merged**, as Iceberg's merge append does
//!   (`commit.manifest-merge.enabled`, `commit.manifest.min-count-to-merge`,
//!   `commit.manifest.target-size-bytes`, read through `properties.rs`): the mergeable
//!   manifests, oldest first, are packed into bins of at most the target size; a bin of one
//!   stays as it is; the bin holding the commit's new manifest is merged only once it holds
//!   `min-count-to-merge` manifests; any other bin is merged into one manifest. A merged
//!   manifest keeps the commit's own files ADDED, turns every other live file EXISTING (with
//!   its sequence numbers) and drops DELETED entries. Manifests holding deletes of a snapshot
//!   still in the table are never merged, so those deletes stay where their snapshot put
//!   them.
//!
//! Position delete manifests are never merged.
//!
//! So the list holds at most about `min-count-to-merge` small manifests, plus one per
//! target size of live files, plus one per retained snapshot that deleted files. It never
//! changes what is live: merged manifests list exactly the live files of their sources.

use std::collections::{BTreeMap, BTreeSet};

use super::error::Result;
use super::manifest::{read_manifest, EntryStatus, ManifestEntry, CONTENT_DATA};
use super::manifest_list::ManifestFile;
use super::properties::CommitSettings;
use super::snapshot_ops::Draft;
use super::table::IcebergTable;

impl IcebergTable {
    /// The manifests the snapshot of `draft` lists, given those it wrote (`new`, its
    /// ADDED manifest first if it has one) and its parent's (`parent`).
    pub(super) fn plan_manifests(
        &self,
        draft: &mut Draft,
        new: Vec<ManifestFile>,
        parent: Vec<ManifestFile>,
    ) -> Result<Vec<ManifestFile>> {
        let settings = CommitSettings::from_properties(&self.metadata.properties);
        let gone = |m: &ManifestFile| self.metadata.snapshot(m.added_snapshot_id).is_none();
        let new_count = new.len();
        let all: Vec<ManifestFile> = new
            .into_iter()
            .chain(parent.into_iter().filter(|m| {
                let deleted_only = m.added_files_count == 0 && m.existing_files_count == 0;
                !(deleted_only && gone(m))
            }))
            .collect();
        if !settings.manifest_merge_enabled {
            return Ok(all);
        }
        // Delete manifests are never merged (a merged manifest holds data files only); they
        // stay as their commit wrote them, and compaction is what folds them away.
        let mergeable = |i: usize| {
            let m = &all[i];
            m.content == CONTENT_DATA && (m.deleted_files_count == 0 || (i >= new_count && gone(m)))
        };
        // The commit's ADDED manifest, if it is a merge candidate.
        let first = (new_count > 0 && all[0].added_files_count > 0 && mergeable(0)).then_some(0);

        // Oldest first (lists are newest first), packed in order.
        let target = settings.manifest_target_size_bytes;
        let mut bins: Vec<Vec<usize>> = Vec::new();
        let mut bin_bytes = 0u64;
        for i in (0..all.len()).rev().filter(|i| mergeable(*i)) {
            let len = all[i].manifest_length.max(0) as u64;
            match bins.last_mut() {
                Some(bin) if bin_bytes + len <= target => bin.push(i),
                _ => {
                    bins.push(vec![i]);
                    bin_bytes = 0;
                }
            }
            bin_bytes += len;
        }

        // Position in the list (the newest member's) -> the merged manifest; merged-away
        // positions are skipped.
        let mut merged_at: BTreeMap<usize, ManifestFile> = BTreeMap::new();
        let mut merged_away: BTreeSet<usize> = BTreeSet::new();
        for bin in bins {
            let holds_first = first.is_some_and(|f| bin.contains(&f));
            if bin.len() == 1 || (holds_first && bin.len() < settings.manifest_min_merge_count) {
                continue;
            }
            let sources: Vec<&ManifestFile> = bin.iter().map(|i| &all[*i]).collect();
            let merged = self.merge_manifests(draft, &sources)?;
            let newest = *bin.iter().min().expect("bins are never empty");
            merged_away.extend(bin.iter().copied());
            merged_at.insert(newest, merged);
        }
        if merged_at.is_empty() {
            return Ok(all);
        }
        tracing::debug!(
            table = %self.identifier(),
            merged_manifests = merged_away.len(),
            into = merged_at.len(),
            "iceberg manifests merged"
        );
        Ok(all
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| match merged_at.remove(&i) {
                Some(merged) => Some(merged),
                None if merged_away.contains(&i) => None,
                None => Some(m),
            })
            .collect())
    }

    /// Writes one manifest with the live entries of `sources` (see the module doc).
    fn merge_manifests(
        &self,
        draft: &mut Draft,
        sources: &[&ManifestFile],
    ) -> Result<ManifestFile> {
        let mut entries = Vec::new();
        for m in sources {
            for e in read_manifest(m)? {
                let status = match e.status {
                    EntryStatus::Deleted => continue,
                    EntryStatus::Added if e.snapshot_id == draft.snapshot_id => EntryStatus::Added,
                    _ => EntryStatus::Existing,
                };
                entries.push(ManifestEntry { status, ..e });
            }
        }
        self.write_new_manifest(draft, &entries)
    }
}
