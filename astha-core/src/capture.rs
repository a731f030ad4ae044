//! Trigger capture: installs, regenerates and removes the triggers that copy every
//! INSERT, UPDATE and DELETE of a table into the change log.
//!
//! Promises:
//! - triggers are generated from the live schema (`PRAGMA table_info`), for any ordinary
//!   table (rowid, composite key, WITHOUT ROWID), with every identifier quoted;
//! - a trigger copies each value as it is into untyped columns of the log (see
//!   [`crate::image`]) and calls no function that can fail on a value, so capture never
//!   makes a user's write fail and every value reads back exactly;
//! - install, uninstall and re-install are idempotent, and each is one atomic step;
//! - after a schema change, [`Capture::refresh`] regenerates the triggers of every table
//!   whose columns changed, so new columns are captured; [`Capture::alter`] runs an
//!   `ALTER TABLE` with the triggers regenerated in the same transaction, which is the
//!   only way to drop a column that a trigger names, and leaves no window in which a
//!   new column is not captured.

use rusqlite::{Connection, OptionalExtension};

use crate::change::Operation;
use crate::error::{CoreError, Result};
use crate::ident::{quote_ident, quote_literal};
use crate::image;
use crate::log_layout;
use crate::schema::{self, TableSchema};

/// `__astha_captured.schema_id` of a captured table that was dropped.
const MISSING_TABLE: i64 = -1;

/// Prefix of every table and trigger Astha owns.
pub const INTERNAL_PREFIX: &str = "__astha_";

/// What [`Capture::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// The table was not captured before; triggers were created.
    Installed,
    /// The table was captured with the same columns; nothing changed.
    Unchanged,
    /// The table's columns changed since its triggers were made; they were regenerated.
    Regenerated,
}

/// What [`Capture::refresh`] did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshChange {
    /// The table's triggers were regenerated for its new columns.
    Regenerated { table: String, schema_id: i64 },
    /// The table no longer exists; it is no longer captured.
    Dropped { table: String },
}

/// Trigger capture into one change-log table.
#[derive(Debug, Clone)]
pub struct Capture {
    log_table: String,
}

impl Capture {
    /// Capture into the log table named `log_table` (Astha's default is `__cdc_log`).
    pub fn new(log_table: impl Into<String>) -> Self {
        Self {
            log_table: log_table.into(),
        }
    }

    /// The change log's table name.
    pub fn log_table(&self) -> &str {
        &self.log_table
    }

    /// Creates the change log and Astha's bookkeeping tables if they are missing.
    ///
    /// The log's `id` is an `INTEGER PRIMARY KEY` without `AUTOINCREMENT`: SQLite then
    /// gives each new row `max(id) + 1`, and cleanup never deletes the newest row (see
    /// [`crate::slots`]), so an id is never handed out twice. `AUTOINCREMENT` would give
    /// the same guarantee by writing `sqlite_sequence` on every insert, which costs every
    /// captured write (+40 points per autocommit insert, docs/FLOORS.md).
    ///
    /// Images go into untyped value columns (`v0`, `v1`, ...), added as wider tables are
    /// captured; see [`crate::image`]. A log in the text-image format of earlier builds
    /// is replaced when empty and refused otherwise (drain it with the build that wrote it).
    pub fn ensure_log(&self, conn: &Connection) -> Result<()> {
        if is_legacy_table(conn, &self.log_table)? {
            // Its triggers write the old columns: replace the log and regenerate every
            // captured table's triggers in one step, so no user write can fail between.
            return in_savepoint(conn, |conn| {
                replace_legacy_table(conn, &self.log_table)?;
                self.create_log(conn)?;
                for table in self.captured_tables(conn)? {
                    if schema::is_plain_table(conn, &table)? {
                        self.drop_triggers(conn, &table)?;
                        self.install(conn, &table)?;
                    }
                }
                Ok(())
            });
        }
        self.create_log(conn)
    }

