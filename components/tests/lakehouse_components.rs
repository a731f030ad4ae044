//! The five lakehouse components against a real registry, a real warehouse and real change
//! events (captured by Astha's triggers and read with its log reader), driven directly
//! through the `Component` trait so that replays, crashes and races are exact.
//!
//! Every test checks outcomes against what it inserted: registry rows and counters, the
//! Iceberg table's rows read back from its Parquet files, snapshot lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use astha_actors::{Component, ComponentError};
use astha_components::compactor::CompactorConfig;
use astha_components::iceberg::{
    merge_parquet, CommitFailpoint, IcebergTable, IcebergTable as Table,
};
use astha_components::iceberg_updater::IcebergUpdaterConfig;
use astha_components::lakehouse::{data_file_info, LakehouseConfig};
use astha_components::registry::{
    self, ColumnDef, IcebergState, TableFile, TableRow, REGISTRY_TABLES,
};
use astha_components::schema_manager::SchemaManagerConfig;
use astha_components::snapshotter::{SnapshotterConfig, TableSnapshotSettings, Trigger};
use astha_components::storage_manager::StorageManagerConfig;
use astha_components::{
    Compactor, IcebergUpdater, Lakehouse, SchemaManager, Snapshotter, StorageManager,
};
use astha_core::capture::Capture;
use astha_core::log::{BatchLimits, LogReader};
use astha_core::Change;
use rusqlite::Connection;
use serde_json::{json, Value};

const DB: &str = "shop";

struct Env {
    _dir: tempfile::TempDir,
    registry: PathBuf,
    lakehouse: Lakehouse,
    reader: LogReader,
    read_to: i64,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.db");
        let lakehouse = Lakehouse::open(LakehouseConfig::new(
            &registry,
            dir.path().join("warehouse"),
        ))
        .unwrap();
        let conn = self::conn(&registry);
        let capture = Capture::new("__cdc_log");
        capture.ensure_log(&conn).unwrap();
        for t in REGISTRY_TABLES {
            capture.install(&conn, t).unwrap();
        }
        Env {
            _dir: dir,
            registry,
            lakehouse,
            reader: LogReader::new("__cdc_log"),
            read_to: 0,
        }
    }

    fn conn(&self) -> Connection {
        conn(&self.registry)
    }

    /// Changes committed since the last call.
    fn changes(&mut self) -> Vec<Change> {
        let conn = self.conn();
        let mut out = Vec::new();
        loop {
            let batch = self
                .reader
                .read(&conn, self.read_to, BatchLimits::default(), None)
                .unwrap();
            assert!(batch.malformed.is_empty());
            if batch.changes.is_empty() && batch.scanned_to <= self.read_to {
                return out;
            }
            self.read_to = batch.scanned_to;
            out.extend(batch.changes);
        }
    }

    fn create_table(&self, name: &str) -> i64 {
        registry::create_table(&self.conn(), DB, name, &columns()).unwrap()
    }

    fn table_row(&self, id: i64) -> TableRow {
        registry::table_by_id(&self.conn(), id).unwrap().unwrap()
    }

    fn files(&self, table_id: i64) -> Vec<TableFile> {
        registry::data_files(&self.conn(), table_id).unwrap()
    }

    fn iceberg(&self, name: &str) -> IcebergTable {
        IcebergTable::load(self.lakehouse.catalog(), DB, name).unwrap()
    }

    fn storage(&self) -> StorageManager {
        StorageManager::new(self.lakehouse.clone(), StorageManagerConfig::default()).unwrap()
    }

    fn updater(&self) -> IcebergUpdater {
        IcebergUpdater::new(self.lakehouse.clone(), IcebergUpdaterConfig::default()).unwrap()
    }
}

fn conn(path: &Path) -> Connection {
    astha_core::db::open(path).unwrap()
}

fn columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef {
            nullable: false,
            ..ColumnDef::new("id", "bigint")
        },
        ColumnDef::new("name", "text"),
        ColumnDef::new("amount", "double"),
        ColumnDef::new("day", "date"),
    ]
}

fn row(i: i64) -> Vec<Value> {
    vec![
        json!(i),
        if i % 5 == 4 {
            Value::Null
        } else {
            json!(format!("customer number {i:04} with a long name"))
        },
        json!(i as f64 * 0.5 - 7.0),
        json!(format!("2024-03-{:02}", 1 + i % 28)),
    ]
}

fn rows(r: std::ops::Range<i64>) -> Vec<Vec<Value>> {
    r.map(row).collect()
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// Delivers `changes` to `component` in order, as a supervisor would.
async fn deliver<C: Component>(component: &mut C, changes: &[Change]) -> Vec<ComponentError> {
    let mut errors = Vec::new();
    for c in changes {
        if let Err(e) = component.on_event(c).await {
            errors.push(e);
        }
    }
    errors
}

fn assert_counters_match_files(env: &Env, table_id: i64) {
    let t = env.table_row(table_id);
    let files = env.files(table_id);
    assert_eq!(t.file_count, files.len() as i64, "file_count");
    assert_eq!(
        t.row_count,
        files.iter().map(|f| f.row_count).sum::<i64>(),
        "row_count"
    );
    assert_eq!(
        t.total_size,
        files.iter().map(|f| f.file_size).sum::<i64>(),
        "total_size"
    );
    for f in &files {
        assert_eq!(
            std::fs::metadata(&f.file_path).unwrap().len() as i64,
            f.file_size
        );
    }
}

fn parquet_files_in(dir: &Path) -> BTreeSet<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

// ---------------------------------------------------------------- storage manager

#[test]
fn insert_writes_a_file_and_records_it_with_exact_statistics_in_one_transaction() {
    let env = Env::new();
    let id = env.create_table("orders");
    let storage = env.storage();
    let inserted = storage.insert(DB, "orders", &rows(0..10)).unwrap();
    assert!(inserted
        .path
        .starts_with(env.lakehouse.warehouse().join("shop/orders/data")));

    let files = env.files(id);
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(
        (f.id, f.row_count, f.iceberg_metadata_state),
        (inserted.file_id, 10, IcebergState::Pending)
    );
    assert_eq!(
        (
            f.file_type.as_str(),
            f.partition_path.as_str(),
            f.is_compressed
        ),
        ("parquet", "", true)
    );
    assert_eq!(f.file_path, inserted.path.to_string_lossy());
    // The checksum is the file's real SHA-256, as an independent tool computes it.
    let out = std::process::Command::new("sha256sum")
        .arg(&f.file_path)
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        f.checksum,
        format!("sha256:{}", hex.split_whitespace().next().unwrap())
    );

    // Exact min/max (not truncated like Iceberg bounds), null and value counts per column.
    let stats = registry::file_statistics(&env.conn(), &[f.id])
        .unwrap()
        .remove(&f.id)
        .unwrap();
    let by_name = |n: &str| stats.iter().find(|s| s.column_name == n).unwrap().clone();
    let id_s = by_name("id");
    assert_eq!(
        (id_s.min_value.as_deref(), id_s.max_value.as_deref()),
        (Some("0"), Some("9"))
    );
    let name = by_name("name");
    assert_eq!(
        name.min_value.as_deref(),
        Some("\"customer number 0000 with a long name\"")
    );
    assert_eq!(
        name.max_value.as_deref(),
        Some("\"customer number 0008 with a long name\"")
    );
    assert_eq!((name.null_count, name.value_count), (2, 10));
    assert_eq!(by_name("amount").min_value.as_deref(), Some("-7.0"));
    assert_eq!(by_name("day").max_value.as_deref(), Some("\"2024-03-10\""));

    assert_counters_match_files(&env, id);
    assert!(env.table_row(id).last_modified.is_some());
    let back =
        astha_components::iceberg::read_parquet_rows(&inserted.path, &env.iceberg_columns(id))
            .unwrap();
    assert_eq!(back, rows(0..10));
    assert_eq!(storage.stats().inserts, 1);
}

