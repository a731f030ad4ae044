//! The window state machine: which windows a change falls in, when a window closes, and
//! what it emits. Pure: no SQLite, no async, no clock; the same changes in the same
//! order give the same results, whatever the batches and restarts (what makes a
//! re-delivery after a crash emit results identical to the first delivery's).
//!
//! Event time is the change's `timestamp_ms`. The watermark is the greatest event time
//! seen minus `allowed_lateness_ms`; a time window closes (and emits with
//! `state = "closed"`) once its end is at or below the watermark. A change whose window
//! has already closed is late: it is counted in [`Progress::late`] (per window it
//! missed) and logged by the transform, never silently dropped. A count window closes
//! when it holds `count` changes. Beyond `max_open_windows` the open window that would
//! close first is closed early (`state = "evicted"`, counted in [`Progress::evicted`]).
//! Dirty windows are tracked for [`super::durable`], which writes only what changed.

use std::collections::{BTreeMap, BTreeSet};

use astha_core::Value;
use serde::{Deserialize, Serialize};

use super::aggregate::Acc;
use super::config::{EmitMode, WindowConfig, WindowKind};

/// One open window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Time windows and sessions: their end in ms (exclusive; a session's is its last
    /// change's time plus the gap). Count windows: their first change's LSN.
    pub end: i64,
    /// Event time of the earliest and latest change taken.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Changes taken.
    pub changes: u64,
    /// Results emitted for it so far (the first is an INSERT, later ones UPDATEs).
    pub emitted: u64,
    pub accs: Vec<Acc>,
}

/// A window's identity: its key and its start (ms; a count window's first LSN).
pub type WindowId = (String, i64);

/// The transform's position and counters, stored with the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every change at or below this LSN is in the state.
    pub applied_lsn: i64,
    /// Greatest event time seen (`i64::MIN` before the first change).
    pub max_ms: i64,
    /// Number of the next result (results are numbered from 1).
    pub next_seq: u64,
    /// Window assignments refused because the window had closed.
    pub late: u64,
    /// Windows closed early by `max_open_windows`.
    pub evicted: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            applied_lsn: 0,
            max_ms: i64::MIN,
            next_seq: 1,
            late: 0,
            evicted: 0,
        }
    }
}

/// What one change contributes to one aggregate: `None` when the aggregate does not
/// take it (operation filtered out, or the image it reads is absent), `Some(None)` for
/// a `count` without a column, `Some(Some(v))` for a value.
pub type Contribution = Option<Option<Value>>;

/// One change as the state machine sees it.
#[derive(Debug, Clone)]
pub struct Input {
    pub lsn: i64,
    pub time_ms: i64,
    pub key: String,
    pub values: Vec<Contribution>,
}

/// One result: a window's values, numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    /// 1-based, over all the transform's results, in order.
    pub seq: u64,
    /// The LSN of the change that caused it.
    pub lsn: i64,
    /// That change's event time.
    pub time_ms: i64,
    /// First result of its window (INSERT) or a later one (UPDATE).
    pub first: bool,
    /// The retraction of the window's last result (a DELETE): a session merged into
    /// one with an earlier start, so its id is gone.
    pub retract: bool,
    /// The result's values, in [`WindowConfig::result_columns`] order.
    pub values: Vec<Value>,
}

/// All open windows of one transform.
#[derive(Debug, Clone)]
pub struct Windows {
    config: WindowConfig,
    pub progress: Progress,
    open: BTreeMap<WindowId, Window>,
    /// `(close order, key, start)`: the next window to close or evict first.
    order: BTreeSet<(i64, String, i64)>,
    /// Windows changed or removed since the last [`Windows::take_dirty`].
    dirty: BTreeSet<WindowId>,
}

