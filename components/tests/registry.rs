//! The registry: migrations, typed rows decoded from changes written by real triggers.

use astha_components::registry::{self, ColumnDef, IcebergState, TableColumn, TableFile};
use astha_core::capture::Capture;
use astha_core::log::{BatchLimits, LogReader};
use astha_core::{Change, Operation};
use rusqlite::Connection;

const LOG: &str = "__cdc_log";

/// A registry database in a directory that lives as long as the value.
struct TestDb {
    dir: tempfile::TempDir,
}

impl TestDb {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn conn(&self) -> Connection {
        astha_core::db::open(&self.dir.path().join("registry.db")).unwrap()
    }
}

/// Every change in the log, read in one batch.
fn read_all(conn: &Connection) -> Vec<Change> {
    let limits = BatchLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };
    let batch = LogReader::new(LOG).read(conn, 0, limits, None).unwrap();
    assert!(batch.malformed.is_empty(), "{:?}", batch.malformed);
    batch.changes
}

#[test]
fn migrations_are_versioned_and_idempotent() {
    let db = TestDb::new();
    let conn = db.conn();
    assert_eq!(registry::migrate(&conn).unwrap(), 0);
    assert_eq!(registry::migrate(&conn).unwrap(), registry::SCHEMA_VERSION);
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    let err = registry::migrate(&conn).unwrap_err().to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

#[test]
fn typed_events_decode_rows_written_by_triggers() {
    let db = TestDb::new();
    let conn = db.conn();
    registry::migrate(&conn).unwrap();
    for table in registry::REGISTRY_TABLES {
        Capture::new(LOG).install(&conn, table).unwrap();
    }
    let columns = [
        ColumnDef::new("id", "int64"),
        ColumnDef {
            nullable: false,
            ..ColumnDef::new("name", "string")
        },
    ];
    let table_id = registry::create_table(&conn, "sales", "orders", &columns).unwrap();
    conn.execute(
        "INSERT INTO table_files (table_id, file_name, file_path, file_size, row_count, checksum)
         VALUES (?1, 'a.parquet', '/w/a.parquet', 10, 2, 'abc')",
        [table_id],
    )
    .unwrap();
    let file_id = conn.last_insert_rowid();
    registry::set_file_state(&conn, &[file_id], IcebergState::Completed).unwrap();

    let changes = read_all(&conn);
    let tables: Vec<&str> = changes.iter().map(|c| &*c.table).collect();
    assert_eq!(
        tables,
        [
            "databases",
            "tables",
            "table_columns",
            "table_columns",
            "table_metadata",
            "table_files",
            "table_files"
        ]
    );
    let col: astha_core::Event<TableColumn> = changes[3].typed().unwrap();
    let col = col.after.unwrap();
    assert_eq!(
        (col.name.as_str(), col.nullable, col.field_id),
        ("name", false, 2)
    );
    let update: astha_core::Event<TableFile> = changes[6].typed().unwrap();
    assert_eq!(
        update.op,
        Operation::Update,
        "updated_at is set in the same UPDATE: one event"
    );
    assert_eq!(
        update.before.unwrap().iceberg_metadata_state,
        IcebergState::Pending
    );
    let after = update.after.unwrap();
    assert_eq!(after.iceberg_metadata_state, IcebergState::Completed);
    assert!(after.is_compressed);
    // Reads through the registry API use the same decoding.
    let files = registry::files_in_state(&conn, table_id, IcebergState::Completed).unwrap();
    assert_eq!(files, vec![after]);
    // A wrong type is a clear error naming the table.
    let err = changes[0].typed::<TableFile>().unwrap_err().to_string();
    assert!(err.contains("databases"), "{err}");
}