impl Env {
    fn iceberg_columns(&self, table_id: i64) -> Vec<astha_components::iceberg::ColumnSpec> {
        astha_components::lakehouse::iceberg_columns(&self.conn(), table_id).unwrap()
    }
}

#[test]
fn a_failed_insert_rolls_back_the_registry_and_removes_its_file() {
    let env = Env::new();
    let id = env.create_table("orders");
    let storage = env.storage();
    storage.insert(DB, "orders", &rows(0..3)).unwrap();
    let before = env.table_row(id);
    let data_dir = env.lakehouse.warehouse().join("shop/orders/data");
    let files_before = parquet_files_in(&data_dir);

    // The counters update fails after the file row and statistics were written.
    env.conn()
        .execute_batch(
            "CREATE TRIGGER fail_stats BEFORE UPDATE OF row_count ON tables
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let err = storage.insert(DB, "orders", &rows(3..6)).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(env.files(id).len(), 1, "the file row was rolled back");
    assert_eq!(env.table_row(id), before, "counters untouched");
    assert_eq!(
        parquet_files_in(&data_dir),
        files_before,
        "no orphan file, no temp file"
    );

    // A bad value is refused before any file exists; an unknown table too.
    env.conn().execute_batch("DROP TRIGGER fail_stats").unwrap();
    let mut bad = rows(0..2);
    bad[1][0] = json!("not a number");
    assert!(storage.insert(DB, "orders", &bad).is_err());
    assert!(storage.insert(DB, "nope", &rows(0..1)).is_err());
    assert_eq!(parquet_files_in(&data_dir), files_before);
    assert_eq!(storage.stats().failures, 3);
    storage.insert(DB, "orders", &rows(3..6)).unwrap();
    assert_counters_match_files(&env, id);
}

#[test]
fn concurrent_inserts_into_one_table_add_up_exactly() {
    let env = Env::new();
    let id = env.create_table("orders");
    let storage = env.storage();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                for k in 0..8 {
                    let start = (t * 8 + k) * 5;
                    storage
                        .insert(DB, "orders", &rows(start..start + 5))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let t = env.table_row(id);
    assert_eq!((t.row_count, t.file_count), (160, 32));
    assert_counters_match_files(&env, id);
}

// ---------------------------------------------------------------- schema manager

#[actix_rt::test]
async fn schema_cache_follows_table_column_and_metadata_events() {
    let mut env = Env::new();
    let mut schemas =
        SchemaManager::new(env.lakehouse.clone(), SchemaManagerConfig::default()).unwrap();
    schemas.on_refresh().await.unwrap();
    assert_eq!(schemas.stats().entries, 0);

    let id = env.create_table("orders");
    assert!(schemas.cached(id).is_none());
    assert!(deliver(&mut schemas, &env.changes()).await.is_empty());
    let cached = schemas
        .cached(id)
        .expect("cached proactively on tables INSERT");
    assert_eq!(
        cached
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "name", "amount", "day"]
    );
    assert_eq!(cached.iceberg_columns().unwrap().len(), 4);

    // A new column and a metadata change invalidate and reload from the registry.
    env.conn()
        .execute(
            "INSERT INTO table_columns (table_id, name, ordinal, data_type, field_id) VALUES (?1, 'note', 5, 'text', 5)",
            [id],
        )
        .unwrap();
    env.conn()
        .execute(
            "UPDATE table_metadata SET compression = 'snappy' WHERE table_id = ?1",
            [id],
        )
        .unwrap();
    assert!(deliver(&mut schemas, &env.changes()).await.is_empty());
    let cached = schemas.cached(id).unwrap();
    assert_eq!(cached.columns.len(), 5);
    assert_eq!(cached.metadata.as_ref().unwrap().compression, "snappy");

    // Lookups: hits from the cache, misses fall back to the registry.
    let hit = schemas.get_by_name(DB, "orders").unwrap().unwrap();
    assert_eq!(hit.table_id, id);
    let other = env.create_table("events"); // not delivered yet: a miss
    let miss = schemas.get(other).unwrap().unwrap();
    assert_eq!(miss.table, "events");
    assert!(schemas.get(424242).unwrap().is_none());
    let s = schemas.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 2, 2));
    assert!((s.hit_ratio - 1.0 / 3.0).abs() < 1e-9);
    assert!(s.approx_memory_bytes > 500, "{s:?}");

    // Table deletion removes it; replaying everything converges on the registry state.
    env.conn()
        .execute("DELETE FROM tables WHERE id = ?1", [other])
        .unwrap();
    let all = env.changes();
    assert!(deliver(&mut schemas, &all).await.is_empty());
    assert!(schemas.cached(other).is_none());
    assert!(schemas.get_by_name(DB, "events").unwrap().is_none());
    assert!(deliver(&mut schemas, &all).await.is_empty());
    assert!(schemas.cached(other).is_none());
    assert_eq!(schemas.cached(id).unwrap().columns.len(), 5);

    // A refresh rebuilds the cache from the registry.
    env.create_table("late");
    schemas.on_refresh().await.unwrap();
    assert_eq!(schemas.stats().entries, 2);

    // A table whose type Iceberg cannot represent is cached with the reason.
    registry::create_table(&env.conn(), DB, "odd", &[ColumnDef::new("x", "geometry")]).unwrap();
    assert!(deliver(&mut schemas, &env.changes()).await.is_empty());
    let odd = schemas.get_by_name(DB, "odd").unwrap().unwrap();
    assert!(odd
        .iceberg_columns()
        .unwrap_err()
        .to_string()
        .contains("geometry"));
}

// ---------------------------------------------------------------- iceberg updater

