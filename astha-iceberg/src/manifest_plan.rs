//! Which manifests a new snapshot lists: the carry rules that keep their number bounded.
//!
//! Owns two rules, applied by every snapshot-producing operation after it wrote its own
//! manifests:
//! - **Deleted entries live as long as their snapshot.** A carried manifest that holds only
//!   DELETED entries (no ADDED or EXISTING ones) is dropped once the snapshot that wrote it
//!   has been expired; while that snapshot is in the table, its deletes stay listed.
//! - **Manifests are merged by size tier** (LSM-style), under Iceberg's merge properties,
//!   read through `properties.rs`:
//!   - `commit.manifest-merge.enabled`: off, nothing is merged (as in Java).
//!   - `commit.manifest.min-count-to-merge` is the **fan-out** `F`: a manifest's tier is
//!     `floor(log_F(live entries))` (1 to F-1 live files: tier 0; F to F²-1: tier 1; ...),
//!     and a tier is merged once it holds `F` mergeable manifests. (Java merges the bin
//!     holding the new manifest once it holds this many; here every tier waits for it.)
//!   - `commit.manifest.target-size-bytes` caps a merge: a manifest at or past it is
//!     **full** and never merged again, and a tier's manifests are packed oldest first into
//!     merges of at most this many bytes (as Java packs its bins).
//!
//!   A merge of F manifests of tier `t` holds at least `F^(t+1)` live files, so it lands in
//!   a higher tier; merges cascade upward within one commit. A merged manifest keeps the
//!   commit's own files ADDED, turns every other live file EXISTING (with its sequence
//!   numbers) and drops DELETED entries. Only data manifests of one partition spec are
//!   merged together; manifests holding deletes of a snapshot still in the table are never
//!   merged, so those deletes stay where their snapshot put them. Position delete manifests
//!   are never merged.
//!
//! **The bound.** After any commit, each tier holds fewer than `F` manifests below the
//! target size, except where packing leaves manifests that cannot pair within the target
//! (two neighbours then add up to more than the target). With `n` live files, there are at
//! most `1 + log_F(n)` tiers, so the list holds at most about
//! `(F - 1) · (1 + log_F n)` small manifests, plus two per `target-size-bytes` of full
//! manifests, plus one per retained snapshot that deleted files: `O(log n)` until manifests
//! fill up, then linear in the live files with the target as the constant. It never grows
//! with the number of commits alone, and never changes what is live: merged manifests list
//! exactly the live files of their sources.
//!
//! **The cost.** Each live file is rewritten at most once per tier, `1 + log_F(n)` times
//! over its life (Java's bin packing rewrites the growing bin, so all live files, every
//! `min-count` commits). The largest single merge writes at most `target-size-bytes`; that
//! bounds the slowest commit, and the merge of tier `t` happens once every `F^(t+1)`
//! appends of one file.

use std::collections::BTreeMap;

use super::error::Result;
use super::manifest::{read_manifest, EntryStatus, ManifestEntry, CONTENT_DATA};
use super::manifest_list::ManifestFile;
use super::properties::CommitSettings;
use super::snapshot_ops::Draft;
use super::table::IcebergTable;

/// One manifest of the planned list: carried or written by this commit, and whether a merge
/// may take it.
struct Slot {
    manifest: ManifestFile,
    mergeable: bool,
}

/// The size tier of a manifest of `live` files under fan-out `fan_out` (see the module doc).
pub(super) fn tier(live: u64, fan_out: u64) -> u32 {
    let fan_out = fan_out.max(2);
    let (mut t, mut bound) = (0, fan_out);
    while live >= bound {
        t += 1;
        if bound > u64::MAX / fan_out {
            break;
        }
        bound *= fan_out;
    }
    t
}

