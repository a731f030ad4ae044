//! Retention: how long the change log keeps the rows every slot is already past, and
//! where a point in time falls in what it keeps.
//!
//! Owns the policy ([`Retention`]), the bound it puts on cleanup ([`Retention::bound`]),
//! the mapping from a time to an LSN ([`first_lsn_at_or_after`]) and the check that a
//! range still starts inside the log ([`check_from_lsn`], [`check_from_time`]). It
//! promises that a range starting before the oldest retained row is refused
//! ([`CoreError::NotRetained`]), never served in part. It deletes nothing: cleanup
//! ([`crate::slots::cleanup_upto`]) does, never past the bound.
//!
//! Time is the log row's own `ts` (`julianday('now')`, written by the trigger inside the
//! writer's transaction). SQLite runs one writer at a time, so `ts` does not decrease
//! along the LSNs unless the system clock steps back; no clock table is needed, and a
//! time maps to an LSN with one ordered scan from the oldest row (only the rows older
//! than the time are read: the rows a time-based cleanup removes anyway).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::change::julian_to_unix_ms;
use crate::error::{CoreError, Result};
use crate::ident::quote_ident;

/// How long log rows are kept after every slot passed them. Each limit set is a cap, as
/// Kafka's `retention.ms` and `retention.bytes`: a row every slot is past is removed once
/// it is older than `keep_for` **or** no longer among the newest `keep_rows` LSNs,
/// whichever comes first; with both at 0 (the default) it is removed as soon as the
/// slowest slot passes it. A slot behind always holds rows, whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Keep rows every slot is past until they are this old (by the time their change
    /// was written). `"0ms"`: no time limit. Default `"0ms"`.
    #[serde(with = "crate::config::duration_serde")]
    pub keep_for: Duration,
    /// Keep the newest this many LSNs of the log. `0`: no size limit. Default `0`.
    pub keep_rows: u64,
}

impl Retention {
    /// True when nothing is kept past the slots (today's behaviour before retention).
    pub fn is_off(&self) -> bool {
        self.keep_for.is_zero() && self.keep_rows == 0
    }

    /// The newest LSN this policy lets cleanup remove at `now_ms` (`i64::MAX` when it
    /// holds nothing back). Cleanup removes only rows at or below both this and every
    /// slot. Read before a cleanup pass: time and the head only move forward, so a bound
    /// read a little earlier is only more conservative.
    pub fn bound(&self, conn: &Connection, log_table: &str, now_ms: i64) -> Result<i64> {
        self.bound_within(conn, log_table, now_ms, i64::MAX, u64::MAX)
    }

    /// [`Retention::bound`] for a caller that will remove nothing past `upto` (the
    /// slowest slot) nor more than `rows` rows in this pass: the time limit's scan reads
    /// at most that many rows from the oldest, so a slot holding many expired rows back
    /// does not make every pass read them all. The bound it gives may be lower than the
    /// policy's (never higher); the next pass goes on.
    pub fn bound_within(
        &self,
        conn: &Connection,
        log_table: &str,
        now_ms: i64,
        upto: i64,
        rows: u64,
    ) -> Result<i64> {
        if self.is_off() {
            return Ok(i64::MAX);
        }
        let mut bound = i64::MIN;
        if !self.keep_for.is_zero() {
            let keep_ms = i64::try_from(self.keep_for.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(keep_ms);
            bound = bound.max(time_bound(conn, log_table, cutoff, upto, rows)?);
        }
        if self.keep_rows > 0 {
            let head = crate::log::head_lsn(conn, log_table)?;
            let keep = i64::try_from(self.keep_rows).unwrap_or(i64::MAX);
            bound = bound.max(head.saturating_sub(keep));
        }
        Ok(bound)
    }
}

/// The newest LSN written before `cutoff_ms` that may go, looking at no row past `upto`
/// and at most `rows` rows from the oldest.
///
/// First one lookup: when the last row of that window is old enough, so is every row
/// before it (`ts` does not decrease along the LSNs; if the clock stepped back, the
/// earlier rows are older than their `ts` says), and the whole window may go without
/// reading it. Otherwise the window is read from the oldest row up to the first young
/// one: only rows this pass removes are read.
fn time_bound(
    conn: &Connection,
    log_table: &str,
    cutoff_ms: i64,
    upto: i64,
    rows: u64,
) -> Result<i64> {
    let log = quote_ident(log_table);
    let cutoff = unix_ms_to_julian(cutoff_ms);
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    let Some((oldest, _)) = oldest(conn, log_table)? else {
        return Ok(upto);
    };
    let end = upto.min(oldest.saturating_add(rows.saturating_sub(1)));
    let last: Option<(i64, f64)> = conn
        .prepare_cached(&format!(
            "SELECT id, ts FROM {log} WHERE id <= ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([end], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match last {
        None => return Ok(end),
        Some((_, ts)) if ts < cutoff => return Ok(end),
        Some(_) => {}
    }
    let young: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT id FROM {log} WHERE id <= ?2 AND ts >= ?1 ORDER BY id LIMIT 1"
        ))?
        .query_row((cutoff, end), |r| r.get(0))
        .optional()?;
    Ok(young.map_or(end, |young| young - 1))
}

