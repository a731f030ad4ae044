//! Operations that produce a snapshot: fast append and replace (compaction).
//!
//! Owns the manifest layout of each operation:
//! - append: one new manifest with the files ADDED; the parent's manifests are carried over
//!   unchanged.
//! - replace: one manifest with the new files ADDED, and one manifest that rewrites every
//!   parent manifest holding a removed file: removed files become DELETED (new snapshot id,
//!   original sequence numbers), the others stay EXISTING. Untouched manifests are carried.
//!
//! Then both apply the same carry rules (`manifest_plan.rs`): a manifest holding only DELETED
//! entries is dropped once the snapshot that deleted them is gone, and small manifests are
//! merged by size tier under Iceberg's `commit.manifest.*` properties, so the number of
//! manifests stays logarithmic in the live files whatever the history.
//!
//! Both refuse inputs that would corrupt the table: a file already live, a file missing on
//! disk or of another size than recorded, statistics for columns the table does not have, and
//! (replace) a removed file that is not live or a rewrite that changes the row count.
//!
//! Cost: proportional to the files a commit adds and removes, not to the table's history.
//! The parent's manifest list comes from the shared index when this process wrote or read
//! it last, else it is read once (its length is bounded by merging); duplicates are
//! refused through the shared [`LiveIndex`], which reads only manifests it has not seen;
//! totals are carried from the parent's summary; a replace reads only the manifests holding
//! the files it removes. The one exception is a merge, which reads the manifests it merges:
//! size-tiered (`manifest_plan.rs`), so each live file is rewritten about `log_F` of the live
//! files times over its life, and one merge writes at most `commit.manifest.target-size-bytes`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::catalog::InSwap;
use super::commit::CommitFiles;
use super::data_file::DataFileInfo;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::live_index::{self, LiveIndex};
use super::manifest::{
    read_manifest, write_manifest, EntryStatus, ManifestContext, ManifestEntry, CONTENT_DATA,
};
use super::manifest_list::{read_manifest_list, write_manifest_list, ListContext, ManifestFile};
use super::metadata::Snapshot;
use super::parquet_io::footer_column_sizes;
use super::partition::BoundSpec;
use super::summary::{summarize, Change, Totals};
use super::table::{IcebergTable, SnapshotInfo};
use super::value::Datum;

/// A snapshot under construction: ids and the file names it will use.
pub(super) struct Draft {
    pub(super) snapshot_id: i64,
    pub(super) sequence_number: i64,
    pub(super) commit_id: uuid::Uuid,
    pub(super) files: CommitFiles,
    /// Manifests written so far (names them `<commit id>-m<N>.avro`).
    written: usize,
}

impl IcebergTable {
    /// Adds `files` in one new snapshot (operation `append`). Files whose statistics lack
    /// `column_sizes` get them from their Parquet footer.
    pub fn append(&mut self, files: &[DataFileInfo]) -> Result<SnapshotInfo> {
        if files.is_empty() {
            return Err(IcebergError::InvalidArgument(
                "append needs at least one data file".into(),
            ));
        }
        let parent = self.current_manifest_list()?;
        let files = self.with_live_index(&parent, |index| self.check_new_files(files, index))?;
        let before = self.parent_totals(&parent)?;

        let mut draft = self.draft();
        let added = self.write_added_manifest(&mut draft, &files)?;
        let summary = summarize(&Change {
            operation: "append",
            added: &files,
            removed: &[],
            added_deletes: &[],
            removed_deletes: &[],
            before,
        });
        let manifests = self.plan_manifests(&mut draft, vec![added], parent)?;
        self.commit_snapshot(draft, manifests, summary)
    }

