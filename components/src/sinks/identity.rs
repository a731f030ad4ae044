//! The database identity: a UUID created once and kept in the database itself, in the
//! `__astha_meta` table this module owns.
//!
//! Sinks build idempotency keys from it and the log's epoch
//! (`<identity>:<epoch>:<lsn>`, e.g. JetStream's `Nats-Msg-Id`; [`stream_id`] is the
//! part before the LSN), so a change re-delivered after a crash carries the same key,
//! two databases whose LSNs overlap never collide, and an LSN handed out again after the
//! sequence restarted (a restore, a rolled-back WAL: [`astha_core::log_state`] changes
//! the epoch then) is never taken for a duplicate. The identity lives in the database,
//! not in a config file, so a copy of the database (a restore, a move) keeps it and a
//! fresh database gets a new one. It is never changed once written.

use rusqlite::{Connection, OptionalExtension};

/// The table holding Astha's per-database facts (`key` → `value`).
pub const META_TABLE: &str = "__astha_meta";
/// The key of the identity row.
pub const IDENTITY_KEY: &str = "database_id";

/// Returns this database's identity, creating it (and the meta table) on first use.
///
/// Safe against concurrent first calls: the insert is `OR IGNORE` and the value is read
/// back, so every caller sees the one that won.
pub fn ensure(conn: &Connection) -> rusqlite::Result<String> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    ))?;
    if let Some(id) = read(conn)? {
        return Ok(id);
    }
    conn.execute(
        &format!("INSERT OR IGNORE INTO {META_TABLE} (key, value) VALUES (?1, ?2)"),
        (IDENTITY_KEY, uuid::Uuid::new_v4().to_string()),
    )?;
    Ok(read(conn)?.expect("identity row was just written"))
}

/// This database's identity, if one was created.
pub fn read(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [META_TABLE],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    conn.query_row(
        &format!("SELECT value FROM {META_TABLE} WHERE key = ?1"),
        [IDENTITY_KEY],
        |r| r.get(0),
    )
    .optional()
}

/// The identity of the database's LSN sequence, `<identity>:<epoch>`: what sinks put
/// before the LSN in every message id. Creates the identity and the log's state on first
/// use.
pub fn stream_id(conn: &Connection, log_table: &str) -> astha_core::Result<String> {
    let identity = ensure(conn)?;
    let epoch = astha_core::log_state::epoch(conn, log_table)?;
    Ok(format!("{identity}:{epoch}"))
}

/// The idempotency key of one change: the same for every delivery of that change
/// ([`astha_core::format::change_id`]); `stream` is [`stream_id`].
pub fn message_id(stream: &str, change: &astha_core::Change) -> String {
    astha_core::format::change_id(stream, change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let first = ensure(&Connection::open(&path).unwrap()).unwrap();
        let again = ensure(&Connection::open(&path).unwrap()).unwrap();
        assert_eq!(first, again);
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        let other = ensure(&Connection::open(dir.path().join("other.sqlite")).unwrap()).unwrap();
        assert_ne!(first, other, "each database has its own identity");
        let change = astha_core::Change::bare(42, "t", astha_core::Operation::Insert);
        assert_eq!(message_id(&first, &change), format!("{first}:42"));
    }

    #[test]
    fn read_without_meta_table_is_none() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(read(&conn).unwrap(), None);
    }
}