/// SQLite's `julianday` for Unix milliseconds (the inverse of [`julian_to_unix_ms`]).
pub fn unix_ms_to_julian(ms: i64) -> f64 {
    ms as f64 / 86_400_000.0 + 2_440_587.5
}

/// Reads a point in time as SQLite's date functions do (`2026-12-07T02:15:00Z`,
/// `2026-12-07 02:15:00.250`, `now`; UTC unless it names an offset), as Unix ms.
pub fn parse_time(conn: &Connection, text: &str) -> Result<i64> {
    let julian: Option<f64> = conn.query_row("SELECT julianday(?1)", [text], |r| r.get(0))?;
    julian.map(julian_to_unix_ms).ok_or_else(|| {
        CoreError::Invalid(format!(
            "{text:?} is not a time; write e.g. 2026-12-07T02:15:00Z (UTC unless an offset \
             such as +01:00 is given)"
        ))
    })
}

/// Unix ms as `2026-12-07T02:15:00.250Z`.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The first LSN whose change was written at or after `julian`, if any.
pub fn first_lsn_at_or_after(
    conn: &Connection,
    log_table: &str,
    julian: f64,
) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT id FROM {} WHERE ts >= ?1 ORDER BY id LIMIT 1",
            quote_ident(log_table)
        ))?
        .query_row([julian], |r| r.get(0))
        .optional()?)
}

/// The oldest row still in the log: its LSN and when it was written (Unix ms).
pub fn oldest(conn: &Connection, log_table: &str) -> Result<Option<(i64, i64)>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT id, ts FROM {} ORDER BY id LIMIT 1",
                quote_ident(log_table)
            ),
            [],
            |r| Ok((r.get::<_, i64>(0)?, julian_to_unix_ms(r.get(1)?))),
        )
        .optional()?)
}

/// Fails unless every change from LSN `from` on is still in the log. LSNs start at 1, so
/// an oldest row at 1 means nothing was ever removed.
pub fn check_from_lsn(conn: &Connection, log_table: &str, from: i64) -> Result<()> {
    match oldest(conn, log_table)? {
        Some((lsn, at)) if from < lsn && lsn > 1 => Err(CoreError::NotRetained {
            asked: format!("LSN {from}"),
            oldest_lsn: lsn,
            oldest_time: format_time(at),
        }),
        _ => Ok(()),
    }
}

/// The first LSN at or after `at_ms` (the head + 1 when none is), failing unless every
/// change written from `at_ms` on is still in the log. A time at or before the oldest
/// row's is refused once rows were removed: changes of that very millisecond may be gone.
pub fn check_from_time(conn: &Connection, log_table: &str, at_ms: i64) -> Result<i64> {
    if let Some((lsn, at)) = oldest(conn, log_table)? {
        if at_ms <= at && lsn > 1 {
            return Err(CoreError::NotRetained {
                asked: format!("time {}", format_time(at_ms)),
                oldest_lsn: lsn,
                oldest_time: format_time(at),
            });
        }
    }
    let first = first_lsn_at_or_after(conn, log_table, unix_ms_to_julian(at_ms))?;
    match first {
        Some(lsn) => Ok(lsn),
        None => Ok(crate::log::head_lsn(conn, log_table)? + 1),
    }
}

/// The last LSN written at or before `at_ms` (0 when none is): the end of a range
/// `..= time`, and the point "as of" a time.
pub fn last_lsn_at_or_before(conn: &Connection, log_table: &str, at_ms: i64) -> Result<i64> {
    // One millisecond later, then one LSN back: `ts` is whole milliseconds.
    let after = first_lsn_at_or_after(conn, log_table, unix_ms_to_julian(at_ms + 1))?;
    match after {
        Some(lsn) => Ok(lsn - 1),
        None => crate::log::head_lsn(conn, log_table),
    }
}

