//! The fault harness's shared parts: the tables the writer process changes, the record
//! formats of its ledger and of the worker's durable sinks, and the checker.
//!
//! - The writer (`astha-fault-writer`) commits inserts, updates and deletes to tables `t`
//!   and `u`, and after each commit appends one ledger line per change, in commit order:
//!   `table<TAB>id`. Every change has a unique id: `I:n` and `U:n` for the `n` it wrote,
//!   `D:n` for the `n` of the row it deleted (each `n` is written once, so each row
//!   version is deleted at most once).
//! - The worker (`astha-fault-worker`) runs Astha with components that append every
//!   change they confirm to a sink file of their own, `lsn<TAB>table<TAB>id`, before
//!   returning `Ok`; at each start it appends `# start <slot position>`. A `write(2)`
//!   into the page cache survives `kill -9` of the process, so a sink holds everything
//!   the component confirmed (a line cut short by the kill is tolerated as the last line
//!   of its run).
//! - [`check`] proves, for one sink: every ledger change of the component's tables was
//!   delivered, in commit order, each run continued exactly from its durable position,
//!   and every duplicate is a re-delivery of a change confirmed after that position.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Schema of the tables the writer changes.
pub const TABLES_SQL: &str =
    "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad TEXT);
     CREATE TABLE u (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, pad TEXT);";

/// The components of the worker: name, tables, and whether it is slow (it sleeps 1 ms
/// every 8 changes, so it falls out of the shared window and catches up from the log).
pub const COMPONENTS: &[(&str, &[&str], bool)] = &[
    ("all", &["t", "u"], false),
    ("only_t", &["t"], false),
    ("slow_u", &["u"], true),
];

/// The id of a change, as the ledger and the sinks write it.
pub fn change_id(change: &astha_core::Change) -> Option<String> {
    use astha_core::{Operation, Value};
    let n = |row: Option<&astha_core::Row>| match row.and_then(|r| r.get("n")) {
        Some(Value::Integer(n)) => Some(*n),
        _ => None,
    };
    Some(match change.op {
        Operation::Insert => format!("I:{}", n(change.after.as_ref())?),
        Operation::Update => format!("U:{}", n(change.after.as_ref())?),
        Operation::Delete => format!("D:{}", n(change.before.as_ref())?),
        Operation::Read => format!("R:{}", n(change.after.as_ref())?),
    })
}

/// One ledger line: a committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub table: String,
    pub id: String,
}

/// Reads a ledger.
pub fn parse_ledger(text: &str) -> Result<Vec<Committed>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let (table, id) = line
                .split_once('\t')
                .ok_or_else(|| format!("ledger line {}: {line:?}", i + 1))?;
            Ok(Committed {
                table: table.to_string(),
                id: id.to_string(),
            })
        })
        .collect()
}

/// What the checker found in one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Runs of the worker that this sink saw start.
    pub runs: usize,
    /// Changes the ledger holds for this component: all were delivered.
    pub checked: usize,
    /// Lines in the sink (deliveries, duplicates included).
    pub deliveries: usize,
    /// Deliveries of a change already delivered by an earlier run.
    pub duplicates: usize,
    /// The most duplicates after one restart.
    pub max_duplicates_per_restart: usize,
    /// Lines cut short by a kill.
    pub torn_lines: usize,
}

#[derive(Debug)]
struct Run {
    start: i64,
    records: Vec<(i64, String, String)>,
    torn: usize,
}

fn parse_sink(text: &str) -> Result<Vec<Run>, String> {
    let mut runs: Vec<Run> = Vec::new();
    let mut bad_line: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(pos) = line.strip_prefix("# start ") {
            bad_line = None;
            let start = pos
                .trim()
                .parse()
                .map_err(|_| format!("sink line {}: bad start {line:?}", i + 1))?;
            runs.push(Run {
                start,
                records: Vec::new(),
                torn: 0,
            });
            continue;
        }
        if let Some((at, bad)) = bad_line.take() {
            return Err(format!(
                "sink line {at}: malformed line {bad:?} inside a run"
            ));
        }
        let run = runs
            .last_mut()
            .ok_or_else(|| format!("sink line {}: record before any start", i + 1))?;
        let mut parts = line.split('\t');
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(lsn), Some(table), Some(id), None) if !id.is_empty() => lsn
                .parse::<i64>()
                .ok()
                .map(|lsn| (lsn, table.to_string(), id.to_string())),
            _ => None,
        };
        match parsed {
            Some(record) => run.records.push(record),
            None => {
                // Tolerated only as the last line of a run: a write cut by the kill.
                run.torn += 1;
                bad_line = Some((i + 1, line.to_string()));
            }
        }
    }
    Ok(runs)
}