    /// Creates what is missing, in one step. A log created while tables are captured
    /// (it was dropped under Astha) is created whole: as wide as every captured table's
    /// triggers write, so no user write fails on a missing column, and starting with a
    /// placeholder row at the LSN high-water mark, so no LSN is handed out twice
    /// ([`crate::log_state`]).
    fn create_log(&self, conn: &Connection) -> Result<()> {
        in_savepoint(conn, |conn| {
            let existed = schema::is_plain_table(conn, &self.log_table)?;
            let log = quote_ident(&self.log_table);
            let columns = log_layout::definitions(&log_layout::LOG_COLUMNS);
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {log} ({columns});
                CREATE TABLE IF NOT EXISTS __astha_captured (
                    tbl TEXT PRIMARY KEY,
                    schema_id INTEGER NOT NULL
                );"
            ))?;
            schema::ensure_schema_table(conn)?;
            crate::slots::ensure_tables(conn)?;
            replace_legacy_table(conn, crate::dead_letter::TABLE)?;
            crate::dead_letter::ensure_table(conn)?;
            crate::heartbeat::ensure_table(conn)?;
            if !existed {
                let width = self.captured_width(conn)?;
                image::widen(conn, &self.log_table, width)?;
                let floor = crate::log_state::floor(conn)?;
                crate::log_state::write_placeholder(conn, &self.log_table, floor)?;
                if floor > 0 || width > 0 {
                    tracing::error!(
                        log = %self.log_table,
                        numbering_after = floor,
                        value_columns = width,
                        "the change log was missing (dropped under Astha) and was created \
                         again; changes in it before the drop are lost"
                    );
                }
            }
            crate::log_state::ensure(conn, &self.log_table)
        })
    }

    /// Value columns the triggers of every captured table write.
    fn captured_width(&self, conn: &Connection) -> Result<usize> {
        let mut width = 0;
        for table in self.captured_tables(conn)? {
            if let Some(schema) = self.captured_schema(conn, &table)? {
                width = width.max(image::columns_needed_by(&schema));
            }
        }
        Ok(width)
    }

    /// Captures `table`: creates its triggers, or regenerates them if its columns changed.
    pub fn install(&self, conn: &Connection, table: &str) -> Result<InstallOutcome> {
        self.check_capturable(conn, table)?;
        in_savepoint(conn, |conn| {
            self.ensure_log(conn)?;
            let (columns, primary_key) = schema::live_columns(conn, table)?;
            let max = image::max_table_columns();
            if columns.len() > max {
                return Err(CoreError::Invalid(format!(
                    "table {table:?} has {} columns; Astha captures tables of up to {max}",
                    columns.len()
                )));
            }
            if primary_key.is_empty() {
                tracing::warn!(
                    table,
                    "captured table has no primary key: consumers cannot tell identical rows \
                     apart, and a change's key is the whole row"
                );
            }
            let exact = schema::live_exactness(conn, table, &columns)?;
            let current = self.captured_schema(conn, table)?;
            if let Some(s) = &current {
                if s.columns == columns
                    && s.primary_key == primary_key
                    && s.exact == exact
                    && self.triggers_current(conn, s)?
                {
                    return Ok(InstallOutcome::Unchanged);
                }
            }
            let outcome = match current {
                None => InstallOutcome::Installed,
                Some(_) => InstallOutcome::Regenerated,
            };
            let schema = schema::record_schema(conn, table, columns, primary_key, exact)?;
            let needed = image::columns_needed_by(&schema);
            image::widen(conn, &self.log_table, needed)?;
            image::widen(conn, crate::dead_letter::TABLE, needed)?;
            self.drop_triggers(conn, table)?;
            self.create_triggers(conn, &schema)?;
            conn.execute(
                "INSERT INTO __astha_captured (tbl, schema_id) VALUES (?1, ?2)
                 ON CONFLICT (tbl) DO UPDATE SET schema_id = excluded.schema_id",
                (table, schema.id),
            )?;
            tracing::info!(table, schema_id = schema.id, ?outcome, "capture installed");
            Ok(outcome)
        })
    }

    /// Stops capturing `table`. Returns false if it was not captured. Log rows already
    /// written stay in the log and are still delivered.
    pub fn uninstall(&self, conn: &Connection, table: &str) -> Result<bool> {
        in_savepoint(conn, |conn| {
            if !self.has_bookkeeping(conn)? {
                return Ok(false);
            }
            self.drop_triggers(conn, table)?;
            let removed = conn.execute("DELETE FROM __astha_captured WHERE tbl = ?1", [table])?;
            Ok(removed > 0)
        })
    }

    /// Names of the captured tables, in name order.
    pub fn captured_tables(&self, conn: &Connection) -> Result<Vec<String>> {
        if !self.has_bookkeeping(conn)? {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare("SELECT tbl FROM __astha_captured ORDER BY tbl")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// Brings every captured table's triggers in line with its live schema.
    pub fn refresh(&self, conn: &Connection) -> Result<Vec<RefreshChange>> {
        let mut changes = Vec::new();
        for table in self.captured_tables(conn)? {
            if !schema::is_plain_table(conn, &table)? {
                // Keep the entry, marked missing: a table created again under this name
                // is captured again by the next refresh.
                let marked = conn.execute(
                    "UPDATE __astha_captured SET schema_id = ?2 WHERE tbl = ?1 AND schema_id <> ?2",
                    (&table, MISSING_TABLE),
                )?;
                if marked > 0 {
                    tracing::warn!(
                        table,
                        "captured table was dropped; it is captured again if re-created"
                    );
                    changes.push(RefreshChange::Dropped { table });
                }
                continue;
            }
            if self.install(conn, &table)? != InstallOutcome::Unchanged {
                let schema_id = self
                    .captured_schema(conn, &table)?
                    .map(|s| s.id)
                    .unwrap_or_default();
                changes.push(RefreshChange::Regenerated { table, schema_id });
            }
        }
        Ok(changes)
    }

    /// Runs `alter_sql` (an `ALTER TABLE` or any schema change of `table`) with the
    /// table's triggers dropped before and regenerated after, in one transaction.
    pub fn alter(&self, conn: &Connection, table: &str, alter_sql: &str) -> Result<()> {
        in_savepoint(conn, |conn| {
            self.drop_triggers(conn, table)?;
            conn.execute_batch(alter_sql)?;
            if schema::is_plain_table(conn, table)? {
                self.install(conn, table)?;
            } else {
                conn.execute("DELETE FROM __astha_captured WHERE tbl = ?1", [table])?;
            }
            Ok(())
        })
    }

    fn check_capturable(&self, conn: &Connection, table: &str) -> Result<()> {
        if table.starts_with(INTERNAL_PREFIX)
            || table == self.log_table
            || table.to_ascii_lowercase().starts_with("sqlite_")
        {
            return Err(CoreError::Invalid(format!(
                "table {table:?} is internal and cannot be captured"
            )));
        }
        if !schema::is_plain_table(conn, table)? {
            let reason = schema::not_capturable_reason(conn, table)?;
            if reason.starts_with("the database has no table") {
                return Err(CoreError::NoSuchTable(table.to_string()));
            }
            return Err(CoreError::Invalid(reason));
        }
        Ok(())
    }

    fn has_bookkeeping(&self, conn: &Connection) -> Result<bool> {
        schema::is_plain_table(conn, "__astha_captured")
    }

    /// The schema the table's current triggers were generated from.
    pub fn captured_schema(&self, conn: &Connection, table: &str) -> Result<Option<TableSchema>> {
        if !self.has_bookkeeping(conn)? {
            return Ok(None);
        }
        let id: Option<i64> = conn
            .query_row(
                "SELECT schema_id FROM __astha_captured WHERE tbl = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => Ok(schema::load_schema(conn, id)?.map(|s| (*s).clone())),
            None => Ok(None),
        }
    }

    /// True if the table's three triggers exist and are exactly what this build
    /// generates for `schema` (so triggers of an earlier build, or edited by hand, are
    /// regenerated).
    fn triggers_current(&self, conn: &Connection, schema: &TableSchema) -> Result<bool> {
        let names = trigger_names(&schema.table);
        let expected = trigger_sql(&self.log_table, schema);
        for (name, sql) in names.iter().zip(&expected) {
            let live: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            if live.as_deref() != Some(sql.as_str()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn drop_triggers(&self, conn: &Connection, table: &str) -> Result<()> {
        for name in trigger_names(table) {
            conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))?;
        }
        Ok(())
    }

    fn create_triggers(&self, conn: &Connection, schema: &TableSchema) -> Result<()> {
        for sql in trigger_sql(&self.log_table, schema) {
            conn.execute_batch(&sql)?;
        }
        Ok(())
    }
}

/// The three trigger names for `table`: insert, update, delete.
pub fn trigger_names(table: &str) -> [String; 3] {
    ["ins", "upd", "del"].map(|op| format!("{INTERNAL_PREFIX}cdc_{op}_{table}"))
}

/// The `CREATE TRIGGER` statements that capture `schema`'s table into `log_table`.
pub fn trigger_sql(log_table: &str, schema: &TableSchema) -> [String; 3] {
    let names = trigger_names(&schema.table).map(|n| quote_ident(&n));
    let table = quote_ident(&schema.table);
    let log = quote_ident(log_table);
    let name = quote_literal(&schema.table);
    let id = schema.id;
    let [ins, upd, del] = names;
    [
        (ins, Operation::Insert, "INSERT"),
        (upd, Operation::Update, "UPDATE"),
        (del, Operation::Delete, "DELETE"),
    ]
    .map(|(trigger, op, event)| {
        let (value_columns, values) = image::trigger_values(op, schema);
        format!(
            "CREATE TRIGGER {trigger} AFTER {event} ON {table} BEGIN \
             INSERT INTO {log} (ts, tbl, op, schema_id, {value_columns}) \
             VALUES (julianday('now'), {name}, '{}', {id}, {values}); END",
            op.code()
        )
    })
}

/// True if `table` exists in the text-image format of earlier builds.
fn is_legacy_table(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = 'before'",
        [table],
        |r| r.get(0),
    )?)
}