#[actix_rt::test]
async fn updater_appends_pending_files_in_one_batch_and_replays_add_nothing() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let mut updater = env.updater();
    updater.on_refresh().await.unwrap();
    let table = env.iceberg("orders");
    assert!(
        table.current_snapshot().is_none(),
        "empty table exists, readable by name"
    );

    let storage = env.storage();
    for k in 0..3 {
        storage
            .insert(DB, "orders", &rows(k * 10..k * 10 + 10))
            .unwrap();
    }
    let changes = env.changes();
    assert!(deliver(&mut updater, &changes).await.is_empty());
    let table = env.iceberg("orders");
    assert_eq!(
        table.snapshots().len(),
        1,
        "three pending files, one snapshot"
    );
    assert_eq!(
        table
            .current_snapshot()
            .unwrap()
            .summary_u64("added-data-files"),
        3
    );
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..30)));
    assert!(env
        .files(id)
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));

    // At-least-once delivery: the same changes again (and the updater's own state updates).
    let mut again = changes.clone();
    again.extend(env.changes());
    assert!(deliver(&mut updater, &again).await.is_empty());
    updater.on_refresh().await.unwrap();
    let table = env.iceberg("orders");
    assert_eq!(table.snapshots().len(), 1);
    assert_eq!(table.read_rows(None).unwrap().len(), 30);
    assert_eq!(updater.stats().files_appended, 3);
}

#[actix_rt::test]
async fn a_restart_after_a_crash_anywhere_in_a_commit_neither_loses_nor_duplicates() {
    for failpoint in [
        CommitFailpoint::AfterManifests,
        CommitFailpoint::AfterMetadataTemp,
        CommitFailpoint::BeforeCatalogSwap,
    ] {
        let mut env = Env::new();
        let id = env.create_table("orders");
        let mut updater = env.updater();
        updater.on_refresh().await.unwrap();
        let storage = env.storage();
        storage.insert(DB, "orders", &rows(0..5)).unwrap();
        assert!(deliver(&mut updater, &env.changes()).await.is_empty());

        // A crashed updater: it marked two new files processing and died inside the commit.
        storage.insert(DB, "orders", &rows(5..9)).unwrap();
        storage.insert(DB, "orders", &rows(9..12)).unwrap();
        let _undelivered = env.changes();
        let pending = registry::files_in_states(&env.conn(), id, &[IcebergState::Pending]).unwrap();
        registry::set_file_state(
            &env.conn(),
            &pending.iter().map(|f| f.id).collect::<Vec<_>>(),
            IcebergState::Processing,
        )
        .unwrap();
        let mut table = env.iceberg("orders");
        let infos = infos_of(&env, &pending, &table);
        table.set_commit_failpoint(Some(failpoint));
        assert!(table.append(&infos).is_err());
        assert_eq!(
            env.iceberg("orders").read_rows(None).unwrap().len(),
            5,
            "previous version still current"
        );

        // Restart: a new updater refreshes from the registry.
        let mut restarted = env.updater();
        restarted.on_refresh().await.unwrap();
        let table = env.iceberg("orders");
        assert_eq!(
            sorted(table.read_rows(None).unwrap()),
            sorted(rows(0..12)),
            "{failpoint:?}"
        );
        assert_eq!(restarted.stats().files_appended, 2);
        assert!(env
            .files(id)
            .iter()
            .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
    }
}

#[actix_rt::test]
async fn a_commit_that_landed_before_the_crash_is_marked_completed_not_appended_again() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let storage = env.storage();
    storage.insert(DB, "orders", &rows(0..4)).unwrap();
    storage.insert(DB, "orders", &rows(4..8)).unwrap();
    let changes = env.changes();
    let mut updater = env.updater();
    updater.on_refresh().await.unwrap(); // creates the table, appends both
                                         // Simulate "committed, crashed before marking completed": reset the states.
    let ids: Vec<i64> = env.files(id).iter().map(|f| f.id).collect();
    registry::set_file_state(&env.conn(), &ids, IcebergState::Processing).unwrap();
    let snapshots_before = env.iceberg("orders").snapshots().len();

    let mut restarted = env.updater();
    assert!(deliver(&mut restarted, &changes).await.is_empty());
    restarted.on_refresh().await.unwrap();
    let table = env.iceberg("orders");
    assert_eq!(table.snapshots().len(), snapshots_before, "no new snapshot");
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..8)));
    assert_eq!(restarted.stats().files_already_present, 2);
    assert_eq!(restarted.stats().files_appended, 0);
    assert!(env
        .files(id)
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
}

/// Exactly once with the catalog in the registry's file: the updater's own commit is
/// crashed at every step, a compaction runs before the restart (it takes `completed` files
/// only, so a file live in Iceberg but not marked would be a duplicate waiting to happen),
/// and after the restart every file is in the table exactly once. At every instant the
/// registry's `completed` set equals the table's live files: the restart never has to ask
/// the table (`files_already_present` stays 0).
/// At a crash, whatever step it hit: the registry's `completed` files are exactly the
/// table's live files, and the table holds `rows` rows.
fn assert_registry_is_the_table(
    table: &IcebergTable,
    files: &[TableFile],
    rows: usize,
    failpoint: CommitFailpoint,
) {
    let live: BTreeSet<PathBuf> = table.data_files().unwrap().into_iter().collect();
    for f in files {
        assert_eq!(
            f.iceberg_metadata_state == IcebergState::Completed,
            live.contains(Path::new(&f.file_path)),
            "{failpoint:?}: {f:?}"
        );
    }
    assert_eq!(table.read_rows(None).unwrap().len(), rows, "{failpoint:?}");
}

#[actix_rt::test]
async fn a_crash_at_every_step_of_the_updaters_commit_appends_each_file_exactly_once() {
    for failpoint in [
        CommitFailpoint::AfterManifests,
        CommitFailpoint::AfterMetadataTemp,
        CommitFailpoint::BeforeCatalogSwap,
        CommitFailpoint::InSwapTransaction,
        CommitFailpoint::AfterCatalogSwap,
    ] {
        let env = Env::new();
        assert!(env.lakehouse.catalog_in_registry());
        let id = env.create_table("orders");
        let updater = env.updater();
        insert_synced(&env, &updater, id, 0, 4); // rows 0..20, completed
        let storage = env.storage();
        storage.insert(DB, "orders", &rows(20..25)).unwrap();
        storage.insert(DB, "orders", &rows(25..30)).unwrap();
        updater.crash_next_commit_at(failpoint);
        let err = updater.sync_table_blocking(id).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        let committed = failpoint == CommitFailpoint::AfterCatalogSwap;

        // The registry and the table agree at the crash, whatever step it hit.
        let table = env.iceberg("orders");
        let expected = if committed { 30 } else { 20 };
        assert_registry_is_the_table(&table, &env.files(id), expected, failpoint);

        // A compaction between the crash and the restart.
        let compacted = small_compactor(&env, 2).compact_table_blocking(id).unwrap();
        assert!(compacted.is_some(), "{failpoint:?}");

        // Restart: a new updater refreshes from the registry.
        let mut restarted = env.updater();
        restarted.on_refresh().await.unwrap();
        let table = env.iceberg("orders");
        assert_eq!(
            sorted(table.read_rows(None).unwrap()),
            sorted(rows(0..30)),
            "{failpoint:?}: every row once"
        );
        let stats = restarted.stats();
        assert_eq!(
            (stats.files_appended, stats.files_already_present),
            (if committed { 0 } else { 2 }, 0),
            "{failpoint:?}"
        );
        assert!(env
            .files(id)
            .iter()
            .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
        assert_counters_match_files(&env, id);
        // A second restart finds nothing to do.
        let mut again = env.updater();
        again.on_refresh().await.unwrap();
        assert_eq!(again.stats().files_appended, 0);
        assert_eq!(env.iceberg("orders").read_rows(None).unwrap().len(), 30);
    }
}

/// The child side of the kill test below; does nothing unless that test started it.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var("ASTHA_KILL_CHILD_DIR") else {
        return;
    };
    let at = std::env::var("ASTHA_KILL_CHILD_AT").unwrap();
    let failpoint = KILL_STEPS
        .into_iter()
        .find(|f| format!("{f:?}") == at)
        .unwrap();
    let table_id: i64 = std::env::var("ASTHA_KILL_CHILD_TABLE")
        .unwrap()
        .parse()
        .unwrap();
    let dir = PathBuf::from(dir);
    let lakehouse = Lakehouse::open(LakehouseConfig::new(
        dir.join("registry.db"),
        dir.join("warehouse"),
    ))
    .unwrap();
    let updater = IcebergUpdater::new(lakehouse, IcebergUpdaterConfig::default()).unwrap();
    updater.abort_next_commit_at(failpoint);
    let result = updater.sync_table_blocking(table_id);
    panic!("the commit should have aborted the process at {failpoint:?}: {result:?}");
}

