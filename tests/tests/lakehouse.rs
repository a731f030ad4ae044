//! The lakehouse end to end (issue 5's proof): Astha runs the schema manager, Iceberg
//! updater, snapshotter and compactor on actix; rows go in through the storage manager,
//! from several threads at once; after the appends, after a compaction (with inserts racing
//! it), after snapshot expiry, after a crash in the middle of an Iceberg commit followed
//! by a restart, and after a column is renamed and another added, every table is read back by pyiceberg (through the SQL catalog, by name)
//! and by DuckDB's iceberg extension, and compared with exactly what was inserted.
//!
//! The Python readers run when `ASTHA_INTEROP_PYTHON` names an interpreter with them
//! (`bash scripts/interop_venv.sh` prints one); under `CI` they are required. The Rust
//! checks (registry counters, Iceberg rows, files on disk) always run.

#[path = "../../astha-iceberg/tests/iceberg_support.rs"]
mod iceberg_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use astha_actors::Astha;
use astha_components::compactor::CompactorConfig;
use astha_components::iceberg::{CommitFailpoint, IcebergTable};
use astha_components::iceberg_updater::IcebergUpdaterConfig;
use astha_components::lakehouse::{data_file_info, LakehouseConfig};
use astha_components::registry::{self, ColumnDef, IcebergState};
use astha_components::schema_manager::SchemaManagerConfig;
use astha_components::snapshotter::SnapshotterConfig;
use astha_components::storage_manager::StorageManagerConfig;
use astha_components::{
    Compactor, IcebergUpdater, Lakehouse, SchemaManager, Snapshotter, StorageManager,
};
use astha_core::config::AsthaConfig;
use iceberg_support::{interop_python, run_checker, sorted, verify_in_rust, Expect};
use serde_json::{json, Value};

const DB: &str = "shop";
const WAIT: Duration = Duration::from_secs(90);

/// `orders`: one column of every supported type (the shapes of `iceberg_support::row`).
fn order_columns() -> Vec<ColumnDef> {
    let mut cols: Vec<ColumnDef> = [
        ("id", "bigint"),
        ("name", "text"),
        ("score", "double"),
        ("active", "boolean"),
        ("day", "date"),
        ("updated_at", "timestamp"),
        ("payload", "blob"),
        ("qty", "int32"),
        ("ratio", "float32"),
    ]
    .iter()
    .map(|(n, t)| ColumnDef::new(*n, *t))
    .collect();
    cols[0].nullable = false;
    cols
}

fn event_row(i: i64) -> Vec<Value> {
    vec![json!(i), json!(format!("kind-{}", i % 3))]
}

/// What was inserted, per table, in insertion-independent order.
#[derive(Default)]
struct Inserted {
    orders: Vec<Vec<Value>>,
    events: Vec<Vec<Value>>,
}

struct Lake {
    _dir: tempfile::TempDir,
    registry: PathBuf,
    warehouse: PathBuf,
    lakehouse: Lakehouse,
    orders_id: i64,
    events_id: i64,
}

impl Lake {
    fn new() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.db");
        let warehouse = dir.path().join("warehouse");
        let lakehouse = Lakehouse::open(LakehouseConfig::new(&registry, &warehouse)).unwrap();
        let conn = astha_core::db::open(&registry).unwrap();
        let orders_id = registry::create_table(&conn, DB, "orders", &order_columns()).unwrap();
        let events_id = registry::create_table(
            &conn,
            DB,
            "events",
            &[
                ColumnDef {
                    nullable: false,
                    ..ColumnDef::new("id", "bigint")
                },
                ColumnDef::new("kind", "text"),
            ],
        )
        .unwrap();
        Lake {
            warehouse: lakehouse.warehouse().to_path_buf(),
            _dir: dir,
            registry,
            lakehouse,
            orders_id,
            events_id,
        }
    }

    fn astha_config(&self) -> AsthaConfig {
        let mut c = AsthaConfig {
            database: self.registry.clone(),
            ..AsthaConfig::default()
        };
        registry::monitor_registry(&mut c);
        c.backstop_interval = Duration::from_millis(20);
        c.cleanup_interval = Duration::from_millis(200);
        c.retry.initial_backoff = Duration::from_millis(10);
        c.retry.max_backoff = Duration::from_millis(200);
        c
    }

    fn table(&self, name: &str) -> IcebergTable {
        IcebergTable::load(self.lakehouse.catalog(), DB, name).unwrap()
    }

    fn conn(&self) -> rusqlite::Connection {
        astha_core::db::open(&self.registry).unwrap()
    }
}