/// Checks one component's sink against the ledger (see the module docs).
pub fn check(sink: &str, ledger: &[Committed], tables: &[&str]) -> Result<SinkReport, String> {
    let runs = parse_sink(sink)?;
    let mut report = SinkReport {
        runs: runs.len(),
        ..SinkReport::default()
    };
    let mut delivered: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut last_start = i64::MIN;
    for (k, run) in runs.iter().enumerate() {
        report.torn_lines += run.torn;
        report.deliveries += run.records.len();
        if run.start < last_start {
            return Err(format!(
                "run {k}: slot position went back from {last_start} to {}",
                run.start
            ));
        }
        last_start = run.start;
        let before_max = delivered.keys().next_back().copied().unwrap_or(0);
        // Everything confirmed by earlier runs after this run's durable position must be
        // delivered again, and nothing at or before it.
        let expected_again: Vec<i64> = delivered.range(run.start + 1..).map(|(l, _)| *l).collect();
        let mut again = Vec::new();
        let mut prev = run.start;
        for (lsn, table, id) in &run.records {
            if *lsn <= prev {
                return Err(format!(
                    "run {k}: lsn {lsn} after {prev} (out of order, or at or before the slot position {})",
                    run.start
                ));
            }
            prev = *lsn;
            if !tables.contains(&table.as_str()) {
                return Err(format!(
                    "run {k}: lsn {lsn} of table {table} not subscribed"
                ));
            }
            if *lsn <= before_max {
                match delivered.get(lsn) {
                    Some((t, i)) if t == table && i == id => again.push(*lsn),
                    Some(other) => {
                        return Err(format!(
                            "run {k}: lsn {lsn} delivered as {table}/{id}, earlier as {}/{}",
                            other.0, other.1
                        ))
                    }
                    None => {
                        return Err(format!(
                            "run {k}: lsn {lsn} delivered after a later change {before_max} (commit order broken)"
                        ))
                    }
                }
            } else {
                delivered.insert(*lsn, (table.clone(), id.clone()));
            }
        }
        let finished_redelivery = run.records.len() > again.len();
        let ok = if finished_redelivery {
            again == expected_again
        } else {
            // Killed while still re-delivering: what it re-delivered is a prefix.
            expected_again.starts_with(&again)
        };
        if !ok {
            return Err(format!(
                "run {k}: after position {} it re-delivered {again:?} but had confirmed {expected_again:?} (skipped changes confirmed earlier)",
                run.start
            ));
        }
        report.duplicates += again.len();
        report.max_duplicates_per_restart = report.max_duplicates_per_restart.max(again.len());
    }
    let expected: Vec<&Committed> = ledger
        .iter()
        .filter(|c| tables.contains(&c.table.as_str()))
        .collect();
    let got: Vec<&(String, String)> = delivered.values().collect();
    report.checked = expected.len();
    for (i, want) in expected.iter().enumerate() {
        match got.get(i) {
            Some((t, id)) if *t == want.table && *id == want.id => {}
            other => {
                let mut msg = format!(
                    "change {i} of {}: expected {}/{}, delivered {:?}",
                    expected.len(),
                    want.table,
                    want.id,
                    other
                );
                let lost = !got.iter().any(|(t, id)| *t == want.table && *id == want.id);
                let _ = write!(msg, "{}", if lost { " (lost)" } else { " (out of order)" });
                return Err(msg);
            }
        }
    }
    if got.len() > expected.len() {
        return Err(format!(
            "{} changes delivered that were never committed, first {:?}",
            got.len() - expected.len(),
            got[expected.len()]
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(ids: &[(&str, &str)]) -> Vec<Committed> {
        ids.iter()
            .map(|(t, i)| Committed {
                table: t.to_string(),
                id: i.to_string(),
            })
            .collect()
    }

    const LEDGER: &[(&str, &str)] = &[("t", "I:1"), ("u", "I:2"), ("t", "U:3"), ("t", "D:3")];

    #[test]
    fn accepts_a_restart_that_redelivers_after_the_position() {
        let sink = "# start 0\n1\tt\tI:1\n3\tt\tU:3\n# start 1\n3\tt\tU:3\n4\tt\tD:3\n";
        let r = check(sink, &ledger(LEDGER), &["t"]).unwrap();
        assert_eq!(
            (r.runs, r.checked, r.duplicates, r.deliveries),
            (2, 3, 1, 4)
        );
    }

    #[test]
    fn tolerates_a_torn_last_line() {
        let sink = "# start 0\n1\tt\tI:1\n3\tt\n# start 1\n3\tt\tU:3\n4\tt\tD:3\n";
        assert_eq!(check(sink, &ledger(LEDGER), &["t"]).unwrap().torn_lines, 1);
        let inside = "# start 0\n1\tt\n3\tt\tU:3\n4\tt\tD:3\n";
        assert!(check(inside, &ledger(LEDGER), &["t"]).is_err());
    }

    #[test]
    fn finds_loss_order_and_bad_positions() {
        let lost = "# start 0\n1\tt\tI:1\n4\tt\tD:3\n";
        assert!(check(lost, &ledger(LEDGER), &["t"])
            .unwrap_err()
            .contains("lost"));
        let swapped = "# start 0\n1\tt\tI:1\n3\tt\tD:3\n4\tt\tU:3\n";
        assert!(check(swapped, &ledger(LEDGER), &["t"]).is_err());
        let skipped_redelivery = "# start 0\n1\tt\tI:1\n3\tt\tU:3\n# start 1\n4\tt\tD:3\n";
        assert!(check(skipped_redelivery, &ledger(LEDGER), &["t"])
            .unwrap_err()
            .contains("skipped"));
        let backwards = "# start 3\n4\tt\tD:3\n# start 1\n";
        assert!(check(backwards, &ledger(LEDGER), &["t"]).is_err());
    }
}