const KILL_STEPS: [CommitFailpoint; 5] = [
    CommitFailpoint::AfterManifests,
    CommitFailpoint::AfterMetadataTemp,
    CommitFailpoint::BeforeCatalogSwap,
    CommitFailpoint::InSwapTransaction,
    CommitFailpoint::AfterCatalogSwap,
];

/// Exactly once across a real process death: a child process runs the updater's commit
/// and aborts (SIGABRT: no destructor, no rollback, nothing flushed; inside the swap's
/// SQLite transaction for `InSwapTransaction`, which SQLite's recovery must roll back) at
/// each step; a fresh lakehouse in this process then finds the registry and the table in
/// agreement, and a restarted updater appends each file exactly once. Run for an
/// unpartitioned table and for a partitioned one (its commits write partition values and
/// per-field summaries; the child learns the spec from the registry).
#[test]
fn a_kill_at_every_step_of_the_updaters_commit_appends_each_file_exactly_once() {
    for partition_by in [None, Some(r#"["month(day)"]"#)] {
        for failpoint in KILL_STEPS {
            kill_during_commit_then_restart(failpoint, partition_by);
        }
    }
}

fn kill_during_commit_then_restart(failpoint: CommitFailpoint, partition_by: Option<&str>) {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let id = env.create_table("orders");
    if let Some(spec) = partition_by {
        env.conn()
            .execute(
                "UPDATE table_metadata SET partition_by = ?1 WHERE table_id = ?2",
                (spec, id),
            )
            .unwrap();
    }
    insert_synced(&env, &env.updater(), id, 0, 2); // rows 0..10, completed
    let storage = env.storage();
    storage.insert(DB, "orders", &rows(10..15)).unwrap();
    storage.insert(DB, "orders", &rows(15..20)).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env("ASTHA_KILL_CHILD_DIR", env._dir.path())
        .env("ASTHA_KILL_CHILD_AT", format!("{failpoint:?}"))
        .env("ASTHA_KILL_CHILD_TABLE", id.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(6), "{failpoint:?}: {status:?}");
    let committed = failpoint == CommitFailpoint::AfterCatalogSwap;

    // A new process's view: a fresh lakehouse on the same files.
    let lakehouse = Lakehouse::open(LakehouseConfig::new(
        &env.registry,
        env._dir.path().join("warehouse"),
    ))
    .unwrap();
    let table = IcebergTable::load(lakehouse.catalog(), DB, "orders").unwrap();
    let files = env.files(id);
    assert_eq!(files.len(), 4);
    let expected = if committed { 20 } else { 10 };
    assert_registry_is_the_table(&table, &files, expected, failpoint);

    let restarted =
        IcebergUpdater::new(lakehouse.clone(), IcebergUpdaterConfig::default()).unwrap();
    restarted.sync_all_blocking().unwrap();
    let table = IcebergTable::load(lakehouse.catalog(), DB, "orders").unwrap();
    assert_eq!(
        sorted(table.read_rows(None).unwrap()),
        sorted(rows(0..20)),
        "{failpoint:?}: every row once"
    );
    let stats = restarted.stats();
    assert_eq!(
        (stats.files_appended, stats.files_already_present),
        (if committed { 0 } else { 2 }, 0),
        "{failpoint:?}"
    );
    let files = env.files(id);
    assert!(files
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
    // Every live file carries the partition its registry row and its path name.
    let spec = table.partition_spec().unwrap();
    let live = table.live_data_files().unwrap();
    assert_eq!(live.len(), 4, "{failpoint:?}");
    for f in &live {
        let registered = files
            .iter()
            .find(|r| Path::new(&r.file_path) == f.path)
            .unwrap();
        let path = spec.path(&f.partition).unwrap();
        assert_eq!(path, registered.partition_path, "{failpoint:?}");
        let expected = if partition_by.is_some() {
            "day_month=2024-03"
        } else {
            ""
        };
        assert_eq!(path, expected, "{failpoint:?}");
    }
}

/// With the catalog in a file of its own the swap and the registry cannot share a
/// transaction: a crash after the swap leaves the files `processing`, and the restart finds
/// them live in the table and completes them without appending them again.
#[actix_rt::test]
async fn with_a_separate_catalog_file_a_crash_after_the_swap_is_caught_by_the_live_check() {
    let dir = tempfile::tempdir().unwrap();
    let registry_path = dir.path().join("registry.db");
    let mut config = LakehouseConfig::new(&registry_path, dir.path().join("warehouse"));
    config.catalog = Some(dir.path().join("catalog.db"));
    let lakehouse = Lakehouse::open(config).unwrap();
    assert!(!lakehouse.catalog_in_registry());
    let id = registry::create_table(&conn(&registry_path), DB, "orders", &columns()).unwrap();
    let storage = StorageManager::new(lakehouse.clone(), StorageManagerConfig::default()).unwrap();
    let updater = IcebergUpdater::new(lakehouse.clone(), IcebergUpdaterConfig::default()).unwrap();
    storage.insert(DB, "orders", &rows(0..5)).unwrap();
    storage.insert(DB, "orders", &rows(5..10)).unwrap();
    updater.crash_next_commit_at(CommitFailpoint::AfterCatalogSwap);
    assert!(updater.sync_table_blocking(id).is_err());
    let files = registry::data_files(&conn(&registry_path), id).unwrap();
    assert!(files
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Processing));

    let restarted =
        IcebergUpdater::new(lakehouse.clone(), IcebergUpdaterConfig::default()).unwrap();
    restarted.sync_all_blocking().unwrap();
    let table = IcebergTable::load(lakehouse.catalog(), DB, "orders").unwrap();
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..10)));
    let stats = restarted.stats();
    assert_eq!((stats.files_appended, stats.files_already_present), (0, 2));
}