/// The four components with test-sized settings; the handles stay with the test.
struct Components {
    schemas: SchemaManager,
    updater: IcebergUpdater,
    snapshotter: Snapshotter,
    compactor: Compactor,
}

impl Components {
    fn new(lake: &Lake) -> Components {
        let lh = || lake.lakehouse.clone();
        Components {
            schemas: SchemaManager::new(lh(), SchemaManagerConfig::default()).unwrap(),
            updater: IcebergUpdater::new(lh(), IcebergUpdaterConfig::default()).unwrap(),
            snapshotter: Snapshotter::new(
                lh(),
                SnapshotterConfig {
                    interval: Duration::from_secs(3600),
                    max_files: 6,
                    max_bytes: 0,
                    retain_last: 2,
                    max_age: Duration::ZERO,
                    tick: Duration::from_millis(200),
                    ..SnapshotterConfig::default()
                },
            )
            .unwrap(),
            compactor: Compactor::new(
                lh(),
                CompactorConfig {
                    min_files: 8,
                    target_file_size: 1 << 20,
                    ..CompactorConfig::default()
                },
            )
            .unwrap(),
        }
    }

    async fn register(&self, astha: &Astha) {
        astha
            .register_component(Box::new(self.schemas.clone()))
            .await
            .unwrap();
        astha
            .register_component(Box::new(self.updater.clone()))
            .await
            .unwrap();
        astha
            .register_component(Box::new(self.snapshotter.clone()))
            .await
            .unwrap();
        astha
            .register_component(Box::new(self.compactor.clone()))
            .await
            .unwrap();
    }
}

/// Inserts `files` files of `per_file` orders rows from `first`, and one events file per
/// orders file, from `threads` threads at once; returns the rows inserted.
fn insert_concurrently(
    storage: &StorageManager,
    threads: i64,
    files: i64,
    per_file: i64,
    first: i64,
    pause: Duration,
) -> Inserted {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                let mut mine = Inserted::default();
                for k in (t..files).step_by(threads as usize) {
                    let start = first + k * per_file;
                    let orders: Vec<Vec<Value>> = (start..start + per_file)
                        .map(iceberg_support::row)
                        .collect();
                    storage.insert(DB, "orders", &orders).unwrap();
                    let events = vec![event_row(start), event_row(start + 1)];
                    storage.insert(DB, "events", &events).unwrap();
                    mine.orders.extend(orders);
                    mine.events.extend(events);
                    std::thread::sleep(pause);
                }
                mine
            })
        })
        .collect();
    let mut all = Inserted::default();
    for h in handles {
        let mine = h.join().unwrap();
        all.orders.extend(mine.orders);
        all.events.extend(mine.events);
    }
    all
}

