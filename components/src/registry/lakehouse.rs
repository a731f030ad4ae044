//! Registry reads and writes of the lakehouse components (storage manager, Iceberg
//! updater, compactor, snapshotter): data files with their statistics, the table-level
//! counters that must move with them, and snapshot records.
//!
//! Every function that changes more than one row expects to run inside a transaction the
//! caller opened, usually with [`immediate`], so that a data file, its statistics and its
//! table's counters appear (or disappear) together. Nothing here touches the file system.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use astha_core::error::{CoreError, Result};

use super::rows::{FileStatistic, IcebergState, TableFile, TableMetadata, TableSnapshot};
use super::writes::read_rows;
use super::NOW_SQL;

/// `table_snapshots.operation` of a snapshot request that the snapshotter has not handled.
pub const SNAPSHOT_REQUESTED: &str = "requested";

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a
/// transaction that reads before it writes waits for other writers (busy timeout) instead
/// of failing with a stale snapshot. Commits on `Ok`, rolls back on `Err`.
pub fn immediate<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Where a registry table lives: its database (the Iceberg namespace) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableIdentity {
    pub table_id: i64,
    pub database: String,
    pub table: String,
}

/// The database and name of table `table_id`, if it exists.
pub fn table_identity(conn: &Connection, table_id: i64) -> Result<Option<TableIdentity>> {
    Ok(conn
        .query_row(
            "SELECT d.name, t.name FROM tables t JOIN databases d ON d.id = t.database_id
             WHERE t.id = ?1",
            [table_id],
            |r| {
                Ok(TableIdentity {
                    table_id,
                    database: r.get(0)?,
                    table: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Every table, by id.
pub fn all_tables(conn: &Connection) -> Result<Vec<TableIdentity>> {
    let mut stmt = conn.prepare(
        "SELECT t.id, d.name, t.name FROM tables t JOIN databases d ON d.id = t.database_id
         ORDER BY t.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TableIdentity {
                table_id: r.get(0)?,
                database: r.get(1)?,
                table: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The `table_metadata` row of a table.
pub fn table_metadata(conn: &Connection, table_id: i64) -> Result<Option<TableMetadata>> {
    Ok(
        read_rows(conn, "table_metadata", "table_id = ?1", &[&table_id])?
            .into_iter()
            .next(),
    )
}

/// Statistics of one column of a new data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewColumnStatistic {
    pub column_name: String,
    /// Minimum as JSON text; `None` when the column holds no non-null value.
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    pub null_count: i64,
    pub value_count: i64,
}

/// A data file to record in `table_files`, with its per-column statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDataFile {
    pub file_name: String,
    /// Absolute path; unique across the registry.
    pub file_path: String,
    pub file_size: i64,
    pub row_count: i64,
    pub checksum: String,
    pub file_type: String,
    pub partition_path: String,
    pub is_compressed: bool,
    pub state: IcebergState,
    pub statistics: Vec<NewColumnStatistic>,
}

/// Inserts a data file and its statistics (not the table counters); returns its id.
pub fn insert_data_file(conn: &Connection, table_id: i64, file: &NewDataFile) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO table_files (table_id, file_name, file_path, file_size, row_count, checksum,
             file_type, partition_path, is_compressed, iceberg_metadata_state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute((
        table_id,
        &file.file_name,
        &file.file_path,
        file.file_size,
        file.row_count,
        &file.checksum,
        &file.file_type,
        &file.partition_path,
        file.is_compressed,
        file.state.as_str(),
    ))?;
    let file_id = conn.last_insert_rowid();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO file_statistics (file_id, column_name, min_value, max_value, null_count, value_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for s in &file.statistics {
        stmt.execute((
            file_id,
            &s.column_name,
            &s.min_value,
            &s.max_value,
            s.null_count,
            s.value_count,
        ))?;
    }
    Ok(file_id)
}

/// A change of a table's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsDelta {
    pub rows: i64,
    pub files: i64,
    pub bytes: i64,
}

/// Adds `delta` to a table's `row_count`, `file_count` and `total_size` and stamps
/// `last_modified`, in one statement (so concurrent writers never lose an update).
pub fn add_table_stats(conn: &Connection, table_id: i64, delta: StatsDelta) -> Result<()> {
    let changed = conn
        .prepare_cached(&format!(
            "UPDATE tables SET row_count = row_count + ?2, file_count = file_count + ?3,
                 total_size = total_size + ?4, last_modified = {NOW_SQL}, updated_at = {NOW_SQL}
             WHERE id = ?1"
        ))?
        .execute((table_id, delta.rows, delta.files, delta.bytes))?;
    if changed == 0 {
        return Err(CoreError::Invalid(format!("no table with id {table_id}")));
    }
    Ok(())
}

/// Records a new data file of `table_id`: the file row, its statistics and the table's
/// counters. Run it inside a transaction.
pub fn record_data_file(conn: &Connection, table_id: i64, file: &NewDataFile) -> Result<i64> {
    let id = insert_data_file(conn, table_id, file)?;
    add_table_stats(
        conn,
        table_id,
        StatsDelta {
            rows: file.row_count,
            files: 1,
            bytes: file.file_size,
        },
    )?;
    Ok(id)
}

/// What [`swap_data_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapOutcome {
    /// Ids of the rows deleted (those of `removed` that still existed in the table).
    pub removed: Vec<i64>,
    /// Ids of the rows inserted, in the order given.
    pub added: Vec<i64>,
    /// The counter change applied.
    pub delta: StatsDelta,
}

/// Replaces data files of `table_id`: deletes exactly the rows `removed` (ids of other
/// tables, or already gone, are skipped), inserts `added`, and moves the table counters by
/// the difference. Run it inside a transaction.
pub fn swap_data_files(
    conn: &Connection,
    table_id: i64,
    removed: &[i64],
    added: &[NewDataFile],
) -> Result<SwapOutcome> {
    let mut out = SwapOutcome::default();
    {
        let mut delete = conn.prepare_cached(
            "DELETE FROM table_files WHERE id = ?1 AND table_id = ?2 RETURNING row_count, file_size",
        )?;
        for id in removed {
            let gone: Option<(i64, i64)> = delete
                .query_row((id, table_id), |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((rows, size)) = gone {
                out.removed.push(*id);
                out.delta.rows -= rows;
                out.delta.files -= 1;
                out.delta.bytes -= size;
            }
        }
    }
    for file in added {
        out.added.push(insert_data_file(conn, table_id, file)?);
        out.delta.rows += file.row_count;
        out.delta.files += 1;
        out.delta.bytes += file.file_size;
    }
    if out.delta != StatsDelta::default() || !out.added.is_empty() || !out.removed.is_empty() {
        add_table_stats(conn, table_id, out.delta)?;
    }
    Ok(out)
}

/// All data files of a table, by id.
pub fn data_files(conn: &Connection, table_id: i64) -> Result<Vec<TableFile>> {
    read_rows(conn, "table_files", "table_id = ?1", &[&table_id])
}

/// Data files of a table in any of `states`, by id.
pub fn files_in_states(
    conn: &Connection,
    table_id: i64,
    states: &[IcebergState],
) -> Result<Vec<TableFile>> {
    let mut files: Vec<TableFile> = data_files(conn, table_id)?
        .into_iter()
        .filter(|f| states.contains(&f.iceberg_metadata_state))
        .collect();
    files.sort_by_key(|f| f.id);
    Ok(files)
}

/// Ids of the tables that have at least one data file in any of `states`.
pub fn tables_with_files_in(conn: &Connection, states: &[IcebergState]) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT table_id FROM table_files WHERE iceberg_metadata_state = ?1",
    )?;
    let mut ids = Vec::new();
    for state in states {
        for id in stmt.query_map([state.as_str()], |r| r.get::<_, i64>(0))? {
            ids.push(id?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Column statistics of the given files, keyed by file id.
pub fn file_statistics(
    conn: &Connection,
    file_ids: &[i64],
) -> Result<HashMap<i64, Vec<FileStatistic>>> {
    let mut out: HashMap<i64, Vec<FileStatistic>> = HashMap::new();
    for id in file_ids {
        let stats: Vec<FileStatistic> = read_rows(conn, "file_statistics", "file_id = ?1", &[id])?;
        out.insert(*id, stats);
    }
    Ok(out)
}

/// A snapshot to record in `table_snapshots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshotRecord {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub operation: String,
    /// What caused it: `time`, `size` or `manual`.
    pub trigger_kind: String,
    pub file_count: i64,
    pub row_count: i64,
    pub total_size: i64,
    pub metadata_location: Option<String>,
}

/// Records a snapshot of `table_id`; a snapshot already recorded is left as it is. Returns
/// the row id and whether it was inserted now.
pub fn record_snapshot(
    conn: &Connection,
    table_id: i64,
    rec: &NewSnapshotRecord,
) -> Result<(i64, bool)> {
    let inserted = conn.execute(
        "INSERT INTO table_snapshots (table_id, snapshot_id, parent_snapshot_id, operation,
             trigger_kind, file_count, row_count, total_size, metadata_location)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (table_id, snapshot_id) DO NOTHING",
        (
            table_id,
            rec.snapshot_id,
            rec.parent_snapshot_id,
            &rec.operation,
            &rec.trigger_kind,
            rec.file_count,
            rec.row_count,
            rec.total_size,
            &rec.metadata_location,
        ),
    )?;
    let id = conn.query_row(
        "SELECT id FROM table_snapshots WHERE table_id = ?1 AND snapshot_id = ?2",
        (table_id, rec.snapshot_id),
        |r| r.get(0),
    )?;
    Ok((id, inserted == 1))
}

/// Asks the snapshotter for a snapshot of `table_id` (a manual trigger that works across
/// processes): inserts a `requested` row with a negative placeholder snapshot id, which the
/// snapshotter turns into the record of the snapshot it takes. Returns the row id.
pub fn request_snapshot(conn: &Connection, table_id: i64) -> Result<i64> {
    conn.execute(
        "INSERT INTO table_snapshots (table_id, snapshot_id, operation, trigger_kind)
         VALUES (?1, (SELECT -1 - COALESCE(MAX(id), 0) FROM table_snapshots), ?2, 'manual')",
        (table_id, SNAPSHOT_REQUESTED),
    )?;
    Ok(conn.last_insert_rowid())
}

/// Pending snapshot requests of a table, oldest first.
pub fn snapshot_requests(conn: &Connection, table_id: i64) -> Result<Vec<TableSnapshot>> {
    read_rows(
        conn,
        "table_snapshots",
        "table_id = ?1 AND operation = ?2",
        &[&table_id, &SNAPSHOT_REQUESTED],
    )
}

/// Turns request row `request_id` into the record `rec`. If `rec`'s snapshot is already
/// recorded, the request is deleted instead (the existing record answers it). Returns the
/// id of the row that records the snapshot.
pub fn fulfil_snapshot_request(
    conn: &Connection,
    table_id: i64,
    request_id: i64,
    rec: &NewSnapshotRecord,
) -> Result<i64> {
    let existing: Option<i64> = conn
        .query_row(
            "SELECT id FROM table_snapshots WHERE table_id = ?1 AND snapshot_id = ?2",
            (table_id, rec.snapshot_id),
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        conn.execute(
            "DELETE FROM table_snapshots WHERE id = ?1 AND operation = ?2",
            (request_id, SNAPSHOT_REQUESTED),
        )?;
        return Ok(id);
    }
    conn.execute(
        &format!(
            "UPDATE table_snapshots SET snapshot_id = ?2, parent_snapshot_id = ?3, operation = ?4,
                 trigger_kind = ?5, file_count = ?6, row_count = ?7, total_size = ?8,
                 metadata_location = ?9, updated_at = {NOW_SQL}
             WHERE id = ?1 AND operation = ?10"
        ),
        (
            request_id,
            rec.snapshot_id,
            rec.parent_snapshot_id,
            &rec.operation,
            &rec.trigger_kind,
            rec.file_count,
            rec.row_count,
            rec.total_size,
            &rec.metadata_location,
            SNAPSHOT_REQUESTED,
        ),
    )?;
    Ok(request_id)
}

/// Deletes unanswered snapshot requests (the table has nothing to snapshot yet).
pub fn drop_snapshot_requests(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM table_snapshots WHERE id = ?1 AND operation = ?2")?;
    for id in ids {
        stmt.execute((id, SNAPSHOT_REQUESTED))?;
    }
    Ok(())
}

/// A recorded snapshot with the time it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSnapshot {
    pub row: TableSnapshot,
    /// `created_at` in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// Recorded (not requested) snapshots of a table that are not marked expired, oldest
/// first.
pub fn live_snapshot_records(conn: &Connection, table_id: i64) -> Result<Vec<RecordedSnapshot>> {
    let rows: Vec<TableSnapshot> = read_rows(
        conn,
        "table_snapshots",
        "table_id = ?1 AND expired = 0 AND operation <> ?2",
        &[&table_id, &SNAPSHOT_REQUESTED],
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT CAST(round((julianday(created_at) - 2440587.5) * 86400000.0) AS INTEGER)
         FROM table_snapshots WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let created_ms: i64 = stmt.query_row([row.id], |r| r.get(0))?;
        out.push(RecordedSnapshot { row, created_ms });
    }
    Ok(out)
}

/// Marks snapshot records expired.
pub fn mark_snapshots_expired(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE table_snapshots SET expired = 1, updated_at = {NOW_SQL} WHERE id = ?1 AND expired = 0"
    ))?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}