/// `table_columns` changes (a rename, a drop, an added column) become a new Iceberg
/// schema with the registry's field ids before a file written under them is appended;
/// files written before read back by field id (renamed values kept, dropped ones gone, the
/// new column null). Reusing a dropped column's field id is refused and changes nothing.
#[actix_rt::test]
async fn column_changes_become_iceberg_schemas_and_old_files_read_back() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let mut updater = env.updater();
    updater.on_refresh().await.unwrap();
    let storage = env.storage();
    storage.insert(DB, "orders", &rows(0..5)).unwrap();
    assert!(deliver(&mut updater, &env.changes()).await.is_empty());

    env.conn()
        .execute_batch(&format!(
            "UPDATE table_columns SET name = 'customer' WHERE table_id = {id} AND name = 'name';
             DELETE FROM table_columns WHERE table_id = {id} AND name = 'day';
             INSERT INTO table_columns (table_id, name, ordinal, data_type, nullable, field_id)
             VALUES ({id}, 'note', 5, 'text', 1, 5);"
        ))
        .unwrap();
    let new_row = vec![json!(100), json!("c100"), json!(1.5), json!("hello")];
    storage
        .insert(DB, "orders", std::slice::from_ref(&new_row))
        .unwrap();
    assert!(deliver(&mut updater, &env.changes()).await.is_empty());
    assert_eq!(updater.stats().schema_updates, 1);

    let table = env.iceberg("orders");
    let shape: Vec<(i32, &str)> = table
        .columns()
        .iter()
        .map(|c| (c.field_id, c.name.as_str()))
        .collect();
    assert_eq!(
        shape,
        [(1, "id"), (2, "customer"), (3, "amount"), (5, "note")]
    );
    let mut want: Vec<Vec<Value>> = rows(0..5)
        .into_iter()
        .map(|mut r| {
            r[3] = Value::Null; // day (id 4) is gone; note (id 5) is new
            r
        })
        .collect();
    want.push(new_row);
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(want.clone()));
    assert_eq!(table.metadata().schemas.len(), 2);
    assert!(env
        .files(id)
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));

    // A column that takes the dropped column's field id back: refused, nothing changes.
    env.conn()
        .execute(
            &format!(
                "INSERT INTO table_columns (table_id, name, ordinal, data_type, nullable, field_id)
                 VALUES ({id}, 'day2', 6, 'date', 1, 4)"
            ),
            [],
        )
        .unwrap();
    let errors = deliver(&mut updater, &env.changes()).await;
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("never reused")),
        "{errors:?}"
    );
    let table = env.iceberg("orders");
    assert_eq!(table.metadata().schemas.len(), 2);
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(want));
}

#[actix_rt::test]
async fn a_file_that_can_never_be_appended_is_marked_failed_without_blocking_the_rest() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let mut updater = env.updater();
    updater.on_refresh().await.unwrap();
    let storage = env.storage();
    let lost = storage.insert(DB, "orders", &rows(0..3)).unwrap();
    storage.insert(DB, "orders", &rows(3..6)).unwrap();
    std::fs::remove_file(&lost.path).unwrap();
    let errors = deliver(&mut updater, &env.changes()).await;
    assert_eq!(errors.len(), 1);
    assert!(
        !errors[0].is_retriable(),
        "a missing file is permanent: {}",
        errors[0]
    );
    let states: Vec<IcebergState> = env
        .files(id)
        .iter()
        .map(|f| f.iceberg_metadata_state)
        .collect();
    assert_eq!(states, [IcebergState::Failed, IcebergState::Completed]);
    assert_eq!(
        sorted(env.iceberg("orders").read_rows(None).unwrap()),
        sorted(rows(3..6))
    );
}

fn infos_of(
    env: &Env,
    files: &[TableFile],
    table: &Table,
) -> Vec<astha_components::iceberg::DataFileInfo> {
    let stats =
        registry::file_statistics(&env.conn(), &files.iter().map(|f| f.id).collect::<Vec<_>>())
            .unwrap();
    files
        .iter()
        .map(|f| data_file_info(f, &stats[&f.id], table.columns()).unwrap())
        .collect()
}

// ---------------------------------------------------------------- compactor

fn small_compactor(env: &Env, min_files: usize) -> Compactor {
    Compactor::new(
        env.lakehouse.clone(),
        CompactorConfig {
            min_files,
            target_file_size: 1 << 20,
            ..CompactorConfig::default()
        },
    )
    .unwrap()
}

/// Inserts `n` files of 5 rows from `first` and syncs them into Iceberg.
fn insert_synced(env: &Env, updater: &IcebergUpdater, table_id: i64, first: i64, n: i64) {
    let storage = env.storage();
    for k in 0..n {
        let s = first + k * 5;
        storage.insert(DB, "orders", &rows(s..s + 5)).unwrap();
    }
    updater.sync_table_blocking(table_id).unwrap();
}

#[actix_rt::test]
async fn compaction_merges_small_files_and_swaps_the_registry_rows_atomically() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    let mut compactor = small_compactor(&env, 4);
    insert_synced(&env, &updater, id, 0, 3);
    // Three small files: below K = 4, nothing happens.
    assert!(deliver(&mut compactor, &env.changes()).await.is_empty());
    assert_eq!(compactor.stats().compactions, 0);

    insert_synced(&env, &updater, id, 15, 3);
    let before = env.table_row(id);
    let old_files = env.files(id);
    assert_eq!(old_files.len(), 6);
    assert!(deliver(&mut compactor, &env.changes()).await.is_empty());
    assert_eq!(compactor.stats().compactions, 1);

    let files = env.files(id);
    assert_eq!(files.len(), 1);
    let merged = &files[0];
    assert_eq!(
        (merged.row_count, merged.iceberg_metadata_state),
        (30, IcebergState::Completed)
    );
    let t = env.table_row(id);
    assert_eq!((t.row_count, t.file_count), (before.row_count, 1));
    assert_counters_match_files(&env, id);
    let stats = registry::file_statistics(&env.conn(), &[merged.id])
        .unwrap()
        .remove(&merged.id)
        .unwrap();
    let id_s = stats.iter().find(|s| s.column_name == "id").unwrap();
    assert_eq!(
        (
            id_s.min_value.as_deref(),
            id_s.max_value.as_deref(),
            id_s.value_count
        ),
        (Some("0"), Some("29"), 30)
    );
    let name_s = stats.iter().find(|s| s.column_name == "name").unwrap();
    assert_eq!(name_s.null_count, 6);
    // (Row ids are not AUTOINCREMENT: the merged row may reuse a deleted id.)
    let old_ids: BTreeSet<i64> = old_files
        .iter()
        .map(|f| f.id)
        .filter(|i| *i != merged.id)
        .collect();
    assert!(
        registry::file_statistics(&env.conn(), &old_ids.iter().copied().collect::<Vec<_>>())
            .unwrap()
            .values()
            .all(Vec::is_empty)
    );

    let table = env.iceberg("orders");
    let s = table.current_snapshot().unwrap();
    assert_eq!(
        (
            s.operation.as_str(),
            s.summary_u64("deleted-data-files"),
            s.summary_u64("added-data-files")
        ),
        ("replace", 6, 1)
    );
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..30)));
    // The replaced files stay for older snapshots (time travel) until expiry.
    assert!(old_files.iter().all(|f| Path::new(&f.file_path).exists()));
    assert_eq!(
        table
            .read_rows(Some(s.parent_snapshot_id.unwrap()))
            .unwrap()
            .len(),
        30
    );
    // The merged file's Iceberg statistics are right: a filter on the bounds keeps it.
    let live = table.live_data_files().unwrap();
    assert_eq!(
        live[0].column_stats[&1].lower_bound.as_deref(),
        Some(&0i64.to_le_bytes()[..])
    );
    assert_eq!(
        live[0].column_stats[&1].upper_bound.as_deref(),
        Some(&29i64.to_le_bytes()[..])
    );
}