/// Waits until every data file is in Iceberg, the registry and the tables agree on the live
/// files, and nothing changed (no commit, no file or snapshot row) for a while: the
/// components have handled every change and the snapshotter's timer has nothing left to do.
async fn settled(lake: &Lake) {
    let started = Instant::now();
    let mut last: Option<(String, Instant)> = None;
    loop {
        let conn = lake.conn();
        let mut done = true;
        let mut fingerprint = String::new();
        for (id, name) in [(lake.orders_id, "orders"), (lake.events_id, "events")] {
            let files = registry::data_files(&conn, id).unwrap();
            let registered: BTreeSet<PathBuf> =
                files.iter().map(|f| PathBuf::from(&f.file_path)).collect();
            let all_completed = files
                .iter()
                .all(|f| f.iceberg_metadata_state == IcebergState::Completed);
            // The updater creates the table when it registers, which is asynchronous.
            let Ok(table) = IcebergTable::load(lake.lakehouse.catalog(), DB, name) else {
                done = false;
                continue;
            };
            let live: BTreeSet<PathBuf> = table.data_files().unwrap().into_iter().collect();
            done &= all_completed && registered == live;
            fingerprint.push_str(table.metadata_location());
        }
        let rows: (i64, Option<String>, i64, Option<String>) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM table_snapshots), (SELECT max(updated_at) FROM table_snapshots),
                        (SELECT count(*) FROM table_files), (SELECT max(updated_at) FROM table_files)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        fingerprint.push_str(&format!("{rows:?}"));
        if !done {
            last = None;
        } else {
            match &last {
                Some((f, since)) if *f == fingerprint => {
                    if since.elapsed() >= Duration::from_millis(500) {
                        return;
                    }
                }
                _ => last = Some((fingerprint, Instant::now())),
            }
        }
        assert!(
            started.elapsed() < WAIT,
            "lakehouse did not settle in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks both tables against what was inserted: registry counters, Iceberg rows (Rust),
/// then pyiceberg and DuckDB. Returns how many Python checks ran.
fn check_all(lake: &Lake, step: &str, inserted: &Inserted, time_travel: bool) -> usize {
    let conn = lake.conn();
    let mut ran = 0;
    for (id, name, rows) in [
        (lake.orders_id, "orders", &inserted.orders),
        (lake.events_id, "events", &inserted.events),
    ] {
        let t = registry::table_by_id(&conn, id).unwrap().unwrap();
        let files = registry::data_files(&conn, id).unwrap();
        assert_eq!(t.row_count, rows.len() as i64, "[{step}] {name} row_count");
        assert_eq!(
            t.file_count,
            files.len() as i64,
            "[{step}] {name} file_count"
        );
        assert_eq!(
            t.total_size,
            files.iter().map(|f| f.file_size).sum::<i64>(),
            "[{step}] {name} total_size"
        );
        let table = lake.table(name);
        let mut expect = Expect {
            rows: rows.clone(),
            current_snapshot_id: table.current_snapshot().map(|s| s.snapshot_id),
            snapshot_ids: Some(table.snapshots().iter().map(|s| s.snapshot_id).collect()),
            ..Expect::default()
        };
        if time_travel {
            // Every recorded snapshot still in the table reads back with the row count the
            // snapshotter recorded for it.
            for r in registry::live_snapshot_records(&conn, id).unwrap() {
                let back = table.read_rows(Some(r.row.snapshot_id)).unwrap();
                assert_eq!(
                    back.len() as i64,
                    r.row.row_count,
                    "[{step}] record {}",
                    r.row.snapshot_id
                );
                expect.snapshots.insert(r.row.snapshot_id, back);
            }
        }
        verify_in_rust(&table, &expect);
        assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows.clone()));
        match run_checker(
            &format!("{step}-{name}"),
            &lake.registry,
            &lake.warehouse,
            &table,
            &expect,
        ) {
            Some((ok, report)) => {
                assert!(
                    ok,
                    "[{step}] {name}: pyiceberg/DuckDB check failed:\n{report}"
                );
                ran += 1;
            }
            None => {
                println!("[{step}] {name}: ASTHA_INTEROP_PYTHON not set, Python readers skipped")
            }
        }
    }
    ran
}

