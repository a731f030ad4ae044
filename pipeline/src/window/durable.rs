//! Window state in the source database, beside the log and the slots.
//!
//! Owns two tables: `__astha_windows` (one row per open window: transform, key, start,
//! state as JSON) and `__astha_window_progress` (per transform: the LSN up to which the
//! state holds every change, the watermark's input, the next result number, counters,
//! and the window settings the state was built with). [`save`] writes the changed
//! windows and the progress in one transaction, so the state on disk is always the state
//! after some whole batch. It never decides anything about windows ([`super::state`]).
//! Blocking: call it on the store's write thread (`Store::write`), never on an executor.

use std::collections::BTreeSet;

use astha_core::{CoreError, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::state::{Progress, Window, WindowId, Windows};

/// Creates the tables where missing.
pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS __astha_windows (
             transform TEXT NOT NULL, key TEXT NOT NULL, start INTEGER NOT NULL,
             state TEXT NOT NULL, PRIMARY KEY (transform, key, start)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS __astha_window_progress (
             transform TEXT PRIMARY KEY, progress TEXT NOT NULL, settings TEXT NOT NULL);",
    )?;
    Ok(())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Invalid(format!("stored window state ({what}) cannot be read: {e}"))
}

/// The stored state of `transform`, or an empty one. Refuses a state stored under other
/// window settings (`settings` is their fingerprint): its windows would mean something
/// else.
pub fn load(
    conn: &Connection,
    transform: &str,
    settings: &str,
    windows: &mut Windows,
) -> Result<()> {
    ensure(conn)?;
    let stored: Option<(String, String)> = conn
        .query_row(
            "SELECT progress, settings FROM __astha_window_progress WHERE transform = ?1",
            [transform],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((progress, stored_settings)) = stored else {
        // Record the settings from the first start on, so a change is noticed even
        // before the first change arrives.
        return save(conn, transform, settings, windows, &BTreeSet::new());
    };
    if stored_settings != settings {
        return Err(CoreError::Invalid(format!(
            "the window settings of {transform:?} changed since its state was stored; its open \
             windows would be read under the new ones. Restore the settings, or start the windows \
             over: DELETE FROM __astha_windows WHERE transform = '{transform}'; DELETE FROM \
             __astha_window_progress WHERE transform = '{transform}'"
        )));
    }
    let progress: Progress = serde_json::from_str(&progress).map_err(|e| corrupt("progress", e))?;
    let mut stmt =
        conn.prepare("SELECT key, start, state FROM __astha_windows WHERE transform = ?1")?;
    let rows = stmt.query_map([transform], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut open = Vec::new();
    for row in rows {
        let (key, start, state) = row?;
        let w: Window = serde_json::from_str(&state).map_err(|e| corrupt("window", e))?;
        open.push(((key, start), w));
    }
    windows.restore(progress, open);
    Ok(())
}

/// Writes the windows in `dirty` (deleting those no longer open) and the progress, in
/// one transaction.
pub fn save(
    conn: &Connection,
    transform: &str,
    settings: &str,
    windows: &Windows,
    dirty: &BTreeSet<WindowId>,
) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO __astha_windows (transform, key, start, state) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (transform, key, start) DO UPDATE SET state = excluded.state",
        )?;
        let mut delete = tx.prepare_cached(
            "DELETE FROM __astha_windows WHERE transform = ?1 AND key = ?2 AND start = ?3",
        )?;
        for id in dirty {
            match windows.get(id) {
                Some(w) => {
                    let state = serde_json::to_string(w).map_err(|e| corrupt("window", e))?;
                    upsert.execute(params![transform, id.0, id.1, state])?;
                }
                None => {
                    delete.execute(params![transform, id.0, id.1])?;
                }
            }
        }
        let progress =
            serde_json::to_string(&windows.progress).map_err(|e| corrupt("progress", e))?;
        tx.execute(
            "INSERT INTO __astha_window_progress (transform, progress, settings) VALUES (?1, ?2, ?3)
             ON CONFLICT (transform) DO UPDATE SET progress = excluded.progress, settings = excluded.settings",
            params![transform, progress, settings],
        )?;
    }
    tx.commit()?;
    Ok(())
}