    /// [`append`](Self::append), with `in_swap` run in the same SQLite transaction as the
    /// catalog swap that publishes the snapshot: the caller's bookkeeping (say, "these files
    /// are in the table now") commits exactly when the snapshot does. If the append fails
    /// before the swap, `in_swap` never runs.
    pub fn append_with(&mut self, files: &[DataFileInfo], in_swap: InSwap) -> Result<SnapshotInfo> {
        self.in_swap = Some(in_swap);
        let result = self.append(files);
        self.in_swap = None;
        result
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
        let parent = self.current_manifest_list()?;
        if super::fold::has_live_deletes(&parent) {
            // Rewriting a data file would bring back the rows a delete file removes from it
            // (the deletes name the old file); `fold_deletes` folds them first.
            return Err(IcebergError::InvalidArgument(format!(
                "table {} has position delete files: replace would resurrect deleted rows",
                self.identifier()
            )));
        }
        let (added, touched) = self.with_live_index(&parent, |index| {
            let mut touched = BTreeSet::new();
            for p in &removed_paths {
                let m = index
                    .manifest_of(p)
                    .ok_or_else(|| IcebergError::UnknownDataFile(p.display().to_string()))?;
                touched.insert(m.to_path_buf());
            }
            Ok((self.check_new_files(added, index)?, touched))
        })?;
        let removed_set: BTreeSet<&Path> = removed_paths.iter().map(PathBuf::as_path).collect();
        let (touched, carried): (Vec<ManifestFile>, Vec<ManifestFile>) = parent
            .into_iter()
            .partition(|m| touched.contains(&m.manifest_path));
        let mut touched_entries = Vec::new();
        for m in &touched {
            touched_entries.extend(read_manifest(m)?.into_iter().filter(|e| e.status.is_live()));
        }
        let removed_files: Vec<DataFileInfo> = touched_entries
            .iter()
            .filter(|e| removed_set.contains(e.file.path.as_path()))
            .map(|e| e.file.clone())
            .collect();
        // Compaction stays within a partition: every new file belongs to the partition of
        // some file it replaces.
        if let Some(f) = added
            .iter()
            .find(|a| !removed_files.iter().any(|r| r.partition == a.partition))
        {
            return Err(IcebergError::InvalidArgument(format!(
                "replace would add {} in partition {:?}, which none of the removed files is in",
                f.path.display(),
                f.partition
            )));
        }
        let rows_out: u64 = removed_files.iter().map(|f| f.record_count).sum();
        let rows_in: u64 = added.iter().map(|f| f.record_count).sum();
        if rows_out != rows_in {
            return Err(IcebergError::InvalidArgument(format!(
                "replace must keep the table's rows: removing {rows_out} records but adding {rows_in}"
            )));
        }
        // The parent's totals cover the touched manifests too.
        let all_parent: Vec<ManifestFile> = touched.iter().chain(&carried).cloned().collect();
        let before = self.parent_totals(&all_parent)?;

        let mut draft = self.draft();
        let mut manifests = Vec::new();
        if !added.is_empty() {
            manifests.push(self.write_added_manifest(&mut draft, &added)?);
        }
        // Entries DELETED by older snapshots are dropped: they only matter to the snapshot
        // that deleted them.
        let rewritten: Vec<ManifestEntry> = touched_entries
            .into_iter()
            .map(|e| {
                let removed = removed_set.contains(e.file.path.as_path());
                e.carried(removed, draft.snapshot_id)
            })
            .collect();
        manifests.push(self.write_new_manifest(&mut draft, &rewritten)?);

        let summary = summarize(&Change {
            operation: "replace",
            added: &added,
            removed: &removed_files,
            added_deletes: &[],
            removed_deletes: &[],
            before,
        });
        let manifests = self.plan_manifests(&mut draft, manifests, carried)?;
        self.commit_snapshot(draft, manifests, summary)
    }