#[actix_rt::test]
async fn lakehouse_is_read_back_exactly_by_pyiceberg_and_duckdb() {
    let t0 = Instant::now();
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if in_ci && interop_python().is_none() {
        panic!("CI must run the pyiceberg/DuckDB check: set ASTHA_INTEROP_PYTHON (bash scripts/interop_venv.sh prints it)");
    }
    let lake = Lake::new();
    let astha = Astha::new(lake.astha_config()).unwrap();
    astha.start().unwrap();
    let components = Components::new(&lake);
    components.register(&astha).await;
    let storage = StorageManager::with_schema_manager(
        lake.lakehouse.clone(),
        StorageManagerConfig::default(),
        components.schemas.clone(),
    )
    .unwrap();
    let mut python_checks = 0;

    // 1. Appends: 6 + 6 files from 3 threads.
    let mut inserted = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            insert_concurrently(&storage, 3, 6, 7, 0, Duration::ZERO)
        })
        .await
        .unwrap()
    };
    settled(&lake).await;
    assert_eq!(
        components.compactor.stats().compactions,
        0,
        "6 small files < K = 8"
    );
    let appended_files: Vec<String> = registry::data_files(&lake.conn(), lake.orders_id)
        .unwrap()
        .into_iter()
        .map(|f| f.file_path)
        .collect();
    python_checks += check_all(&lake, "appends", &inserted, true);
    let t_appends = t0.elapsed();

    // 2. Compaction, with inserts racing it: 8 more files, slowly, from 2 threads; the
    //    compactor starts once 8 small files are completed, while the rest keep coming.
    let more = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            insert_concurrently(&storage, 2, 8, 5, 1000, Duration::from_millis(15))
        })
        .await
        .unwrap()
    };
    inserted.orders.extend(more.orders);
    inserted.events.extend(more.events);
    wait_for("a compaction", || {
        components.compactor.stats().compactions >= 1
    })
    .await;
    settled(&lake).await;
    let orders = lake.table("orders");
    // (The replace snapshot itself may already be expired: it was not a recorded one.)
    assert!(
        orders
            .data_files()
            .unwrap()
            .iter()
            .any(|p| p.to_string_lossy().contains("/compacted-")),
        "a merged file is live"
    );
    assert!(
        orders.data_files().unwrap().len() < 14,
        "fewer live files than were inserted"
    );
    python_checks += check_all(&lake, "compaction", &inserted, true);
    let t_compaction = t0.elapsed();

    // 3. Snapshot expiry: two manual requests (rows another process could insert); with
    //    retain_last = 2 and max_age = 0 everything older is expired and the files only
    //    the expired snapshots used are deleted.
    for _ in 0..2 {
        let before = components.snapshotter.stats().recorded_manual;
        registry::request_snapshot(&lake.conn(), lake.orders_id).unwrap();
        wait_for("a manual snapshot", || {
            components.snapshotter.stats().recorded_manual > before
        })
        .await;
        // Distinct snapshots: one more insert between the two requests.
        let storage = storage.clone();
        let extra = tokio::task::spawn_blocking(move || {
            insert_concurrently(&storage, 1, 1, 3, 5000, Duration::ZERO)
        })
        .await
        .unwrap();
        inserted.orders.extend(extra.orders);
        inserted.events.extend(extra.events);
        settled(&lake).await;
    }
    registry::request_snapshot(&lake.conn(), lake.orders_id).unwrap();
    wait_for("expiry", || {
        let conn = lake.conn();
        registry::snapshot_requests(&conn, lake.orders_id)
            .unwrap()
            .is_empty()
            && lake.table("orders").snapshots().len() <= 2
    })
    .await;
    let orders = lake.table("orders");
    let live: BTreeSet<String> = orders
        .data_files()
        .unwrap()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut reachable = BTreeSet::new();
    for s in orders.snapshots() {
        reachable.extend(orders.data_files_at(s.snapshot_id).unwrap());
    }
    let mut deleted = 0;
    for f in &appended_files {
        if reachable.contains(Path::new(f)) {
            assert!(Path::new(f).exists(), "{f} is referenced and must exist");
        } else {
            assert!(
                !Path::new(f).exists(),
                "{f} is referenced by no snapshot and must be deleted"
            );
            deleted += 1;
        }
    }
    assert!(
        deleted > 0,
        "the compacted-away files were deleted by expiry"
    );
    assert!(live.iter().all(|f| Path::new(f).exists()));
    let expired_rows: i64 = lake
        .conn()
        .query_row(
            "SELECT count(*) FROM table_snapshots WHERE expired = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(expired_rows > 0, "old records marked expired");
    python_checks += check_all(&lake, "expiry", &inserted, true);
    let t_expiry = t0.elapsed();

    // 4. Crash in the middle of an Iceberg commit, then restart. Astha stops; files keep
    //    arriving; an updater marks them processing and dies after writing the new
    //    metadata file but before the catalog swap.
    astha.stop().await.unwrap();
    let first_cache = components.schemas.stats();
    assert!(
        first_cache.hits > 0 && first_cache.entries == 2,
        "the storage manager found its schemas in the cache: {first_cache:?}"
    );
    drop(components);
    let crash = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            insert_concurrently(&storage, 2, 4, 6, 9000, Duration::ZERO)
        })
        .await
        .unwrap()
    };
    inserted.orders.extend(crash.orders);
    inserted.events.extend(crash.events);
    let conn = lake.conn();
    let pending =
        registry::files_in_states(&conn, lake.orders_id, &[IcebergState::Pending]).unwrap();
    assert_eq!(pending.len(), 4);
    let ids: Vec<i64> = pending.iter().map(|f| f.id).collect();
    registry::set_file_state(&conn, &ids, IcebergState::Processing).unwrap();
    let mut orders = lake.table("orders");
    let stats = registry::file_statistics(&conn, &ids).unwrap();
    let infos: Vec<_> = pending
        .iter()
        .map(|f| data_file_info(f, &stats[&f.id], orders.columns()).unwrap())
        .collect();
    let current_before = orders.metadata_location().to_string();
    orders.set_commit_failpoint(Some(CommitFailpoint::BeforeCatalogSwap));
    assert!(orders.append(&infos).is_err());
    assert_eq!(
        lake.table("orders").metadata_location(),
        current_before,
        "the crash left the previous version current"
    );

    let astha = Astha::new(lake.astha_config()).unwrap();
    astha.start().unwrap();
    let components = Components::new(&lake);
    components.register(&astha).await;
    settled(&lake).await;
    assert_eq!(
        components.updater.stats().files_appended,
        8,
        "the restarted updater appended each waiting file once"
    );
    python_checks += check_all(&lake, "restart", &inserted, false);
    let t_restart = t0.elapsed();

    // 5. A schema change while Astha runs: `events.kind` is renamed `category` (field id 2
    //    kept) and `note` is added (field id 3). The updater gives the Iceberg table a new
    //    schema; the files of both schemas read back (old rows with a null note).
    lake.conn()
        .execute_batch(&format!(
            "UPDATE table_columns SET name = 'category' WHERE table_id = {id} AND name = 'kind';
             INSERT INTO table_columns (table_id, name, ordinal, data_type, nullable, field_id)
             VALUES ({id}, 'note', 3, 'text', 1, 3);",
            id = lake.events_id
        ))
        .unwrap();
    wait_for("the events table's new Iceberg schema", || {
        lake.table("events").columns().len() == 3
    })
    .await;
    wait_for("the schema cache to drop the old columns", || {
        components
            .schemas
            .cached(lake.events_id)
            .is_none_or(|c| c.iceberg_columns().is_ok_and(|cols| cols.len() == 3))
    })
    .await;
    for r in &mut inserted.events {
        r.push(Value::Null);
    }
    let new_rows: Vec<Vec<Value>> = (20_000..20_005)
        .map(|i| {
            vec![
                json!(i),
                json!(format!("kind-{}", i % 3)),
                json!(format!("note {i}")),
            ]
        })
        .collect();
    {
        let storage = StorageManager::with_schema_manager(
            lake.lakehouse.clone(),
            StorageManagerConfig::default(),
            components.schemas.clone(),
        )
        .unwrap();
        let rows = new_rows.clone();
        tokio::task::spawn_blocking(move || storage.insert(DB, "events", &rows).unwrap())
            .await
            .unwrap();
    }
    inserted.events.extend(new_rows);
    settled(&lake).await;
    assert_eq!(components.updater.stats().schema_updates, 1);
    let names: Vec<String> = lake
        .table("events")
        .columns()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["id", "category", "note"]);
    python_checks += check_all(&lake, "schema", &inserted, false);

    println!(
        "timings: appends {t_appends:.1?}, compaction {t_compaction:.1?}, expiry {t_expiry:.1?}, restart {t_restart:.1?}; \
         python checks: {python_checks}; schema cache before restart: {first_cache:?}; compactor: {:?}; snapshotter: {:?}",
        components.compactor.stats(),
        components.snapshotter.stats()
    );
    if interop_python().is_some() {
        assert_eq!(
            python_checks, 10,
            "every step was read back by pyiceberg and DuckDB"
        );
    }
    astha.stop().await.unwrap();
}