/// Where a new consumer starts in the retained log: `lsn:N` (its first change is LSN N)
/// or `time:T` (the first change written at or after T). The form of `watch --start-at`
/// and a pipeline sink's `start_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    Lsn(i64),
    Time(String),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<StartAt, String> {
        if let Some(lsn) = text.strip_prefix("lsn:") {
            return lsn
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(StartAt::Lsn)
                .ok_or_else(|| format!("start {text:?}: lsn:N needs a number >= 0"));
        }
        if let Some(time) = text.strip_prefix("time:") {
            return Ok(StartAt::Time(time.trim().to_string()));
        }
        Err(format!(
            "start {text:?}: give lsn:N or time:2026-12-07T02:15:00Z"
        ))
    }
}

impl StartAt {
    /// The first LSN to deliver, failing unless the log still holds every change from
    /// there on ([`CoreError::NotRetained`]).
    pub fn first_lsn(&self, conn: &Connection, log_table: &str) -> Result<i64> {
        match self {
            StartAt::Lsn(lsn) => {
                check_from_lsn(conn, log_table, *lsn)?;
                Ok((*lsn).max(1))
            }
            StartAt::Time(text) => {
                let at = parse_time(conn, text)?;
                check_from_time(conn, log_table, at)
            }
        }
    }

    /// Creates slot `name` just before [`StartAt::first_lsn`] unless it exists (a slot
    /// that exists keeps its position: the setting applies only when it is created).
    /// Returns whether it was created.
    pub fn create_slot(&self, conn: &Connection, log_table: &str, name: &str) -> Result<bool> {
        if crate::slots::get(conn, name)?.is_some() {
            return Ok(false);
        }
        let first = self.first_lsn(conn, log_table)?;
        crate::slots::create(
            conn,
            log_table,
            name,
            crate::slots::SlotStart::At(first - 1),
        )?;
        Ok(true)
    }
}

