//! The layout of the tables that hold row images: the change log, its wide table (the
//! values of wide tables' changes, see [`crate::image::is_wide`]) and the dead letters
//! (each dead letter is a full copy of a change: its log row with its wide row's values).
//!
//! Owns their fixed columns: names, SQL declarations and positions, declared once here
//! and imported by [`crate::capture`] (which creates the log), [`crate::log`] (which
//! reads it), [`crate::dead_letter`] and [`crate::image`] (whose width limit is what the
//! widest set of fixed columns leaves free). The value columns `v0, v1, ...` that follow
//! them belong to [`crate::image`]. It promises that every position is derived from a
//! name at compile time, so reordering a table cannot leave a reader at a stale index.
//! It runs no SQL and imports nothing from the crate.

/// One fixed column: its name and its declaration in `CREATE TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub decl: &'static str,
}

const fn column(name: &'static str, decl: &'static str) -> Column {
    Column { name, decl }
}

/// The change log's fixed columns, in table order; its value columns follow them. `id`
/// is the LSN: an `INTEGER PRIMARY KEY` without `AUTOINCREMENT` (see
/// [`crate::capture::Capture::ensure_log`] for why that never reuses an id).
pub const LOG_COLUMNS: [Column; 5] = [
    column("id", "INTEGER PRIMARY KEY"),
    column("ts", "REAL NOT NULL"),
    column("tbl", "TEXT NOT NULL"),
    column("op", "TEXT NOT NULL"),
    column("schema_id", "INTEGER NOT NULL"),
];

/// Positions of the log's fixed columns in a row read with `SELECT *`.
pub mod log {
    use super::{position, LOG_COLUMNS};

    pub const ID: usize = position(&LOG_COLUMNS, "id");
    pub const TS: usize = position(&LOG_COLUMNS, "ts");
    pub const TBL: usize = position(&LOG_COLUMNS, "tbl");
    pub const OP: usize = position(&LOG_COLUMNS, "op");
    pub const SCHEMA_ID: usize = position(&LOG_COLUMNS, "schema_id");
    /// Position of the first value column.
    pub const FIRST_VALUE: usize = LOG_COLUMNS.len();
}

/// The name of the wide table beside the log `log_table`. A change of a wide table is a
/// log row without values (its LSN and header) and a row here with the same `id`
/// holding all its values, so the log's rows stay as narrow as the narrow tables' images
/// and one id sequence (the log's) orders every change.
pub fn wide_table(log_table: &str) -> String {
    format!("__astha_wide_{log_table}")
}

/// The wide table's fixed columns; its value columns `v0, v1, ...` follow, each at the
/// same index as in the log. `id` is the LSN of the change's log row.
pub const WIDE_COLUMNS: [Column; 1] = [column("id", "INTEGER PRIMARY KEY")];

/// Position of the wide table's first value column.
pub const WIDE_FIRST_VALUE: usize = WIDE_COLUMNS.len();

/// The dead-letter table's fixed columns, in table order; its value columns follow
/// them. `ts`, `tbl`, `op` and `schema_id` are copied from the log row under the same
/// names, and `lsn` is the log row's `id`.
pub const DEAD_LETTER_COLUMNS: [Column; 12] = [
    column("id", "INTEGER PRIMARY KEY"),
    column("consumer", "TEXT NOT NULL"),
    column("lsn", "INTEGER NOT NULL"),
    LOG_COLUMNS[log::TS],
    LOG_COLUMNS[log::TBL],
    LOG_COLUMNS[log::OP],
    LOG_COLUMNS[log::SCHEMA_ID],
    column("reason", "TEXT NOT NULL"),
    column("attempts", "INTEGER NOT NULL"),
    column("retriable", "INTEGER NOT NULL"),
    column(
        "created_at",
        "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
    ),
    column("replayed_at", "TEXT"),
];

/// Positions of the dead-letter table's fixed columns in a row read with
/// [`DEAD_LETTER_COLUMNS`] in order.
pub mod dead_letter {
    use super::{position, DEAD_LETTER_COLUMNS};

    pub const ID: usize = position(&DEAD_LETTER_COLUMNS, "id");
    pub const CONSUMER: usize = position(&DEAD_LETTER_COLUMNS, "consumer");
    pub const LSN: usize = position(&DEAD_LETTER_COLUMNS, "lsn");
    pub const TS: usize = position(&DEAD_LETTER_COLUMNS, "ts");
    pub const TBL: usize = position(&DEAD_LETTER_COLUMNS, "tbl");
    pub const OP: usize = position(&DEAD_LETTER_COLUMNS, "op");
    pub const SCHEMA_ID: usize = position(&DEAD_LETTER_COLUMNS, "schema_id");
    pub const REASON: usize = position(&DEAD_LETTER_COLUMNS, "reason");
    pub const ATTEMPTS: usize = position(&DEAD_LETTER_COLUMNS, "attempts");
    pub const RETRIABLE: usize = position(&DEAD_LETTER_COLUMNS, "retriable");
    pub const CREATED_AT: usize = position(&DEAD_LETTER_COLUMNS, "created_at");
    pub const REPLAYED_AT: usize = position(&DEAD_LETTER_COLUMNS, "replayed_at");
    /// Position of the first value column.
    pub const FIRST_VALUE: usize = DEAD_LETTER_COLUMNS.len();
}

/// Fixed columns of the widest table that holds images: what SQLite's column limit must
/// leave room for besides the values.
pub const MAX_FIXED_COLUMNS: usize = if LOG_COLUMNS.len() > DEAD_LETTER_COLUMNS.len() {
    LOG_COLUMNS.len()
} else {
    DEAD_LETTER_COLUMNS.len()
};

/// `name decl, name decl, ...` for a `CREATE TABLE` statement.
pub fn definitions(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.decl))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// `name, name, ...` for a `SELECT` or `INSERT` column list.
pub fn names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Index of the column called `name`; a name that is not there fails the build.
const fn position(columns: &[Column], name: &str) -> usize {
    let mut i = 0;
    while i < columns.len() {
        if str_eq(columns[i].name, name) {
            return i;
        }
        i += 1;
    }
    panic!("no such fixed column")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_declared_order() {
        assert_eq!(
            [log::ID, log::TS, log::TBL, log::OP, log::SCHEMA_ID],
            [0, 1, 2, 3, 4]
        );
        assert_eq!(log::FIRST_VALUE, 5);
        assert_eq!(dead_letter::REPLAYED_AT, 11);
        assert_eq!(dead_letter::FIRST_VALUE, MAX_FIXED_COLUMNS);
    }

    #[test]
    fn a_dead_letter_copies_the_log_header_under_the_same_names() {
        for copied in [log::TS, log::TBL, log::OP, log::SCHEMA_ID] {
            let name = LOG_COLUMNS[copied].name;
            let in_dead_letter = position(&DEAD_LETTER_COLUMNS, name);
            assert_eq!(DEAD_LETTER_COLUMNS[in_dead_letter], LOG_COLUMNS[copied]);
        }
    }
}