#[actix_rt::test]
async fn inserts_that_race_with_a_compaction_are_kept() {
    let env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    let compactor = small_compactor(&env, 3);
    insert_synced(&env, &updater, id, 0, 4);
    let plan = compactor
        .plan_blocking(id)
        .unwrap()
        .expect("4 small files qualify");
    assert_eq!(plan.file_ids().len(), 4);

    // While the compaction is "running": new inserts, one appended, one still pending.
    insert_synced(&env, &updater, id, 100, 2);
    env.storage().insert(DB, "orders", &rows(200..205)).unwrap();

    let report = compactor.execute_blocking(&plan).unwrap().unwrap();
    assert_eq!(
        report.removed_files,
        plan.file_ids(),
        "exactly the planned files"
    );
    assert_eq!(report.rows, 20);
    updater.sync_table_blocking(id).unwrap();

    let mut expected = rows(0..20);
    expected.extend(rows(100..110));
    expected.extend(rows(200..205));
    assert_eq!(
        sorted(env.iceberg("orders").read_rows(None).unwrap()),
        sorted(expected)
    );
    let files = env.files(id);
    assert_eq!(files.len(), 4, "merged + 2 appended + 1 late");
    assert!(files
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
    assert_eq!(env.table_row(id).row_count, 35);
    assert_counters_match_files(&env, id);
}

#[test]
fn concurrent_inserts_appends_and_compactions_lose_nothing() {
    let env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    let compactor = small_compactor(&env, 3);
    let storage = env.storage();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (storage, updater) = (storage.clone(), updater.clone());
            std::thread::spawn(move || {
                for k in 0..15 {
                    let s = (w * 15 + k) * 4;
                    storage.insert(DB, "orders", &rows(s..s + 4)).unwrap();
                    updater.sync_table_blocking(id).unwrap();
                }
            })
        })
        .collect();
    let compacting = {
        let (compactor, stop) = (compactor.clone(), stop.clone());
        std::thread::spawn(move || {
            // Until the writers stop, and then until one compaction has succeeded: under
            // load the writers' appends can win every swap while they run (CI saw 5 lost
            // of 5), and a test without a compaction would prove nothing about one.
            let (mut runs, mut after_stop) = (0, 0);
            while runs == 0 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    after_stop += 1;
                    assert!(
                        after_stop < 500,
                        "no compaction succeeded after the writers stopped"
                    );
                }
                match compactor.compact_table_blocking(id) {
                    Ok(Some(_)) => runs += 1,
                    Ok(None) => std::thread::sleep(std::time::Duration::from_millis(2)),
                    Err(e) => assert!(e.is_retriable(), "{e}"),
                }
            }
            runs
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = compacting.join().unwrap();
    updater.sync_table_blocking(id).unwrap();
    println!(
        "compactions: {runs}, stats: {:?} / {:?}",
        compactor.stats(),
        updater.stats()
    );
    assert!(runs >= 1);
    assert_eq!(
        sorted(env.iceberg("orders").read_rows(None).unwrap()),
        sorted(rows(0..120))
    );
    assert_eq!(env.table_row(id).row_count, 120);
    assert_counters_match_files(&env, id);
    let live: BTreeSet<String> = env
        .iceberg("orders")
        .data_files()
        .unwrap()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let registered: BTreeSet<String> = env.files(id).into_iter().map(|f| f.file_path).collect();
    assert_eq!(
        live, registered,
        "registry and Iceberg agree on the live files"
    );
}

#[actix_rt::test]
async fn a_crash_between_the_replace_commit_and_the_registry_swap_is_reconciled() {
    let env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    insert_synced(&env, &updater, id, 0, 3);
    // The crashed compactor: merged and committed, never touched the registry.
    let mut table = env.iceberg("orders");
    let live = table.live_data_files().unwrap();
    let merged_path = table.data_dir().unwrap().join("compacted-crash.parquet");
    let merged = merge_parquet(&merged_path, table.columns(), &live).unwrap();
    let removed: Vec<PathBuf> = live.iter().map(|f| f.path.clone()).collect();
    table
        .replace(&removed, std::slice::from_ref(&merged))
        .unwrap();
    let before = env.table_row(id);

    let mut compactor = small_compactor(&env, 10);
    compactor.on_refresh().await.unwrap();
    let files = env.files(id);
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].file_path.as_str(), files[0].row_count),
        (merged_path.to_str().unwrap(), 15)
    );
    assert_eq!(files[0].iceberg_metadata_state, IcebergState::Completed);
    assert_eq!(env.table_row(id).row_count, before.row_count);
    assert_counters_match_files(&env, id);
    assert_eq!(compactor.stats().reconciled_rows, 4);
    // Idempotent.
    assert_eq!(
        compactor.reconcile_blocking(id).unwrap().added_rows.len(),
        0
    );
}

// ---------------------------------------------------------------- snapshotter

fn snapshotter(env: &Env, config: SnapshotterConfig) -> Snapshotter {
    Snapshotter::new(env.lakehouse.clone(), config).unwrap()
}

