//! `astha demo`: the lakehouse end to end on an embedded default. It creates a registry
//! (SQLite) and a warehouse in a directory it names, runs Astha with the four lakehouse
//! components, writes Parquet files through the storage manager, and shows what flowed:
//! changes per table and component, Iceberg snapshots, compactions, lag. It then checks
//! that every inserted row reads back from Iceberg, and says how to open the tables with
//! DuckDB or pyiceberg.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_actors::Astha;
use astha_components::compactor::CompactorConfig;
use astha_components::iceberg::IcebergTable;
use astha_components::iceberg_updater::IcebergUpdaterConfig;
use astha_components::lakehouse::LakehouseConfig;
use astha_components::registry::{self, ColumnDef, IcebergState};
use astha_components::schema_manager::SchemaManagerConfig;
use astha_components::snapshotter::SnapshotterConfig;
use astha_components::storage_manager::StorageManagerConfig;
use astha_components::{
    Compactor, IcebergUpdater, Lakehouse, SchemaManager, Snapshotter, StorageManager,
};
use astha_core::config::AsthaConfig;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::CliError;

const DATABASE: &str = "shop";
const MARKER: &str = ".astha-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the registry and the warehouse (created; a previous demo there is replaced).
    #[arg(long, default_value = "astha-demo")]
    pub dir: PathBuf,
    /// Data files to write per table.
    #[arg(long, default_value_t = 40)]
    pub files: usize,
    /// Rows per data file.
    #[arg(long, default_value_t = 500)]
    pub rows: usize,
}

fn err(context: &str) -> impl Fn(astha_components::LakehouseError) -> CliError + '_ {
    move |e| CliError::Message(format!("{context}: {e}"))
}

pub fn run(config: Option<&Path>, args: DemoArgs) -> Result<(), CliError> {
    let dir = prepare_dir(&args.dir)?;
    let registry_path = dir.join("registry.db");
    let warehouse = dir.join("warehouse");
    let lakehouse = Lakehouse::open(LakehouseConfig::new(&registry_path, &warehouse))
        .map_err(err("cannot open the lakehouse"))?;
    let conn = astha_core::db::open(&registry_path).map_err(|e| CliError::on(&registry_path, e))?;
    let mut astha_config = AsthaConfig::load_with(config, registry::monitor_registry)?;
    astha_config.database = registry_path.clone();
    println!("Astha demo in {}", dir.display());
    println!("  registry   {}", registry_path.display());
    println!("  warehouse  {}\n", warehouse.display());
    let system = actix::System::new();
    system.block_on(run_async(astha_config, lakehouse, args, conn))
}