impl Windows {
    /// An empty state (or, with [`Windows::restore`], a stored one).
    pub fn new(config: WindowConfig) -> Windows {
        Windows {
            config,
            progress: Progress::default(),
            open: BTreeMap::new(),
            order: BTreeSet::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// Puts back stored windows and progress.
    pub fn restore(&mut self, progress: Progress, windows: Vec<(WindowId, Window)>) {
        self.progress = progress;
        for (id, w) in windows {
            self.order.insert((w.end, id.0.clone(), id.1));
            self.open.insert(id, w);
        }
    }

    /// Open windows now.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The open windows (for the durable store and tests).
    pub fn get(&self, id: &WindowId) -> Option<&Window> {
        self.open.get(id)
    }

    /// The progress and the windows of `ids` that are open: what a save of `ids` needs.
    pub fn subset(&self, ids: &BTreeSet<WindowId>) -> Windows {
        let mut out = Windows::new(self.config.clone());
        out.progress = self.progress;
        for id in ids {
            if let Some(w) = self.open.get(id) {
                out.open.insert(id.clone(), w.clone());
            }
        }
        out
    }

    /// The windows changed or removed since the last call (removed ones are absent
    /// from [`Windows::get`]).
    pub fn take_dirty(&mut self) -> BTreeSet<WindowId> {
        std::mem::take(&mut self.dirty)
    }

    /// Applies one change (its LSN above `applied_lsn`), appending the results it causes.
    pub fn apply(&mut self, input: Input, out: &mut Vec<Emission>) {
        debug_assert!(input.lsn > self.progress.applied_lsn);
        self.progress.applied_lsn = input.lsn;
        let t = input.time_ms;
        if self.config.kind != WindowKind::Count {
            self.progress.max_ms = self.progress.max_ms.max(t);
        }
        let watermark = self
            .progress
            .max_ms
            .saturating_sub(self.config.allowed_lateness_ms);
        let touched: Vec<WindowId> = match self.config.kind {
            WindowKind::Tumbling | WindowKind::Sliding => {
                let size = self.config.size_ms.unwrap_or(1);
                let slide = self.config.slide_ms.unwrap_or(size);
                let last = t.div_euclid(slide);
                let first = (t - size).div_euclid(slide) + 1;
                let mut touched = Vec::new();
                for k in first..=last {
                    let start = k * slide;
                    let end = start + size;
                    if end <= watermark {
                        self.progress.late += 1;
                        continue;
                    }
                    let id = (input.key.clone(), start);
                    self.take(&id, end, &input);
                    touched.push(id);
                }
                touched
            }
            WindowKind::Session => {
                let gap = self.config.gap_ms.unwrap_or(1);
                let candidates: Vec<WindowId> = self
                    .open
                    .range((input.key.clone(), i64::MIN)..)
                    .take_while(|((k, _), _)| *k == input.key)
                    .filter(|((_, start), w)| t > start - gap && t < w.end)
                    .map(|(id, _)| id.clone())
                    .collect();
                if candidates.is_empty() {
                    if t + gap <= watermark {
                        self.progress.late += 1;
                        Vec::new()
                    } else {
                        let id = (input.key.clone(), t);
                        self.take(&id, t + gap, &input);
                        vec![id]
                    }
                } else {
                    // The merged session starts at the earliest of theirs and t. A
                    // session whose id goes away and had results out (emit = "change")
                    // has its last result retracted: a DELETE of that id.
                    let start = candidates[0].1.min(t);
                    for id in &candidates {
                        if id.1 != start && self.open[id].emitted > 0 {
                            self.emit_as(id, "open", true, &input, out);
                        }
                    }
                    let merged = self.merge_sessions(candidates);
                    let end = self.open[&merged].end.max(t + gap);
                    let id = if t < merged.1 {
                        self.rekey(merged, t)
                    } else {
                        merged
                    };
                    self.take(&id, end, &input);
                    vec![id]
                }
            }
            WindowKind::Count => {
                let open = self
                    .open
                    .range((input.key.clone(), i64::MIN)..)
                    .take_while(|((k, _), _)| *k == input.key)
                    .map(|(id, _)| id.clone())
                    .next();
                let id = open.unwrap_or((input.key.clone(), input.lsn));
                self.take(&id, id.1, &input);
                if self.open[&id].changes >= self.config.count.unwrap_or(1) {
                    // The closing result is the change's only one, in either emit mode.
                    self.close(&id, "closed", &input, out);
                    self.evict(&input, out);
                    return;
                }
                vec![id]
            }
        };
        if self.config.emit == EmitMode::Change {
            for id in &touched {
                if self.open.contains_key(id) {
                    self.emit(id, "open", &input, out);
                }
            }
        }
        if self.config.kind != WindowKind::Count {
            while let Some((end, key, start)) = self.order.first().cloned() {
                if end > watermark {
                    break;
                }
                self.close(&(key, start), "closed", &input, out);
            }
        }
        self.evict(&input, out);
    }

    /// Closes windows early while more than `max_open_windows` are open.
    fn evict(&mut self, input: &Input, out: &mut Vec<Emission>) {
        while self.open.len() > self.config.max_open_windows {
            let (_, key, start) = self
                .order
                .first()
                .cloned()
                .expect("open windows are ordered");
            self.progress.evicted += 1;
            self.close(&(key, start), "evicted", input, out);
        }
    }

    /// Adds the input to window `id` (opening it with `end` if needed; moving its end).
    fn take(&mut self, id: &WindowId, end: i64, input: &Input) {
        let max_values = self.config.max_values;
        let functions: Vec<_> = self.config.aggregates.iter().map(|a| a.function).collect();
        let w = self.open.entry(id.clone()).or_insert_with(|| Window {
            end,
            first_ms: input.time_ms,
            last_ms: input.time_ms,
            changes: 0,
            emitted: 0,
            accs: functions.iter().map(|f| Acc::new(*f)).collect(),
        });
        if w.end != end {
            self.order.remove(&(w.end, id.0.clone(), id.1));
            w.end = end;
        }
        self.order.insert((w.end, id.0.clone(), id.1));
        w.first_ms = w.first_ms.min(input.time_ms);
        w.last_ms = w.last_ms.max(input.time_ms);
        w.changes += 1;
        for (acc, value) in w.accs.iter_mut().zip(&input.values) {
            if let Some(value) = value {
                acc.add(input.lsn, value.as_ref(), max_values);
            }
        }
        self.dirty.insert(id.clone());
    }

    fn remove(&mut self, id: &WindowId) -> Option<Window> {
        let w = self.open.remove(id)?;
        self.order.remove(&(w.end, id.0.clone(), id.1));
        self.dirty.insert(id.clone());
        Some(w)
    }

    /// Merges the sessions `ids` (of one key, in start order) into the first.
    fn merge_sessions(&mut self, ids: Vec<WindowId>) -> WindowId {
        let mut ids = ids.into_iter();
        let first = ids.next().expect("at least one session");
        for id in ids {
            let other = self.remove(&id).expect("open");
            let max_values = self.config.max_values;
            let w = self.open.get_mut(&first).expect("open");
            w.first_ms = w.first_ms.min(other.first_ms);
            w.last_ms = w.last_ms.max(other.last_ms);
            w.changes += other.changes;
            let end = w.end.max(other.end);
            for (acc, o) in w.accs.iter_mut().zip(other.accs) {
                acc.merge(o, max_values);
            }
            let old = w.end;
            w.end = end;
            self.order.remove(&(old, first.0.clone(), first.1));
            self.order.insert((end, first.0.clone(), first.1));
            self.dirty.insert(first.clone());
        }
        first
    }

    /// Moves a session to an earlier start.
    fn rekey(&mut self, id: WindowId, start: i64) -> WindowId {
        let mut w = self.remove(&id).expect("open");
        // A new id: its first result is an INSERT (the old id's was retracted).
        w.emitted = 0;
        let new = (id.0, start);
        self.order.insert((w.end, new.0.clone(), new.1));
        self.open.insert(new.clone(), w);
        self.dirty.insert(new.clone());
        new
    }

    fn close(&mut self, id: &WindowId, state: &str, input: &Input, out: &mut Vec<Emission>) {
        self.emit(id, state, input, out);
        self.remove(id);
    }

    fn emit(&mut self, id: &WindowId, state: &str, input: &Input, out: &mut Vec<Emission>) {
        self.emit_as(id, state, false, input, out)
    }

    /// A result of window `id`, or (`retract`) the retraction of its last one.
    fn emit_as(
        &mut self,
        id: &WindowId,
        state: &str,
        retract: bool,
        input: &Input,
        out: &mut Vec<Emission>,
    ) {
        let config = &self.config;
        let w = self.open.get_mut(id).expect("open window");
        let (start, end) = match config.kind {
            WindowKind::Tumbling | WindowKind::Sliding => (id.1, w.end),
            WindowKind::Session => (id.1, w.end),
            WindowKind::Count => (w.first_ms, w.last_ms),
        };
        let mut values = vec![
            Value::Text(id.0.clone()),
            Value::Integer(start),
            Value::Integer(end),
            Value::Text(state.to_string()),
            Value::Integer(w.changes as i64),
        ];
        for (acc, agg) in w.accs.iter().zip(&config.aggregates) {
            values.extend(acc.result(agg.function));
        }
        out.push(Emission {
            seq: self.progress.next_seq,
            lsn: input.lsn,
            time_ms: input.time_ms,
            first: w.emitted == 0,
            retract,
            values,
        });
        self.progress.next_seq += 1;
        w.emitted += 1;
        self.dirty.insert(id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> WindowConfig {
        let config: WindowConfig = toml::from_str(&format!(
            "{text}\naggregates = [{{ name = \"n\", fn = \"count\" }}]"
        ))
        .unwrap();
        config.validate().unwrap();
        config
    }

    fn input(lsn: i64, time_ms: i64, key: &str) -> Input {
        Input {
            lsn,
            time_ms,
            key: key.into(),
            values: vec![Some(None)],
        }
    }

    fn states(out: &[Emission]) -> Vec<(String, i64, String, i64)> {
        out.iter()
            .map(|e| {
                let text = |v: &Value| match v {
                    Value::Text(t) => t.clone(),
                    other => panic!("{other:?}"),
                };
                let int = |v: &Value| match v {
                    Value::Integer(i) => *i,
                    other => panic!("{other:?}"),
                };
                (
                    text(&e.values[0]),
                    int(&e.values[1]),
                    text(&e.values[3]),
                    int(&e.values[5]),
                )
            })
            .collect()
    }

    #[test]
    fn a_late_change_is_counted_and_does_not_reopen_its_window() {
        let mut w = Windows::new(config(
            "kind = \"tumbling\"\nsize_ms = 10\nallowed_lateness_ms = 2",
        ));
        let mut out = Vec::new();
        w.apply(input(1, 3, "a"), &mut out);
        w.apply(input(2, 11, "a"), &mut out); // watermark 9: [0, 10) stays open
        assert!(out.is_empty());
        w.apply(input(3, 9, "a"), &mut out); // in time for [0, 10)
        w.apply(input(4, 12, "a"), &mut out); // watermark 10: [0, 10) closes with 2
        assert_eq!(states(&out), [("a".into(), 0, "closed".into(), 2)]);
        w.apply(input(5, 5, "a"), &mut out); // late
        assert_eq!(w.progress.late, 1);
        assert_eq!(out.len(), 1);
        assert!(w.get(&("a".into(), 0)).is_none());
    }

    #[test]
    fn beyond_the_limit_the_window_due_first_closes_early() {
        let mut w = Windows::new(config(
            "kind = \"tumbling\"\nsize_ms = 100\nmax_open_windows = 2",
        ));
        let mut out = Vec::new();
        w.apply(input(1, 1, "b"), &mut out);
        w.apply(input(2, 2, "a"), &mut out);
        w.apply(input(3, 3, "c"), &mut out);
        assert_eq!(states(&out), [("a".into(), 0, "evicted".into(), 1)]);
        assert_eq!((w.progress.evicted, w.open_windows()), (1, 2));
    }

    #[test]
    fn a_change_between_two_sessions_merges_them() {
        let mut w = Windows::new(config(
            "kind = \"session\"\ngap_ms = 5\nallowed_lateness_ms = 100",
        ));
        let mut out = Vec::new();
        w.apply(input(1, 10, "k"), &mut out);
        w.apply(input(2, 18, "k"), &mut out);
        assert_eq!(w.open_windows(), 2);
        w.apply(input(3, 14, "k"), &mut out); // within 5 of both
        assert_eq!(w.open_windows(), 1);
        let merged = w.get(&("k".into(), 10)).unwrap();
        assert_eq!((merged.changes, merged.end), (3, 23));
        w.apply(input(4, 200, "k"), &mut out);
        assert_eq!(states(&out), [("k".into(), 10, "closed".into(), 3)]);
    }
}