/// Seed 002: snapshot triggers are configurable per table. `orders` records after one
/// file (its own `max_files`), `items` keeps the snapshotter's three; a settings file
/// sets the entry by `"database.table"`.
#[actix_rt::test]
async fn a_tables_own_snapshot_settings_replace_the_snapshotters() {
    let mut env = Env::new();
    let orders = env.create_table("orders");
    let items = env.create_table("items");
    let updater = env.updater();
    let config: SnapshotterConfig = toml::from_str(&format!(
        "max_files = 3\nmax_bytes = 0\ninterval = \"1h\"\n\
         [tables.\"{DB}.orders\"]\nmax_files = 1\nmax_age = \"2h\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.tables[&format!("{DB}.orders")],
        TableSnapshotSettings {
            max_files: Some(1),
            max_age: Some(std::time::Duration::from_secs(7200)),
            ..TableSnapshotSettings::default()
        }
    );
    let mut snap = snapshotter(&env, config);
    insert_synced(&env, &updater, orders, 0, 1);
    insert_synced(&env, &updater, items, 0, 1);
    assert!(deliver(&mut snap, &env.changes()).await.is_empty());
    let recorded = |id| registry::live_snapshot_records(&env.conn(), id).unwrap();
    let kinds: Vec<String> = recorded(orders)
        .iter()
        .map(|r| r.row.trigger_kind.clone())
        .collect();
    assert_eq!(kinds, ["size"], "orders' own max_files = 1 did not apply");
    assert!(recorded(items).is_empty(), "items took orders' setting");
    // A table's retain_last of 0 is refused by name.
    let bad: SnapshotterConfig = toml::from_str("[tables.orders]\nretain_last = 0\n").unwrap();
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("tables.\"orders\".retain_last"), "{err}");
}

#[actix_rt::test]
async fn snapshots_are_recorded_on_size_time_and_manual_triggers() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    let long = std::time::Duration::from_secs(3600);
    let mut snap = snapshotter(
        &env,
        SnapshotterConfig {
            max_files: 3,
            max_bytes: 0,
            interval: long,
            ..SnapshotterConfig::default()
        },
    );
    // Size: two files are not enough, three are.
    insert_synced(&env, &updater, id, 0, 1);
    insert_synced(&env, &updater, id, 5, 1);
    assert!(deliver(&mut snap, &env.changes()).await.is_empty());
    assert!(registry::live_snapshot_records(&env.conn(), id)
        .unwrap()
        .is_empty());
    insert_synced(&env, &updater, id, 10, 1);
    assert!(deliver(&mut snap, &env.changes()).await.is_empty());
    let records = registry::live_snapshot_records(&env.conn(), id).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0].row;
    let current = env.iceberg("orders").current_snapshot().unwrap();
    assert_eq!(
        (
            r.snapshot_id,
            r.trigger_kind.as_str(),
            r.row_count,
            r.file_count
        ),
        (current.snapshot_id, "size", 15, 3)
    );
    assert_eq!(r.operation, "append");

    // Manual, through a request row that another process could insert.
    insert_synced(&env, &updater, id, 15, 1);
    let request = registry::request_snapshot(&env.conn(), id).unwrap();
    assert!(deliver(&mut snap, &env.changes()).await.is_empty());
    let records = registry::live_snapshot_records(&env.conn(), id).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (
            records[1].row.id,
            records[1].row.trigger_kind.as_str(),
            records[1].row.row_count
        ),
        (request, "manual", 20)
    );
    assert!(registry::snapshot_requests(&env.conn(), id)
        .unwrap()
        .is_empty());
    // The record writes came back as events: not requests, nothing happens.
    assert!(deliver(&mut snap, &env.changes()).await.is_empty());
    assert_eq!(
        registry::live_snapshot_records(&env.conn(), id)
            .unwrap()
            .len(),
        2
    );

    // Time: with a short interval the next change is recorded by the timer's pass.
    let timed = snapshotter(
        &env,
        SnapshotterConfig {
            interval: std::time::Duration::from_secs(1),
            max_files: 0,
            max_bytes: 0,
            ..SnapshotterConfig::default()
        },
    );
    insert_synced(&env, &updater, id, 20, 1);
    assert!(
        timed.maintain_blocking(id).unwrap().recorded.is_none(),
        "interval not over"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = timed.tick_blocking().unwrap();
    assert_eq!(
        out[0].recorded.as_ref().map(|r| r.trigger),
        Some(Trigger::Time)
    );
    assert_eq!(
        timed.tick_blocking().unwrap()[0].recorded,
        None,
        "no change since"
    );
    // snapshot_now on an already recorded snapshot adds no row.
    let again = timed.snapshot_now(id).await.unwrap();
    assert_eq!(again.recorded.unwrap().trigger, Trigger::Manual);
    assert_eq!(
        registry::live_snapshot_records(&env.conn(), id)
            .unwrap()
            .len(),
        3
    );
}

#[actix_rt::test]
async fn retention_expires_old_snapshots_and_deletes_only_unreferenced_files() {
    let env = Env::new();
    let id = env.create_table("orders");
    let updater = env.updater();
    let compactor = small_compactor(&env, 3);
    let keep_all = snapshotter(
        &env,
        SnapshotterConfig {
            max_files: 0,
            max_bytes: 0,
            ..SnapshotterConfig::default()
        },
    );

    insert_synced(&env, &updater, id, 0, 3);
    let first = keep_all
        .snapshot_now_blocking(id)
        .unwrap()
        .recorded
        .unwrap();
    let original_files: Vec<String> = env.files(id).into_iter().map(|f| f.file_path).collect();
    compactor.compact_table_blocking(id).unwrap().unwrap();
    insert_synced(&env, &updater, id, 15, 1);
    let second = keep_all.snapshot_now_blocking(id).unwrap();
    assert!(
        second.expired_snapshots.is_empty()
            || !second.expired_snapshots.contains(&first.snapshot_id)
    );
    insert_synced(&env, &updater, id, 20, 1);
    let third = keep_all.snapshot_now_blocking(id).unwrap();
    assert!(third.expired_records.is_empty(), "young records are kept");
    // Snapshots between records (the replace, an append) were expired; records stay.
    let table = env.iceberg("orders");
    let ids: BTreeSet<i64> = table.snapshots().iter().map(|s| s.snapshot_id).collect();
    let recorded: BTreeSet<i64> = registry::live_snapshot_records(&env.conn(), id)
        .unwrap()
        .iter()
        .map(|r| r.row.snapshot_id)
        .collect();
    assert_eq!(ids, recorded);
    // The first record still reads the original files (time travel).
    assert_eq!(
        sorted(table.read_rows(Some(first.snapshot_id)).unwrap()),
        sorted(rows(0..15))
    );
    assert!(original_files.iter().all(|p| Path::new(p).exists()));

    // Strict retention: keep only the newest record, no age allowance.
    let strict = snapshotter(
        &env,
        SnapshotterConfig {
            retain_last: 1,
            max_age: std::time::Duration::ZERO,
            max_files: 0,
            max_bytes: 0,
            ..SnapshotterConfig::default()
        },
    );
    let out = strict.maintain_blocking(id).unwrap();
    assert_eq!(out.expired_records.len(), 2);
    assert_eq!(out.expired_snapshots.len(), 2);
    let table = env.iceberg("orders");
    assert_eq!(table.snapshots().len(), 1);
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..25)));
    // The compacted-away files are gone; every live file is still there.
    assert!(original_files.iter().all(|p| !Path::new(p).exists()));
    for f in env.files(id) {
        assert!(Path::new(&f.file_path).exists());
    }
    let expired = registry::read_rows::<astha_components::registry::TableSnapshot>(
        &env.conn(),
        "table_snapshots",
        "expired = 1",
        &[],
    )
    .unwrap();
    assert_eq!(expired.len(), 2);
}

