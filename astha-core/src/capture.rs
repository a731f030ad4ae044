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
//!   new column is not captured; [`Capture::alter_with`] does the same for any DDL;
//! - what another connection's schema change leaves ambiguous is recorded as a gap
//!   ([`crate::gaps`]) in the transaction that regenerates the triggers, and a captured
//!   table found without its triggers (re-created) has its rows logged again, marked;
//! - with [`Capture::with_exact_replace`], a row removed by `INSERT OR REPLACE` is
//!   logged as a DELETE whatever the writer's `recursive_triggers`.

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

/// Where [`Capture::with_exact_replace`]'s triggers keep the rows an INSERT is about to
/// replace, until the INSERT has happened.
pub const REPLACED_TABLE: &str = "__astha_replaced";

/// Where a gap for columns another connection added starts ([`crate::gaps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    /// The caller proved every row up to this LSN complete.
    Lsn(i64),
    /// Nothing better is known: [`Capture::fallback_since`].
    Fallback,
    /// No gap: the change is this transaction's own.
    Head,
}

/// Whether a captured table found without its triggers (dropped and created again by
/// another connection) gets its rows logged as INSERTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recover {
    Yes,
    /// The triggers were dropped by this transaction itself.
    No,
}

/// Trigger capture into one change-log table.
#[derive(Debug, Clone)]
pub struct Capture {
    log_table: String,
    exact_replace: bool,
}

impl Capture {
    /// Capture into the log table named `log_table` (Astha's default is `__cdc_log`).
    pub fn new(log_table: impl Into<String>) -> Self {
        Self {
            log_table: log_table.into(),
            exact_replace: false,
        }
    }

    /// Captures the rows an `INSERT OR REPLACE` (or a `REPLACE` conflict clause) removes
    /// as DELETEs even when the writer's connection has `recursive_triggers` off (the
    /// default of SQLite and of most drivers), where SQLite fires no delete trigger for
    /// them (and likewise for `UPDATE OR REPLACE`). It costs every captured INSERT and
    /// UPDATE a lookup per unique key and a few statements (BENCHMARKS.md);
    /// see [`replace_trigger_sql`] for how, and what it does not cover.
    pub fn with_exact_replace(mut self, on: bool) -> Self {
        self.exact_replace = on;
        self
    }