    /// Which of `paths` are live data files of the current snapshot, without reading the
    /// table's manifests again (through the shared index).
    pub fn live_among<P: AsRef<Path>>(&self, paths: &[P]) -> Result<BTreeSet<PathBuf>> {
        let parent = self.current_manifest_list()?;
        self.with_live_index(&parent, |index| {
            Ok(paths
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| index.is_live(p))
                .map(Path::to_path_buf)
                .collect())
        })
    }

    /// The manifests of the current snapshot (none for an empty table), without entries:
    /// from the shared index when it remembers that list (the one this process last read
    /// or committed), else read once.
    pub(super) fn current_manifest_list(&self) -> Result<Vec<ManifestFile>> {
        let Some(s) = self.metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let index = self.catalog.live_indexes().of(&self.metadata.table_uuid);
        if let Some(list) = live_index::lock(&index).listed(&s.manifest_list) {
            return Ok(list);
        }
        let list = read_manifest_list(&fsutil::from_location(&s.manifest_list)?)?;
        live_index::lock(&index).remember_list(&s.manifest_list, list.clone());
        Ok(list)
    }

    /// Runs `f` on the shared live index of this table synced to `list` (the current
    /// manifests), under one lock: another handle on another version of the table cannot
    /// re-sync it in between.
    pub(super) fn with_live_index<T>(
        &self,
        list: &[ManifestFile],
        f: impl FnOnce(&LiveIndex) -> Result<T>,
    ) -> Result<T> {
        let index = self.catalog.live_indexes().of(&self.metadata.table_uuid);
        let mut index = live_index::lock(&index);
        index.sync(list)?;
        f(&index)
    }

    /// Totals of the current snapshot: from its summary, or counted once from `parent` (its
    /// manifests) when the summary lacks them.
    pub(super) fn parent_totals(&self, parent: &[ManifestFile]) -> Result<Totals> {
        let Some(current) = self.metadata.current_snapshot() else {
            return Ok(Totals::default());
        };
        if let Some(t) = Totals::from_summary(&current.summary) {
            return Ok(t);
        }
        let (mut live, mut deletes) = (Vec::new(), Vec::new());
        for m in parent {
            let into = if m.content == CONTENT_DATA {
                &mut live
            } else {
                &mut deletes
            };
            into.extend(
                read_manifest(m)?
                    .into_iter()
                    .filter(|e| e.status.is_live())
                    .map(|e| e.file),
            );
        }
        let (mut t, d) = (Totals::of(&live), Totals::of_deletes(&deletes));
        t.files_size += d.files_size;
        t.delete_files = d.delete_files;
        t.position_deletes = d.position_deletes;
        Ok(t)
    }

    pub(super) fn draft(&self) -> Draft {
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
            written: 0,
        }
    }

    fn manifest_context<'a>(
        &'a self,
        draft: &Draft,
        content: i32,
        partition: &'a BoundSpec,
    ) -> Result<ManifestContext<'a>> {
        Ok(ManifestContext {
            schema: self.metadata.current_schema()?,
            snapshot_id: draft.snapshot_id,
            sequence_number: draft.sequence_number,
            content,
            partition,
        })
    }

    pub(super) fn write_added_manifest(
        &self,
        draft: &mut Draft,
        files: &[DataFileInfo],
    ) -> Result<ManifestFile> {
        self.write_added(draft, files, CONTENT_DATA)
    }

    /// Writes a manifest of `content` with `files` ADDED by the draft's snapshot.
    pub(super) fn write_added(
        &self,
        draft: &mut Draft,
        files: &[DataFileInfo],
        content: i32,
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
        self.write_manifest_of(draft, &entries, content)
    }

    /// Writes one manifest of the commit (tracked for cleanup) and teaches the live index
    /// its live files.
    pub(super) fn write_new_manifest(
        &self,
        draft: &mut Draft,
        entries: &[ManifestEntry],
    ) -> Result<ManifestFile> {
        self.write_manifest_of(draft, entries, CONTENT_DATA)
    }

    pub(super) fn write_manifest_of(
        &self,
        draft: &mut Draft,
        entries: &[ManifestEntry],
        content: i32,
    ) -> Result<ManifestFile> {
        let path = self
            .metadata_dir()?
            .join(format!("{}-m{}.avro", draft.commit_id, draft.written));
        draft.written += 1;
        draft.files.track(path.clone());
        let spec = self.metadata.bound_partition_spec()?;
        let manifest = write_manifest(
            &path,
            entries,
            self.manifest_context(draft, content, &spec)?,
        )?;
        let index = self.catalog.live_indexes().of(&self.metadata.table_uuid);
        live_index::lock(&index).learn(
            &path,
            entries
                .iter()
                .filter(|e| e.status.is_live())
                .map(|e| e.file.path.clone()),
        );
        Ok(manifest)
    }

    /// Writes the manifest list and publishes the snapshot.
    pub(super) fn commit_snapshot(
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
        let list_location = snapshot.manifest_list.clone();
        let mut next = self.metadata.successor(&self.metadata_location, now);
        next.add_snapshot(snapshot);
        self.publish(next, draft.files)?;
        // The next commit starts from this list: remembered, not read back.
        let index = self.catalog.live_indexes().of(&self.metadata.table_uuid);
        live_index::lock(&index).remember_list(&list_location, manifests);
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

    /// Refuses new files that are duplicates, missing or inconsistent with the table;
    /// returns them with `column_sizes` filled in from their footers where missing.
    pub(super) fn check_new_files(
        &self,
        files: &[DataFileInfo],
        index: &LiveIndex,
    ) -> Result<Vec<DataFileInfo>> {
        let mut seen = BTreeSet::new();
        // Any schema's ids: a file written before a column was dropped keeps its statistics
        // (ids are never reused, and readers skip ids the current schema lacks).
        let field_ids: BTreeSet<i32> = self
            .metadata
            .schemas
            .iter()
            .flat_map(|s| s.fields.iter().map(|f| f.id))
            .collect();
        let spec = self.metadata.bound_partition_spec()?;
        let columns = &self.columns;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let shown = f.path.display().to_string();
            // The partition must fit the spec, and the file's bounds must lie in it (for
            // the transforms whose bounds tell).
            spec.check_bounds(&f.partition, |source_id| {
                let (Some(col), Some(s)) = (
                    columns.iter().find(|c| c.field_id == source_id),
                    f.column_stats.get(&source_id),
                ) else {
                    return (None, None);
                };
                let decode =
                    |b: &Option<Vec<u8>>| b.as_deref().and_then(|b| Datum::from_bytes(col.ty, b));
                (decode(&s.lower_bound), decode(&s.upper_bound))
            })
            .map_err(|reason| {
                IcebergError::InvalidArgument(format!(
                    "data file {shown} (partition {:?}) of table {}: {reason}",
                    f.partition,
                    self.identifier()
                ))
            })?;
            if !f.path.is_absolute() {
                return Err(IcebergError::InvalidArgument(format!(
                    "data file path {shown} is not absolute"
                )));
            }
            if index.is_live(&f.path) || !seen.insert(f.path.as_path()) {
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
            let mut f = f.clone();
            if f.column_stats.values().any(|s| s.column_size.is_none()) {
                // Readers such as pyiceberg's `inspect` expect `column_sizes` on every file.
                let sizes = footer_column_sizes(&f.path)?;
                for (id, s) in f.column_stats.iter_mut() {
                    if s.column_size.is_none() {
                        s.column_size = sizes.get(id).copied();
                    }
                }
            }
            out.push(f);
        }
        Ok(out)
    }
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

#[cfg(test)]
mod history_cost_tests {
    use super::super::catalog::SqlCatalog;
    use super::super::manifest::MANIFEST_READS;
    use super::super::manifest_list::LIST_READS;
    use super::super::parquet_io::write_parquet;
    use super::super::schema::{ColumnSpec, IcebergType};
    use super::*;

    /// (manifest lists, manifests) this thread read while `f` ran.
    fn reads(f: impl FnOnce()) -> (u64, u64) {
        let (l, m) = (
            LIST_READS.with(|n| n.get()),
            MANIFEST_READS.with(|n| n.get()),
        );
        f();
        (
            LIST_READS.with(|n| n.get()) - l,
            MANIFEST_READS.with(|n| n.get()) - m,
        )
    }

    /// The reads of an append do not grow with the table's history: a warm handle reads
    /// no manifest list (its parent's is remembered) and, besides the manifests a size-tier
    /// merge takes, no manifest; the merges of 64 appends read as many manifests late in
    /// the history as early. Counted, not timed.
    #[test]
    fn an_append_reads_no_more_after_hundreds_of_commits() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqlCatalog::open(dir.path().join("c.db"), "c").unwrap();
        let cols = vec![ColumnSpec::new(1, "id", IcebergType::Long, false)];
        let mut table =
            IcebergTable::create(&catalog, &dir.path().join("wh"), "ns", "t", &cols).unwrap();
        let window = |table: &mut IcebergTable, from: usize, n: usize| -> u64 {
            let mut manifests = 0;
            for i in from..from + n {
                let f = write_parquet(
                    &dir.path().join(format!("files/{i}.parquet")),
                    &cols,
                    &[vec![serde_json::json!(i)]],
                )
                .unwrap();
                let (lists, m) = reads(|| {
                    table.append(&[f]).unwrap();
                });
                assert_eq!(lists, 0, "append {i} read a manifest list");
                manifests += m;
                if (i + 1) % 100 == 0 {
                    table.expire_snapshots(10, None).unwrap();
                }
            }
            manifests
        };
        let first = window(&mut table, 0, 36);
        let early = window(&mut table, 36, 64);
        window(&mut table, 100, 200);
        let late = window(&mut table, 300, 64);
        assert!(
            first <= early,
            "{first} manifests read by the first appends"
        );
        assert!(
            late <= early,
            "64 appends after 300 commits read {late} manifests, after 36 only {early}"
        );
    }
}