/// Creates the demo directory, replacing a previous demo but never anything else.
fn prepare_dir(dir: &Path) -> Result<PathBuf, CliError> {
    if dir.exists() {
        let is_demo = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !is_demo && !empty {
            return Err(CliError::Message(format!(
                "{} exists and is not an astha demo directory; pick another with --dir",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "created by `astha demo`; safe to delete\n",
    )?;
    Ok(std::fs::canonicalize(dir)?)
}

struct Parts {
    schemas: SchemaManager,
    updater: IcebergUpdater,
    snapshotter: Snapshotter,
    compactor: Compactor,
}

async fn run_async(
    config: AsthaConfig,
    lakehouse: Lakehouse,
    args: DemoArgs,
    conn: rusqlite::Connection,
) -> Result<(), CliError> {
    let registry_path = config.database.clone();
    let astha = Astha::new(config).map_err(|e| CliError::astha(&registry_path, e))?;
    astha
        .start()
        .map_err(|e| CliError::astha(&registry_path, e))?;
    let lh = || lakehouse.clone();
    let mk = |e| CliError::Message(format!("cannot build a component: {e}"));
    let parts = Parts {
        schemas: SchemaManager::new(lh(), SchemaManagerConfig::default()).map_err(mk)?,
        updater: IcebergUpdater::new(lh(), IcebergUpdaterConfig::default()).map_err(mk)?,
        snapshotter: Snapshotter::new(
            lh(),
            SnapshotterConfig {
                max_files: 10,
                retain_last: 3,
                ..SnapshotterConfig::default()
            },
        )
        .map_err(mk)?,
        compactor: Compactor::new(
            lh(),
            CompactorConfig {
                min_files: 8,
                target_file_size: 1 << 20,
                ..CompactorConfig::default()
            },
        )
        .map_err(mk)?,
    };
    let components: Vec<Box<dyn astha_actors::Component>> = vec![
        Box::new(parts.schemas.clone()),
        Box::new(parts.updater.clone()),
        Box::new(parts.snapshotter.clone()),
        Box::new(parts.compactor.clone()),
    ];
    for component in components {
        astha
            .register_component(component)
            .await
            .map_err(|e| CliError::astha(&registry_path, e))?;
    }
    astha
        .check_subscriptions()
        .map_err(|e| CliError::astha(&registry_path, e))?;
    // Tables are created while Astha runs, so every component sees them appear.
    let orders = [
        ("id", "bigint", false),
        ("customer", "text", true),
        ("amount", "double", true),
        ("placed_at", "timestamp", true),
    ];
    let events = [("id", "bigint", false), ("kind", "text", true)];
    for (name, cols) in [("orders", &orders[..]), ("events", &events[..])] {
        let defs: Vec<ColumnDef> = cols
            .iter()
            .map(|(n, t, nullable)| ColumnDef {
                nullable: *nullable,
                ..ColumnDef::new(*n, *t)
            })
            .collect();
        registry::create_table(&conn, DATABASE, name, &defs)
            .map_err(|e| CliError::on(&registry_path, e))?;
    }
    let storage = Arc::new(
        StorageManager::with_schema_manager(
            lh(),
            StorageManagerConfig::default(),
            parts.schemas.clone(),
        )
        .map_err(mk)?,
    );

    // The workload: Parquet files for both tables, written from a blocking thread.
    let total = args.files as u64 * 2;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(), String>>(16);
    let writer_storage = storage.clone();
    let (files, rows) = (args.files, args.rows);
    std::thread::spawn(move || {
        for f in 0..files {
            let first = (f * rows) as i64;
            let order_rows: Vec<Vec<Value>> = (first..first + rows as i64).map(order_row).collect();
            let event_rows: Vec<Vec<Value>> = (first..first + rows as i64).map(event_row).collect();
            for (table, rows) in [("orders", order_rows), ("events", event_rows)] {
                let result = writer_storage
                    .insert(DATABASE, table, &rows)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if tx.blocking_send(result).is_err() {
                    return;
                }
            }
        }
    });
    while let Some(result) = rx.recv().await {
        result.map_err(|e| CliError::Message(format!("insert failed: {e}")))?;
        bar.inc(1);
        let stats = astha.scheduler_stats();
        bar.set_message(format!(
            "{} changes delivered, head LSN {}",
            stats.processed_events, stats.head_lsn
        ));
    }
    bar.finish_with_message(format!("written in {:.1?}", started.elapsed()));

    // Let the components finish: every file in Iceberg and no compaction pending.
    let settled = wait_settled(&astha, &lakehouse, &conn, Duration::from_secs(120)).await;
    summarize(&astha, &parts, &lakehouse, &conn)?;
    let expected = (args.files * args.rows) as u64;
    let mut ok = settled;
    for table in ["orders", "events"] {
        let t = IcebergTable::load(lakehouse.catalog(), DATABASE, table)
            .map_err(|e| CliError::Message(format!("cannot load {table}: {e}")))?;
        let read = t
            .read_rows(None)
            .map_err(|e| CliError::Message(e.to_string()))?
            .len() as u64;
        println!("verified: Iceberg table {DATABASE}.{table} reads back {read} rows of {expected} inserted");
        ok &= read == expected;
    }
    astha
        .stop()
        .await
        .map_err(|e| CliError::astha(&registry_path, e))?;
    let orders_metadata = IcebergTable::load(lakehouse.catalog(), DATABASE, "orders")
        .map(|t| {
            t.metadata_location()
                .trim_start_matches("file://")
                .to_string()
        })
        .unwrap_or_default();
    print_how_to_read(&registry_path, lakehouse.warehouse(), &orders_metadata);
    if !ok {
        return Err(CliError::Message(
            "the lakehouse did not settle to exactly what was inserted".into(),
        ));
    }
    Ok(())
}

fn order_row(i: i64) -> Vec<Value> {
    let customers = ["ada", "grace", "edsger", "barbara", "ken"];
    vec![
        json!(i),
        json!(customers[(i % 5) as usize]),
        json!((i % 997) as f64 * 1.25),
        json!(format!(
            "2026-11-{:02}T{:02}:{:02}:00.000000",
            1 + i % 28,
            i % 24,
            i % 60
        )),
    ]
}

fn event_row(i: i64) -> Vec<Value> {
    let kinds = ["view", "cart", "order", "refund"];
    vec![json!(i), json!(kinds[(i % 4) as usize])]
}

/// Waits until every registered data file is completed and live in Iceberg and the live
/// file count stopped changing (compactions are done).
async fn wait_settled(
    astha: &Astha,
    lakehouse: &Lakehouse,
    conn: &rusqlite::Connection,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut quiet_since: Option<(String, Instant)> = None;
    while Instant::now() < deadline {
        let mut fingerprint = String::new();
        let mut done = true;
        for table in ["orders", "events"] {
            let Ok(Some(row)) = registry::find_table(conn, DATABASE, table) else {
                return false;
            };
            let files = registry::data_files(conn, row.id).unwrap_or_default();
            done &= files
                .iter()
                .all(|f| f.iceberg_metadata_state == IcebergState::Completed);
            match IcebergTable::load(lakehouse.catalog(), DATABASE, table) {
                Ok(t) => fingerprint.push_str(t.metadata_location()),
                Err(_) => done = false,
            }
            fingerprint.push_str(&files.len().to_string());
        }
        let lagging = astha.scheduler_stats().components.iter().any(|c| c.lag > 0);
        if done && !lagging {
            match &quiet_since {
                Some((f, since)) if *f == fingerprint => {
                    if since.elapsed() >= Duration::from_millis(1500) {
                        return true;
                    }
                }
                _ => quiet_since = Some((fingerprint, Instant::now())),
            }
        } else {
            quiet_since = None;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn summarize(
    astha: &Astha,
    parts: &Parts,
    lakehouse: &Lakehouse,
    conn: &rusqlite::Connection,
) -> Result<(), CliError> {
    let stats = astha.scheduler_stats();
    println!("\nchanges captured, per registry table");
    for (table, n) in &stats.event_counts {
        println!("  {table:<18} {n:>8}");
    }
    println!("\ncomponents");
    println!(
        "  {:<18} {:>9} {:>9} {:>8} {:>8}  breaker",
        "name", "delivered", "failures", "dead", "lag"
    );
    for c in &stats.components {
        println!(
            "  {:<18} {:>9} {:>9} {:>8} {:>8}  {}",
            c.name, c.delivered, c.failures, c.dead_letters, c.lag, c.breaker
        );
    }
    let u = parts.updater.stats();
    let k = parts.compactor.stats();
    let s = parts.snapshotter.stats();
    let cache = parts.schemas.stats();
    println!(
        "\niceberg updater   {} commits, {} files appended",
        u.commits, u.files_appended
    );
    println!(
        "compactor         {} compactions: {} small files merged into {}",
        k.compactions, k.files_removed, k.files_added
    );
    println!(
        "snapshotter       {} snapshots recorded (size {}, time {}, manual {}), {} expired, {} files deleted",
        s.recorded_size + s.recorded_time + s.recorded_manual,
        s.recorded_size,
        s.recorded_time,
        s.recorded_manual,
        s.expired_snapshots,
        s.deleted_files
    );
    println!(
        "schema cache      {} hits, {} misses, {} entries",
        cache.hits, cache.misses, cache.entries
    );
    println!("\niceberg tables");
    for table in ["orders", "events"] {
        let t = IcebergTable::load(lakehouse.catalog(), DATABASE, table)
            .map_err(|e| CliError::Message(format!("cannot load {table}: {e}")))?;
        let files = t.data_files().map(|f| f.len()).unwrap_or(0);
        let ops: Vec<String> = t
            .snapshots()
            .iter()
            .map(|s| s.operation.to_string())
            .collect();
        println!(
            "  {DATABASE}.{table:<10} {files} data files, snapshots kept: {}",
            ops.join(" → ")
        );
        println!("    {}", t.metadata_location());
    }
    let registry_files: i64 = conn
        .query_row("SELECT count(*) FROM table_files", [], |r| r.get(0))
        .unwrap_or(0);
    println!("  registry tracks {registry_files} data files");
    Ok(())
}

fn print_how_to_read(registry: &Path, warehouse: &Path, orders_metadata: &str) {
    println!(
        "\nread it with pyiceberg (pip install \"pyiceberg[sql-sqlite,pyarrow]\"):\n  python3 -c \"from pyiceberg.catalog.sql import SqlCatalog; \
c = SqlCatalog('astha', uri='sqlite:///{}', warehouse='file://{}'); \
print(c.load_table('{DATABASE}.orders').scan().to_arrow().num_rows)\"",
        registry.display(),
        warehouse.display()
    );
    println!(
        "or with DuckDB (INSTALL iceberg; LOAD iceberg;):\n  SELECT count(*) FROM iceberg_scan('{orders_metadata}');"
    );
}
