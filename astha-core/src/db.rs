//! Opening SQLite connections the way Astha needs them.
//!
//! Every connection Astha opens is in WAL mode with `synchronous=NORMAL`, waits on a
//! busy database instead of failing at once, and fires delete triggers on `REPLACE`
//! (`recursive_triggers`), so a replaced row is captured as a DELETE then an INSERT.
//! Writer connections also get the commit hook of [`crate::wake`], which tells the poller
//! within microseconds that something was committed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;

/// How long a statement waits for a lock held by another connection before it fails
/// with `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) a read-write connection configured for Astha.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens an existing database; fails if the file does not exist.
pub fn open_existing(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens a connection whose commits wake this process's pollers at once.
pub fn open_writer(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    crate::wake::install_commit_hook(&conn);
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
    // journal_mode returns a row; pragma_update would reject that.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA recursive_triggers=ON; PRAGMA foreign_keys=ON;",
    )?;
    Ok(())
}
