//! Replay: the changes of an LSN range, read again from the retained log, in LSN order.
//!
//! Owns reading a closed range `from ..= to` for `astha replay` (and any caller that
//! wants the history again). It promises the whole range or an error: the start must be
//! retained ([`crate::retention::check_from_lsn`]), and each batch checks, in its own
//! read transaction, that cleanup has not removed rows of the range before the batch was
//! read. Rows that cannot be decoded are returned with the summary, never skipped
//! silently. It moves no slot and writes nothing.

use rusqlite::Connection;

use crate::change::Change;
use crate::error::Result;
use crate::log::{BatchLimits, LogReader};

/// What a replay went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// Changes handed to the caller.
    pub changes: u64,
    /// Changes among them marked as possibly incomplete ([`crate::gaps`]).
    pub incomplete: u64,
    /// Log rows of the range that could not be decoded: `(lsn, reason)`.
    pub malformed: Vec<(i64, String)>,
}

/// Hands every change with `from <= lsn <= to` (of `tables`, if given) to `each`, in LSN
/// order, a batch of `limits` at a time.
pub fn replay(
    conn: &Connection,
    log_table: &str,
    from: i64,
    to: i64,
    tables: Option<&[String]>,
    limits: BatchLimits,
    each: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<Replayed> {
    let mut reader = LogReader::new(log_table);
    let mut done = Replayed::default();
    let mut after = from.saturating_sub(1).max(0);
    while after < to {
        let tx = conn.unchecked_transaction()?;
        crate::retention::check_from_lsn(&tx, log_table, after + 1)?;
        let batch = reader.read_in(&tx, after, limits, tables)?;
        tx.finish()?;
        for change in batch.changes.iter().filter(|c| c.lsn <= to) {
            each(change)?;
            done.changes += 1;
            done.incomplete += u64::from(change.incomplete.is_some());
        }
        done.malformed.extend(
            batch
                .malformed
                .into_iter()
                .filter(|m| m.raw.lsn <= to)
                .map(|m| (m.raw.lsn, m.reason)),
        );
        if batch.scanned_to <= after {
            break;
        }
        after = batch.scanned_to;
    }
    Ok(done)
}