fn live_files(m: &ManifestFile) -> u64 {
    (m.added_files_count.max(0) + m.existing_files_count.max(0)) as u64
}

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
        let mut slots: Vec<Slot> = all
            .into_iter()
            .enumerate()
            .map(|(i, m)| Slot {
                mergeable: m.content == CONTENT_DATA
                    && (m.deleted_files_count == 0 || (i >= new_count && gone(&m))),
                manifest: m,
            })
            .collect();

        let fan_out = settings.manifest_min_merge_count.max(2) as u64;
        let target = settings.manifest_target_size_bytes;
        let candidate =
            |s: &Slot| s.mergeable && (s.manifest.manifest_length.max(0) as u64) < target;
        let (mut merges, mut merged_sources) = (0usize, 0usize);
        // Tiers from the smallest up, so a merge's output can join the merge of its new tier
        // in the same commit (the cascade of the module doc).
        let mut t = 0u32;
        loop {
            // (partition spec, tier t) -> positions, oldest first (lists are newest first).
            let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            let mut higher = false;
            for (i, s) in slots.iter().enumerate().rev() {
                if !candidate(s) {
                    continue;
                }
                match tier(live_files(&s.manifest), fan_out).cmp(&t) {
                    std::cmp::Ordering::Equal => groups
                        .entry(s.manifest.partition_spec_id)
                        .or_default()
                        .push(i),
                    std::cmp::Ordering::Greater => higher = true,
                    std::cmp::Ordering::Less => {}
                }
            }
            // Position of a merge's newest source -> (merged manifest, the other sources).
            let mut done: Vec<(usize, ManifestFile, Vec<usize>)> = Vec::new();
            for members in groups.into_values() {
                if (members.len() as u64) < fan_out {
                    continue;
                }
                for pack in pack_by_size(&slots, &members, target) {
                    if pack.len() < 2 {
                        continue;
                    }
                    let sources: Vec<&ManifestFile> =
                        pack.iter().map(|i| &slots[*i].manifest).collect();
                    let merged = self.merge_manifests(draft, &sources)?;
                    let newest = *pack.iter().min().expect("packs are never empty");
                    merges += 1;
                    merged_sources += pack.len();
                    higher = true;
                    done.push((newest, merged, pack));
                }
            }
            let mut away = vec![false; slots.len()];
            for (newest, merged, pack) in done {
                for &i in &pack {
                    away[i] = i != newest;
                    // A source this commit wrote (its own new manifest, or a merge of a
                    // lower tier in this cascade) is listed by no snapshot: remove it now.
                    draft.files.discard(&slots[i].manifest.manifest_path);
                }
                slots[newest] = Slot {
                    manifest: merged,
                    mergeable: true,
                };
            }
            let mut i = 0;
            slots.retain(|_| {
                i += 1;
                !away[i - 1]
            });
            if !higher {
                break;
            }
            t += 1;
        }
        if merges > 0 {
            tracing::debug!(
                table = %self.identifier(),
                merged_manifests = merged_sources,
                into = merges,
                "iceberg manifests merged"
            );
        }
        Ok(slots.into_iter().map(|s| s.manifest).collect())
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

/// `members` (positions in `slots`, oldest first) packed in order into runs of at most
/// `target` bytes (a member alone may be its own run).
fn pack_by_size(slots: &[Slot], members: &[usize], target: u64) -> Vec<Vec<usize>> {
    let mut packs: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0u64;
    for &i in members {
        let len = slots[i].manifest.manifest_length.max(0) as u64;
        match packs.last_mut() {
            Some(pack) if bytes + len <= target => pack.push(i),
            _ => {
                packs.push(vec![i]);
                bytes = 0;
            }
        }
        bytes += len;
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::tier;

    #[test]
    fn tiers_grow_by_the_fan_out() {
        assert_eq!(
            [0, 1, 3, 4, 15, 16, 63, 64].map(|n| tier(n, 4)),
            [0, 0, 0, 1, 1, 2, 2, 3]
        );
        assert_eq!(tier(u64::MAX, 2), 63);
        assert_eq!(tier(5, 1), tier(5, 2), "a fan-out below 2 counts as 2");
    }
}