    /// Whether replaced rows are captured without `recursive_triggers`.
    pub fn exact_replace(&self) -> bool {
        self.exact_replace
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
                        self.install_with(conn, &table, Since::Fallback, Recover::No)?;
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
            let wide_table = log_layout::wide_table(&self.log_table);
            let wide_existed = schema::is_plain_table(conn, &wide_table)?;
            let log = quote_ident(&self.log_table);
            let columns = log_layout::definitions(&log_layout::LOG_COLUMNS);
            let wide = quote_ident(&wide_table);
            let wide_columns = log_layout::definitions(&log_layout::WIDE_COLUMNS);
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {log} ({columns});
                CREATE TABLE IF NOT EXISTS {wide} ({wide_columns});
                CREATE TABLE IF NOT EXISTS __astha_captured (
                    tbl TEXT PRIMARY KEY,
                    schema_id INTEGER NOT NULL
                );"
            ))?;
            let has_verified: bool = conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('__astha_captured') WHERE name = 'verified_lsn'",
                [],
                |r| r.get(0),
            )?;
            if !has_verified {
                // The newest LSN known written by triggers made for the table's current
                // columns: where a gap starts when nothing better is known ([`Since`]).
                conn.execute_batch("ALTER TABLE __astha_captured ADD COLUMN verified_lsn INTEGER")?;
            }
            crate::gaps::ensure_table(conn)?;
            schema::ensure_schema_table(conn)?;
            crate::slots::ensure_tables(conn)?;
            replace_legacy_table(conn, crate::dead_letter::TABLE)?;
            crate::dead_letter::ensure_table(conn)?;
            crate::heartbeat::ensure_table(conn)?;
            if !wide_existed {
                // New, or dropped under Astha: as wide as the wide tables' triggers write.
                let (_, wide_width) = self.captured_width(conn)?;
                image::widen(conn, &wide_table, wide_width)?;
            }
            if !existed {
                let (width, wide_width) = self.captured_width(conn)?;
                image::widen(conn, &self.log_table, width)?;
                let floor = crate::log_state::floor(conn)?;
                crate::log_state::write_placeholder(conn, &self.log_table, floor)?;
                if floor > 0 || width + wide_width > 0 {
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

    /// Value columns the triggers of every captured table write: into the log (narrow
    /// tables), and into the wide table (wide ones).
    fn captured_width(&self, conn: &Connection) -> Result<(usize, usize)> {
        let (mut narrow, mut wide) = (0, 0);
        for table in self.captured_tables(conn)? {
            if let Some(schema) = self.captured_schema(conn, &table)? {
                let width = match image::is_wide(&schema) {
                    true => &mut wide,
                    false => &mut narrow,
                };
                *width = (*width).max(image::columns_needed_by(&schema));
            }
        }
        Ok((narrow, wide))
    }

    /// Where `schema`'s triggers write values: the log, or for a wide table the wide table.
    fn values_table(&self, schema: &TableSchema) -> String {
        match image::is_wide(schema) {
            true => log_layout::wide_table(&self.log_table),
            false => self.log_table.clone(),
        }
    }

    /// Drops the log's value columns that no captured table's triggers write any more:
    /// the way out for a log an earlier build widened for a wide table (which now keeps
    /// its values apart, [`image::is_wide`]), whose width every narrow table's write
    /// still pays. Regenerates every captured table's triggers first (so none names a
    /// dropped column), then refuses, changing nothing, while any log row still holds a
    /// value in a column to drop: let the consumers pass those rows and cleanup remove
    /// them, then call again. Each dropped column rewrites the log (SQLite's `DROP
    /// COLUMN`), so call it on a drained log. Returns the number of columns dropped.
    pub fn narrow_log(&self, conn: &Connection) -> Result<usize> {
        in_savepoint(conn, |conn| {
            self.refresh(conn)?;
            let (needed, _) = self.captured_width(conn)?;
            let have = image::value_columns(conn, &self.log_table)?;
            if have <= needed {
                return Ok(0);
            }
            let log = quote_ident(&self.log_table);
            let extra: Vec<String> = (needed..have).map(image::value_column).collect();
            let held = extra
                .iter()
                .map(|c| format!("{c} IS NOT NULL"))
                .collect::<Vec<_>>()
                .join(" OR ");
            let holding: Option<i64> = conn
                .query_row(
                    &format!("SELECT id FROM {log} WHERE {held} ORDER BY id DESC LIMIT 1"),
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(lsn) = holding {
                return Err(CoreError::Invalid(format!(
                    "the log {} still holds values in columns {}..{} (the newest at LSN \
                     {lsn}); narrow it once every consumer is past that LSN and cleanup \
                     has removed the rows",
                    self.log_table,
                    extra[0],
                    extra[extra.len() - 1]
                )));
            }
            for column in extra.iter().rev() {
                conn.execute_batch(&format!("ALTER TABLE {log} DROP COLUMN {column}"))?;
            }
            tracing::info!(log = %self.log_table, dropped = extra.len(), "log narrowed");
            Ok(extra.len())
        })
    }

    /// Captures `table`: creates its triggers, or regenerates them if its columns changed.
    ///
    /// When another connection changed the table since its triggers were made, the
    /// changes that may lack values are marked ([`crate::gaps`]): after columns were
    /// added, the table's log rows since the last LSN known complete (the newest this
    /// function or a slot saw, see [`Since::Fallback`]); after it was dropped and
    /// created again (its triggers are gone), the rows it holds now are logged as
    /// INSERTs, marked, since the writes that made them were not captured.
    pub fn install(&self, conn: &Connection, table: &str) -> Result<InstallOutcome> {
        self.install_with(conn, table, Since::Fallback, Recover::Yes)
    }

    fn install_with(
        &self,
        conn: &Connection,
        table: &str,
        since: Since,
        recover: Recover,
    ) -> Result<InstallOutcome> {
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
            let head = crate::log::head_lsn(conn, &self.log_table)?;
            if let Some(s) = &current {
                if s.columns == columns
                    && s.primary_key == primary_key
                    && s.exact == exact
                    && self.triggers_current(conn, s)?
                {
                    self.set_verified(conn, table, head)?;
                    return Ok(InstallOutcome::Unchanged);
                }
            }
            let known = self.is_captured(conn, table)?;
            let recreated =
                known && recover == Recover::Yes && !self.any_trigger_exists(conn, table)?;
            let outcome = match current {
                None => InstallOutcome::Installed,
                Some(_) => InstallOutcome::Regenerated,
            };
            if let Some(old) = &current {
                let added: Vec<String> = columns
                    .iter()
                    .filter(|c| !old.columns.contains(c))
                    .cloned()
                    .collect();
                if !added.is_empty() && !recreated {
                    let after_lsn = match since {
                        Since::Lsn(lsn) => lsn,
                        Since::Fallback => self.fallback_since(conn, table)?,
                        Since::Head => head,
                    };
                    crate::gaps::record(
                        conn,
                        &crate::gaps::Gap {
                            table: table.to_string(),
                            schema_id: old.id,
                            after_lsn,
                            upto_lsn: head,
                            mark: std::sync::Arc::new(crate::gaps::Incomplete {
                                reason: crate::gaps::Reason::ColumnsAdded,
                                columns: added,
                            }),
                        },
                    )?;
                }
            }
            let schema = schema::record_schema(conn, table, columns, primary_key, exact)?;
            let needed = image::columns_needed_by(&schema);
            image::widen(conn, &self.values_table(&schema), needed)?;
            image::widen(conn, crate::dead_letter::TABLE, needed)?;
            if self.exact_replace {
                ensure_replaced_table(conn, schema.columns.len())?;
            }
            self.drop_triggers(conn, table)?;
            self.create_triggers(conn, &schema)?;
            conn.execute(
                "INSERT INTO __astha_captured (tbl, schema_id) VALUES (?1, ?2)
                 ON CONFLICT (tbl) DO UPDATE SET schema_id = excluded.schema_id",
                (table, schema.id),
            )?;
            let head = match recreated {
                true => self.log_recreated_rows(conn, &schema, head)?,
                false => head,
            };
            self.set_verified(conn, table, head)?;
            tracing::info!(table, schema_id = schema.id, ?outcome, "capture installed");
            Ok(outcome)
        })
    }

    /// Logs every row of a re-created table as an INSERT, marked
    /// [`Reason::Recreated`](crate::gaps::Reason::Recreated); returns the new head.
    fn log_recreated_rows(
        &self,
        conn: &Connection,
        schema: &TableSchema,
        head: i64,
    ) -> Result<i64> {
        let values = schema
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // A total order (the rowid, or the primary key of a WITHOUT ROWID table), so a
        // wide table's two statements below see the rows in the same order.
        let order = match row_key(conn, schema)? {
            RowKey::Rowid => "rowid".to_string(),
            RowKey::Columns(positions) => positions
                .iter()
                .map(|&i| quote_ident(&schema.columns[i]))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let order = match order.is_empty() {
            true => String::new(),
            false => format!(" ORDER BY {order}"),
        };
        let log = quote_ident(&self.log_table);
        let table = quote_ident(&schema.table);
        let insert = Operation::Insert.code();
        let value_columns = image::value_list(schema.columns.len());
        let rows = match image::is_wide(schema) {
            false => conn.execute(
                &format!(
                    "INSERT INTO {log} (ts, tbl, op, schema_id, {value_columns}) \
                     SELECT julianday('now'), ?1, '{insert}', ?2, {values} FROM {table}{order}"
                ),
                (&schema.table, schema.id),
            )?,
            true => {
                // The log numbers the rows `max(id) + 1` each, so they hold the last
                // `rows` ids, in the same order as the wide rows numbered here.
                let rows = conn.execute(
                    &format!(
                        "INSERT INTO {log} (ts, tbl, op, schema_id) \
                         SELECT julianday('now'), ?1, '{insert}', ?2 FROM {table}{order}"
                    ),
                    (&schema.table, schema.id),
                )?;
                conn.execute(
                    &format!(
                        "INSERT INTO {} (id, {value_columns}) \
                         SELECT (SELECT max(id) FROM {log}) - ?1 \
                         + row_number() OVER ({order}), {values} FROM {table}{order}",
                        quote_ident(&log_layout::wide_table(&self.log_table)),
                        order = order.trim_start(),
                    ),
                    [rows as i64],
                )?;
                rows
            }
        };
        let new_head = crate::log::head_lsn(conn, &self.log_table)?;
        tracing::warn!(
            table = schema.table,
            rows,
            "captured table was dropped and created again by another connection: its \
             writes until now were not captured; its rows are logged as INSERTs, marked \
             recreated"
        );
        crate::gaps::record(
            conn,
            &crate::gaps::Gap {
                table: schema.table.clone(),
                schema_id: schema.id,
                after_lsn: head,
                upto_lsn: new_head,
                mark: std::sync::Arc::new(crate::gaps::Incomplete {
                    reason: crate::gaps::Reason::Recreated,
                    columns: Vec::new(),
                }),
            },
        )?;
        Ok(new_head)
    }

    fn is_captured(&self, conn: &Connection, table: &str) -> Result<bool> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM __astha_captured WHERE tbl = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn any_trigger_exists(&self, conn: &Connection, table: &str) -> Result<bool> {
        for name in trigger_names(table) {
            let found = conn
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn set_verified(&self, conn: &Connection, table: &str, lsn: i64) -> Result<()> {
        conn.execute(
            "UPDATE __astha_captured SET verified_lsn = max(coalesce(verified_lsn, 0), ?2) WHERE tbl = ?1",
            (table, lsn),
        )?;
        Ok(())
    }

    /// Where a gap starts when the caller knows nothing better: the newest of the LSN
    /// at which the table's triggers were last found current and the lowest slot
    /// position (rows every consumer has already had are past marking).
    fn fallback_since(&self, conn: &Connection, table: &str) -> Result<i64> {
        let verified: Option<i64> = conn
            .query_row(
                "SELECT verified_lsn FROM __astha_captured WHERE tbl = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let slots: Option<i64> =
            conn.query_row("SELECT min(position) FROM __astha_slots", [], |r| r.get(0))?;
        Ok(verified.unwrap_or(0).max(slots.unwrap_or(0)))
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
        self.refresh_since(conn, None)
    }

    /// [`Capture::refresh`] for a caller that knows every log row up to `verified` was
    /// written by triggers made for the columns they name (it read them under the schema
    /// version those triggers were made in): a gap for columns added since starts there.
    pub fn refresh_since(
        &self,
        conn: &Connection,
        verified: Option<i64>,
    ) -> Result<Vec<RefreshChange>> {
        let since = verified.map_or(Since::Fallback, Since::Lsn);
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
            if self.install_with(conn, &table, since, Recover::Yes)? != InstallOutcome::Unchanged {
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
            // Catch up with schema changes made by others first, so what they left
            // incomplete is marked; this one's own changes leave nothing incomplete.
            if schema::is_plain_table(conn, table)? && self.is_captured(conn, table)? {
                self.install(conn, table)?;
            }
            self.drop_triggers(conn, table)?;
            conn.execute_batch(alter_sql)?;
            if schema::is_plain_table(conn, table)? {
                self.install_with(conn, table, Since::Head, Recover::No)?;
            } else {
                conn.execute("DELETE FROM __astha_captured WHERE tbl = ?1", [table])?;
            }
            Ok(())
        })
    }

    /// Runs `ddl` (any schema changes: `ALTER TABLE`, a table rebuilt by `CREATE`, copy,
    /// `DROP` and `RENAME`, new tables) in one transaction with the triggers of every
    /// captured table dropped before and re-installed after, so no write is ever made
    /// without capture and nothing is marked incomplete ([`crate::gaps`]). A captured
    /// table `ddl` drops is kept marked missing, and captured again if re-created.
    /// Schema changes made earlier by other connections are caught up with first.
    pub fn alter_with<T>(
        &self,
        conn: &Connection,
        ddl: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<(T, Vec<RefreshChange>)> {
        in_savepoint(conn, |conn| {
            let mut changes = self.refresh(conn)?;
            let tables = self.captured_tables(conn)?;
            for table in &tables {
                self.drop_triggers(conn, table)?;
            }
            let value = ddl(conn)?;
            for table in tables {
                if !schema::is_plain_table(conn, &table)? {
                    conn.execute(
                        "UPDATE __astha_captured SET schema_id = ?2 WHERE tbl = ?1",
                        (&table, MISSING_TABLE),
                    )?;
                    changes.push(RefreshChange::Dropped { table });
                    continue;
                }
                if self.install_with(conn, &table, Since::Head, Recover::No)?
                    != InstallOutcome::Unchanged
                {
                    let schema_id = self
                        .captured_schema(conn, &table)?
                        .map(|s| s.id)
                        .unwrap_or_default();
                    changes.push(RefreshChange::Regenerated { table, schema_id });
                }
            }
            Ok((value, changes))
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
        let expected = self.all_trigger_sql(conn, schema)?;
        let names = trigger_names(&schema.table)
            .into_iter()
            .chain(replace_trigger_names(&schema.table));
        for (name, sql) in names.zip(expected) {
            let live: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()?;
            if live != sql {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every trigger this capture wants on `schema`'s table, in the order of
    /// [`trigger_names`] then [`replace_trigger_names`]; `None` for one it does not want.
    fn all_trigger_sql(
        &self,
        conn: &Connection,
        schema: &TableSchema,
    ) -> Result<Vec<Option<String>>> {
        let mut all: Vec<Option<String>> = if self.exact_replace {
            exact_replace_trigger_sql(&self.log_table, schema, &row_key(conn, schema)?)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            trigger_sql(&self.log_table, schema)
                .into_iter()
                .map(Some)
                .collect()
        };
        match self.exact_replace {
            true => all.extend(replace_trigger_sql(conn, schema)?.into_iter().map(Some)),
            false => all.extend([None, None, None]),
        }
        Ok(all)
    }

    fn drop_triggers(&self, conn: &Connection, table: &str) -> Result<()> {
        for name in trigger_names(table)
            .into_iter()
            .chain(replace_trigger_names(table))
        {
            conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))?;
        }
        Ok(())
    }

    fn create_triggers(&self, conn: &Connection, schema: &TableSchema) -> Result<()> {
        for sql in self.all_trigger_sql(conn, schema)?.into_iter().flatten() {
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
    triggers_with_prefix(log_table, schema, "", "")
}

/// [`trigger_sql`] with `first` run at the start of the INSERT trigger, and
/// `first_update` at the start of the UPDATE trigger.
fn triggers_with_prefix(
    log_table: &str,
    schema: &TableSchema,
    first: &str,
    first_update: &str,
) -> [String; 3] {
    let names = trigger_names(&schema.table).map(|n| quote_ident(&n));
    let table = quote_ident(&schema.table);
    let log = quote_ident(log_table);
    let name = quote_literal(&schema.table);
    let id = schema.id;
    let [ins, upd, del] = names;
    [
        (ins, Operation::Insert, "INSERT", first),
        (upd, Operation::Update, "UPDATE", first_update),
        (del, Operation::Delete, "DELETE", ""),
    ]
    .map(|(trigger, op, event, first)| {
        let (value_columns, values) = image::trigger_values(op, schema);
        let code = op.code();
        let insert = match image::is_wide(schema) {
            // The log row's id (its LSN) keys the wide row: within a trigger,
            // `last_insert_rowid()` is the row the trigger itself inserted last.
            true => format!(
                "INSERT INTO {log} (ts, tbl, op, schema_id) \
                 VALUES (julianday('now'), {name}, '{code}', {id}); \
                 INSERT INTO {wide} (id, {value_columns}) \
                 VALUES (last_insert_rowid(), {values});",
                wide = quote_ident(&log_layout::wide_table(log_table)),
            ),
            false => format!(
                "INSERT INTO {log} (ts, tbl, op, schema_id, {value_columns}) \
                 VALUES (julianday('now'), {name}, '{code}', {id}, {values});"
            ),
        };
        format!("CREATE TRIGGER {trigger} AFTER {event} ON {table} BEGIN {first}{insert} END")
    })
}

/// The three extra triggers of [`Capture::with_exact_replace`]: before an insert,
/// before an update, and after a delete.
pub fn replace_trigger_names(table: &str) -> [String; 3] {
    ["rep", "rpu", "rpd"].map(|op| format!("{INTERNAL_PREFIX}cdc_{op}_{table}"))
}

/// How a captured row is told apart from others of its table: its rowid, or for a
/// `WITHOUT ROWID` table its primary key columns' positions.
enum RowKey {
    Rowid,
    Columns(Vec<usize>),
}

fn row_key(conn: &Connection, schema: &TableSchema) -> Result<RowKey> {
    let without_rowid: bool = conn
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [&schema.table],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false);
    Ok(match without_rowid {
        false => RowKey::Rowid,
        true => RowKey::Columns(
            schema
                .primary_key
                .iter()
                .filter_map(|c| schema.position(c))
                .collect(),
        ),
    })
}

/// `(a = x AND b = y)` over the key columns of each unique constraint of `table` that an
/// `INSERT OR REPLACE` can conflict on and a trigger can test: plain columns, no
/// `WHERE` (partial unique indexes and indexes on expressions are left out, and a
/// warning says so). `side` is the row the new one is compared with (`NEW`).
fn unique_conditions(conn: &Connection, table: &str, side: &str) -> Result<Vec<String>> {
    let mut list = conn.prepare(
        "SELECT name, partial FROM pragma_index_list(?1) WHERE \"unique\" ORDER BY name",
    )?;
    let indexes = list
        .query_map([table], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut conditions = Vec::new();
    for (index, partial) in indexes {
        let mut info = conn.prepare(
            "SELECT cid, name, coll FROM pragma_index_xinfo(?1) WHERE key ORDER BY seqno",
        )?;
        let columns = info
            .query_map([&index], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if partial
            || columns
                .iter()
                .any(|(cid, name, _)| *cid < 0 || name.is_none())
        {
            tracing::warn!(
                table,
                index,
                "exact_replace cannot see conflicts on a partial unique index or one on \
                 expressions: a row INSERT OR REPLACE removes through it is not captured \
                 without recursive_triggers"
            );
            continue;
        }
        let terms: Vec<String> = columns
            .iter()
            .map(|(_, name, coll)| {
                let c = quote_ident(name.as_deref().unwrap_or_default());
                format!("t.{c} = {side}.{c} COLLATE {}", quote_ident(coll))
            })
            .collect();
        conditions.push(format!("({})", terms.join(" AND ")));
    }
    Ok(conditions)
}

/// The two extra triggers of [`Capture::with_exact_replace`], named by
/// [`replace_trigger_names`].
///
/// SQLite fires delete triggers for the rows a REPLACE removes only under
/// `recursive_triggers`. A BEFORE INSERT trigger still sees those rows: it copies every
/// row the new one conflicts with (same rowid, or same values in a unique constraint) to
/// [`REPLACED_TABLE`]. The INSERT trigger then logs each copy as a DELETE, before the
/// INSERT, if the insert really replaced it: the row is gone, or the new row took its
/// rowid (or key). A BEFORE trigger cannot know how the statement resolves a conflict,
/// so a copy made for an `INSERT OR IGNORE` or an upsert that did not replace is simply
/// never logged, and cleared by the next insert. Under `recursive_triggers` SQLite does
/// fire the delete trigger: the second trigger here removes the copy then, so the row
/// is logged once. `UPDATE OR REPLACE` is handled the same way by a BEFORE UPDATE
/// trigger (rows other than the one updated) and the UPDATE trigger. Not covered:
/// partial or expression unique indexes ([`unique_conditions`]).
pub fn replace_trigger_sql(conn: &Connection, schema: &TableSchema) -> Result<[String; 3]> {
    let [rep, rpu, rpd] = replace_trigger_names(&schema.table).map(|n| quote_ident(&n));
    let table = quote_ident(&schema.table);
    let name = quote_literal(&schema.table);
    let pending = quote_ident(REPLACED_TABLE);
    let columns = image::value_list(schema.columns.len());
    let values: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect();
    let values = values.join(", ");
    let key = row_key(conn, schema)?;
    let mut conflicts = unique_conditions(conn, &schema.table, "NEW")?;
    let (rid, forget, other_than_old) = match &key {
        RowKey::Rowid => {
            // NEW.rowid is -1 before an insert that lets SQLite choose the rowid: a
            // row -1 copied here is not logged, as it is still there afterwards.
            conflicts.insert(0, "t.rowid = NEW.rowid".to_string());
            (
                "t.rowid",
                "rid = OLD.rowid".to_string(),
                "t.rowid <> OLD.rowid".to_string(),
            )
        }
        RowKey::Columns(positions) => {
            let same = |pick: &dyn Fn(usize) -> String| {
                positions
                    .iter()
                    .map(|&i| pick(i))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            let old = |i: usize| format!("OLD.{}", quote_ident(&schema.columns[i]));
            (
                "NULL",
                same(&|i| format!("{} = {}", image::value_column(i), old(i))),
                format!(
                    "NOT ({})",
                    same(&|i| format!("t.{} IS {}", quote_ident(&schema.columns[i]), old(i)))
                ),
            )
        }
    };
    let conflict = conflicts.join(" OR ");
    // An UPDATE conflicts with rows other than the one it changes.
    let update_conflict = format!("({conflict}) AND {other_than_old}");
    let copy = |event: &str, trigger: &str, conflict: &str| {
        format!(
            "CREATE TRIGGER {trigger} BEFORE {event} ON {table} \
             WHEN EXISTS (SELECT 1 FROM {table} AS t WHERE {conflict}) BEGIN \
             DELETE FROM {pending} WHERE tbl = {name}; \
             INSERT INTO {pending} (tbl, rid, {columns}) \
             SELECT {name}, {rid}, {values} FROM {table} AS t WHERE {conflict}; END"
        )
    };
    Ok([
        copy("INSERT", &rep, &conflict),
        copy("UPDATE", &rpu, &update_conflict),
        format!(
            "CREATE TRIGGER {rpd} AFTER DELETE ON {table} \
             WHEN EXISTS (SELECT 1 FROM {pending} WHERE tbl = {name}) BEGIN \
             DELETE FROM {pending} WHERE tbl = {name} AND {forget}; END"
        ),
    ])
}

/// [`trigger_sql`] for [`Capture::with_exact_replace`]: the INSERT trigger first logs,
/// as DELETEs, the rows [`replace_trigger_sql`]'s BEFORE trigger saw this insert replace.
fn exact_replace_trigger_sql(log_table: &str, schema: &TableSchema, key: &RowKey) -> [String; 3] {
    let table = quote_ident(&schema.table);
    let name = quote_literal(&schema.table);
    let pending = quote_ident(REPLACED_TABLE);
    let log = quote_ident(log_table);
    let columns = image::value_list(schema.columns.len());
    let replaced = match key {
        RowKey::Rowid => format!(
            "p.rid = NEW.rowid OR NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.rowid = p.rid)"
        ),
        RowKey::Columns(positions) => {
            let pairs: Vec<(String, String)> = positions
                .iter()
                .map(|&i| (image::value_column(i), quote_ident(&schema.columns[i])))
                .collect();
            let same_new: Vec<String> = pairs
                .iter()
                .map(|(v, c)| format!("p.{v} = NEW.{c}"))
                .collect();
            let same_t: Vec<String> = pairs
                .iter()
                .map(|(v, c)| format!("t.{c} = p.{v}"))
                .collect();
            format!(
                "({}) OR NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {})",
                same_new.join(" AND "),
                same_t.join(" AND ")
            )
        }
    };
    // A copy of the updated row itself is one an upsert's insert attempt left: the
    // row was updated, not replaced.
    let not_old = match key {
        RowKey::Rowid => "p.rid IS NOT OLD.rowid".to_string(),
        RowKey::Columns(positions) => format!(
            "NOT ({})",
            positions
                .iter()
                .map(|&i| format!(
                    "p.{} IS OLD.{}",
                    image::value_column(i),
                    quote_ident(&schema.columns[i])
                ))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
    };
    let delete = Operation::Delete.code();
    let id = schema.id;
    let wide = quote_ident(&log_layout::wide_table(log_table));
    let emit = |condition: &str| match image::is_wide(schema) {
        false => format!(
            "INSERT INTO {log} (ts, tbl, op, schema_id, {columns}) \
             SELECT julianday('now'), {name}, '{delete}', {id}, {columns} FROM {pending} AS p \
             WHERE p.tbl = {name} AND {condition} ORDER BY p.rowid; \
             DELETE FROM {pending} WHERE tbl = {name}; "
        ),
        // The log rows take the last ids, one per copy in `p.rowid` order (the log
        // numbers each `max(id) + 1`), and the wide rows are numbered to match.
        true => format!(
            "INSERT INTO {log} (ts, tbl, op, schema_id) \
             SELECT julianday('now'), {name}, '{delete}', {id} FROM {pending} AS p \
             WHERE p.tbl = {name} AND {condition} ORDER BY p.rowid; \
             INSERT INTO {wide} (id, {columns}) \
             SELECT (SELECT max(id) FROM {log}) \
             - (SELECT count(*) FROM {pending} AS p WHERE p.tbl = {name} AND {condition}) \
             + row_number() OVER (ORDER BY p.rowid), {columns} FROM {pending} AS p \
             WHERE p.tbl = {name} AND {condition} ORDER BY p.rowid; \
             DELETE FROM {pending} WHERE tbl = {name}; "
        ),
    };
    triggers_with_prefix(
        log_table,
        schema,
        &emit(&format!("({replaced})")),
        &emit(&format!("{not_old} AND ({replaced})")),
    )
}

/// Creates [`REPLACED_TABLE`] if missing, with at least `values` value columns.
fn ensure_replaced_table(conn: &Connection, values: usize) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (tbl TEXT NOT NULL, rid)",
        quote_ident(REPLACED_TABLE)
    ))?;
    image::widen(conn, REPLACED_TABLE, values)
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