#[actix_rt::test]
async fn a_deleted_table_leaves_the_catalog_but_keeps_its_files() {
    let mut env = Env::new();
    let id = env.create_table("orders");
    let mut updater = env.updater();
    updater.on_refresh().await.unwrap();
    let inserted = env.storage().insert(DB, "orders", &rows(0..3)).unwrap();
    assert!(deliver(&mut updater, &env.changes()).await.is_empty());
    assert_eq!(env.iceberg("orders").read_rows(None).unwrap().len(), 3);
    env.conn()
        .execute("DELETE FROM tables WHERE id = ?1", [id])
        .unwrap();
    assert!(deliver(&mut updater, &env.changes()).await.is_empty());
    assert!(env
        .lakehouse
        .catalog()
        .load_metadata_location(DB, "orders")
        .unwrap()
        .is_none());
    assert!(inserted.path.exists(), "drop without purge");
}

// ---------------------------------------------------------------- configuration

#[test]
fn configs_have_documented_defaults_reject_unknown_keys_and_validate() {
    use serde_json::from_value;
    let c: CompactorConfig = from_value(json!({})).unwrap();
    assert_eq!(
        (c.min_files, c.target_file_size, c.max_input_bytes),
        (5, 64 << 20, 256 << 20)
    );
    assert!(from_value::<CompactorConfig>(json!({"min_file": 3}))
        .unwrap_err()
        .to_string()
        .contains("min_file"));
    let err = from_value::<CompactorConfig>(json!({"min_files": 1}))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: min_files must be at least 2 (got 1)"
    );

    let s: SnapshotterConfig =
        from_value(json!({"interval": "2m", "max_age": "1h", "retain_last": 3})).unwrap();
    assert_eq!(
        (
            s.interval.as_secs(),
            s.max_age.as_secs(),
            s.retain_last,
            s.max_files
        ),
        (120, 3600, 3, 100)
    );
    assert!(from_value::<SnapshotterConfig>(json!({"retain_last": 0}))
        .unwrap()
        .validate()
        .is_err());
    assert!(from_value::<SnapshotterConfig>(json!({"every": "1s"})).is_err());

    let u: IcebergUpdaterConfig = from_value(json!({})).unwrap();
    assert_eq!((u.max_files_per_commit, u.conflict_retries), (1000, 5));
    assert!(
        from_value::<IcebergUpdaterConfig>(json!({"max_files_per_commit": 0}))
            .unwrap()
            .validate()
            .is_err()
    );
    assert_eq!(
        from_value::<SchemaManagerConfig>(json!({}))
            .unwrap()
            .max_entries,
        10_000
    );
    assert!(from_value::<SchemaManagerConfig>(json!({"max_entries": 0}))
        .unwrap()
        .validate()
        .is_err());
    assert!(
        from_value::<StorageManagerConfig>(json!({"max_rows_per_insert": 0}))
            .unwrap()
            .validate()
            .is_err()
    );

    let l: LakehouseConfig = from_value(json!({"registry": "r.db", "warehouse": "w"})).unwrap();
    assert_eq!(
        (l.catalog_path(), l.catalog_name.as_str()),
        (Path::new("r.db"), "astha")
    );
    assert!(
        from_value::<LakehouseConfig>(json!({"registry": "r.db"})).is_err(),
        "warehouse is required"
    );
    assert!(from_value::<LakehouseConfig>(
        json!({"registry": "r.db", "warehouse": "w", "catalog_name": " "})
    )
    .unwrap()
    .validate()
    .is_err());
}

/// Configured subscriptions apply to the shipped components: `[subscriptions]` in the
/// file and `ASTHA_SUBSCRIPTIONS__<NAME>` replace the tables a component asks for, and a
/// configured name that no registered component has is an error that says what to do.
mod subscriptions {
    use astha_actors::{Astha, AsthaError};
    use astha_core::config::AsthaConfig;

    use super::*;

    /// The lakehouse's configuration, read as `astha demo` reads it, with `vars` as the
    /// environment.
    fn config(env: &Env, file: Option<&str>, vars: &[(&str, &str)]) -> AsthaConfig {
        let path = file.map(|text| {
            let path = env.registry.with_file_name("astha.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let database = env.registry.to_str().unwrap();
        let vars = vars.iter().copied().chain([("ASTHA_DATABASE", database)]);
        AsthaConfig::load_from_with(path.as_deref(), registry::monitor_registry, vars).unwrap()
    }

    /// Runs Astha with the compactor registered; returns the tables the compactor was
    /// given and what [`Astha::check_subscriptions`] said.
    async fn run(env: &Env, config: AsthaConfig) -> (Vec<String>, Result<(), AsthaError>) {
        let astha = Astha::new(config).unwrap();
        astha.start().unwrap();
        let compactor = Compactor::new(env.lakehouse.clone(), CompactorConfig::default()).unwrap();
        astha.register_component(Box::new(compactor)).await.unwrap();
        let tables = astha.component_info("compactor").unwrap().subscriptions;
        let checked = astha.check_subscriptions();
        astha.stop().await.unwrap();
        (tables, checked)
    }

    #[actix_rt::test]
    async fn a_component_gets_its_own_tables_when_none_are_configured() {
        let env = Env::new();
        let config = config(&env, None, &[]);
        assert_eq!(
            config.monitored_tables, REGISTRY_TABLES,
            "the lakehouse monitors its registry"
        );
        let (tables, checked) = run(&env, config).await;
        assert_eq!(tables, ["table_files"]);
        checked.unwrap();
    }

    #[actix_rt::test]
    async fn subscriptions_in_the_file_replace_the_components_own() {
        let env = Env::new();
        let config = config(
            &env,
            Some("[subscriptions]\ncompactor = [\"tables\", \"table_files\"]\n"),
            &[],
        );
        let (tables, checked) = run(&env, config).await;
        assert_eq!(tables, ["tables", "table_files"]);
        checked.unwrap();
    }

    #[actix_rt::test]
    async fn a_subscription_from_the_environment_replaces_the_components_own() {
        let env = Env::new();
        let config = config(
            &env,
            Some("[subscriptions]\ncompactor = [\"tables\"]\n"),
            &[(
                "ASTHA_SUBSCRIPTIONS__COMPACTOR",
                "table_files,file_statistics",
            )],
        );
        let (tables, checked) = run(&env, config).await;
        assert_eq!(tables, ["table_files", "file_statistics"], "env over file");
        checked.unwrap();
    }

    #[actix_rt::test]
    async fn a_subscription_for_no_registered_component_is_an_error() {
        let env = Env::new();
        let config = config(&env, None, &[("ASTHA_SUBSCRIPTIONS__COMPACTR", "tables")]);
        let (tables, checked) = run(&env, config).await;
        assert_eq!(tables, ["table_files"], "a misspelt name changes nothing");
        let message = checked.unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid config: subscriptions.compactr names no registered component (registered: \
             compactor); correct the name to one of them, or remove the entry"
        );
    }
}