/// The state "as of" `at_ms`: the last LSN written at or before it, failing when rows
/// that may have been written by then were removed (the time is before the oldest
/// retained row's).
pub fn lsn_as_of_time(conn: &Connection, log_table: &str, at_ms: i64) -> Result<i64> {
    if let Some((lsn, at)) = oldest(conn, log_table)? {
        if at_ms < at && lsn > 1 {
            return Err(CoreError::NotRetained {
                asked: format!("the state as of {}", format_time(at_ms)),
                oldest_lsn: lsn,
                oldest_time: format_time(at),
            });
        }
    }
    last_lsn_at_or_before(conn, log_table, at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(rows: &[(i64, i64)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE log (id INTEGER PRIMARY KEY, ts REAL NOT NULL)")
            .unwrap();
        for (id, ms) in rows {
            conn.execute(
                "INSERT INTO log (id, ts) VALUES (?1, ?2)",
                (id, unix_ms_to_julian(*ms)),
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn julian_and_unix_ms_round_trip_and_times_print_as_utc() {
        for ms in [0, 1, 1_765_000_000_123, 4_102_444_800_000] {
            assert_eq!(julian_to_unix_ms(unix_ms_to_julian(ms)), ms);
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        let conn = Connection::open_in_memory().unwrap();
        let ms = parse_time(&conn, "2026-12-07T02:15:00.250Z").unwrap();
        assert_eq!(format_time(ms), "2026-12-07T02:15:00.250Z");
        assert_eq!(parse_time(&conn, "2024-02-29 23:59:59").unwrap() % 1000, 0);
        assert_eq!(
            format_time(parse_time(&conn, "2024-02-29 23:59:59").unwrap()),
            "2024-02-29T23:59:59.000Z"
        );
        assert!(parse_time(&conn, "yesterday-ish").is_err());
    }

    #[test]
    fn the_bound_keeps_whichever_limit_removes_more() {
        // Rows 1..=10, written at 1000, 2000, ... 10000 ms.
        let rows: Vec<(i64, i64)> = (1..=10).map(|i| (i, i * 1000)).collect();
        let conn = log(&rows);
        let off = Retention::default();
        assert_eq!(off.bound(&conn, "log", 10_000).unwrap(), i64::MAX);
        let by_time = Retention {
            keep_for: Duration::from_millis(3500),
            keep_rows: 0,
        };
        // Younger than 3.5 s at 10 s: rows 7..=10 (7000 >= 6500).
        assert_eq!(by_time.bound(&conn, "log", 10_000).unwrap(), 6);
        assert_eq!(by_time.bound(&conn, "log", 99_000).unwrap(), i64::MAX);
        // A slot at 4 and a window of 3 rows: the scan stops early, never past either.
        assert_eq!(
            by_time.bound_within(&conn, "log", 99_000, 4, 100).unwrap(),
            4
        );
        assert_eq!(
            by_time.bound_within(&conn, "log", 99_000, 100, 3).unwrap(),
            3
        );
        assert_eq!(
            by_time.bound_within(&conn, "log", 10_000, 100, 3).unwrap(),
            3
        );
        assert_eq!(
            by_time.bound_within(&conn, "log", 10_000, 100, 8).unwrap(),
            6
        );
        let by_rows = Retention {
            keep_for: Duration::ZERO,
            keep_rows: 2,
        };
        assert_eq!(by_rows.bound(&conn, "log", 10_000).unwrap(), 8);
        let huge = Retention {
            keep_for: Duration::from_secs(u64::MAX),
            keep_rows: u64::MAX,
        };
        assert!(
            huge.bound(&conn, "log", 10_000).unwrap() < 1,
            "keeps everything"
        );
        let both = Retention {
            keep_for: Duration::from_millis(3500),
            keep_rows: 2,
        };
        assert_eq!(both.bound(&conn, "log", 10_000).unwrap(), 8);
        let both = Retention {
            keep_for: Duration::from_millis(1500),
            keep_rows: 5,
        };
        assert_eq!(both.bound(&conn, "log", 10_000).unwrap(), 8);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Against a model: rows `1..=n` written at non-decreasing times, a slot, and a
        /// policy. Cleanup below `min(slot, bound_within(...))` leaves exactly the rows
        /// the model keeps: those the slot has not passed, those younger than
        /// `keep_for` **and** among the newest `keep_rows` (each limit only when set),
        /// those past the window of this pass, and always the newest row.
        #[test]
        fn cleanup_under_the_bound_keeps_what_the_model_keeps(
            gaps in proptest::collection::vec(0i64..50, 1..60),
            slot in 0i64..70,
            keep_for in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..1500],
            keep_rows in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..40],
            window in 1u64..80,
            now_after in 0i64..1500,
        ) {
            let mut at = 1_000_000i64;
            let rows: Vec<(i64, i64)> = gaps
                .iter()
                .enumerate()
                .map(|(i, gap)| {
                    at += gap;
                    (i as i64 + 1, at)
                })
                .collect();
            let n = rows.len() as i64;
            let now = at + now_after;
            let conn = log(&rows);
            crate::slots::ensure_tables(&conn).unwrap();
            crate::slots::create(&conn, "log", "s", crate::slots::SlotStart::At(slot)).unwrap();
            let policy = Retention { keep_for: Duration::from_millis(keep_for), keep_rows };
            let bound = policy.bound_within(&conn, "log", now, slot, window).unwrap();
            let budget = crate::slots::CleanupBudget::default();
            crate::slots::cleanup_upto(&conn, "log", &budget, bound).unwrap();
            let left: i64 = conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0)).unwrap();

            // The model: the newest id a pass may remove. The time limit looks at no
            // row past the slot nor past the window from the oldest row (row 1).
            let end = slot.min(window as i64);
            let mut may = slot;
            if !policy.is_off() {
                let by_time = if keep_for > 0 {
                    let cutoff = now - keep_for as i64;
                    let expired = rows.iter().filter(|(_, ms)| *ms < cutoff).count() as i64;
                    if expired >= end.min(n) { end } else { expired }
                } else {
                    i64::MIN
                };
                let by_rows = if keep_rows > 0 { n - keep_rows as i64 } else { i64::MIN };
                may = may.min(by_time.max(by_rows));
            }
            let removed = may.clamp(0, n - 1);
            proptest::prop_assert_eq!(left, n - removed);
        }
    }

    #[test]
    fn a_range_before_the_oldest_retained_row_is_refused() {
        let conn = log(&[(1, 1000), (2, 2000)]);
        check_from_lsn(&conn, "log", 0).unwrap();
        assert_eq!(check_from_time(&conn, "log", 0).unwrap(), 1);
        assert_eq!(check_from_time(&conn, "log", 1500).unwrap(), 2);
        assert_eq!(check_from_time(&conn, "log", 2500).unwrap(), 3);
        conn.execute_batch("DELETE FROM log WHERE id = 1").unwrap();
        check_from_lsn(&conn, "log", 2).unwrap();
        let err = check_from_lsn(&conn, "log", 1).unwrap_err();
        assert!(
            matches!(err, CoreError::NotRetained { oldest_lsn: 2, .. }),
            "{err}"
        );
        assert!(check_from_time(&conn, "log", 2000).is_err());
        assert_eq!(check_from_time(&conn, "log", 2001).unwrap(), 3);
        assert_eq!(last_lsn_at_or_before(&conn, "log", 1999).unwrap(), 1);
        assert_eq!(last_lsn_at_or_before(&conn, "log", 2000).unwrap(), 2);
        assert!(lsn_as_of_time(&conn, "log", 1999).is_err());
        assert_eq!(lsn_as_of_time(&conn, "log", 2000).unwrap(), 2);
    }
}