/// A table of Astha's in the text-image format of earlier builds (it has a `before`
/// column): dropped when empty, so it is created again in the current format; refused
/// when it still holds rows.
fn replace_legacy_table(conn: &Connection, table: &str) -> Result<()> {
    if !is_legacy_table(conn, table)? {
        return Ok(());
    }
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", quote_ident(table)),
        [],
        |r| r.get(0),
    )?;
    if rows > 0 {
        return Err(CoreError::Invalid(format!(
            "{table} holds {rows} rows in the text-image format of an earlier Astha build; \
             drain it with that build (or drop the table), then start again"
        )));
    }
    conn.execute_batch(&format!("DROP TABLE {}", quote_ident(table)))?;
    Ok(())
}

/// Runs `f` atomically: in a savepoint inside a caller's transaction, otherwise in a
/// `BEGIN IMMEDIATE` transaction. Taking the write lock up front matters: a deferred
/// transaction that reads and then writes fails with `SQLITE_BUSY_SNAPSHOT` (which no busy
/// timeout retries) when another connection commits in between.
pub fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let outer = conn.is_autocommit();
    let (begin, commit, rollback) = if outer {
        ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
    } else {
        (
            "SAVEPOINT astha",
            "RELEASE astha",
            "ROLLBACK TO astha; RELEASE astha",
        )
    };
    conn.execute_batch(begin)?;
    match f(conn) {
        Ok(value) => {
            conn.execute_batch(commit)?;
            Ok(value)
        }
        Err(err) => {
            let _ = conn.execute_batch(rollback);
            Err(err)
        }
    }
}
