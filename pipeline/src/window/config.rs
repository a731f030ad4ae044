//! A window transform as written in a pipeline file: `window = { ... }` on a sink.
//!
//! Owns the TOML shape of a window and its checks (`validate`), nothing else: it never
//! sees a change. Every table is `deny_unknown_fields`, so a misspelt key is refused by
//! name.
//!
//! ```toml
//! [[sinks]]
//! name = "orders-per-minute"
//! type = "file"
//! path = "out/orders-per-minute.jsonl"
//! tables = ["orders"]
//! window = { kind = "tumbling", size_ms = 60000, key = "customer",
//!            aggregates = [ { name = "orders", fn = "count" },
//!                           { name = "total", fn = "sum", column = "amount" } ] }
//! ```

use serde::Deserialize;

/// Default of [`WindowConfig::max_open_windows`].
pub const DEFAULT_MAX_OPEN_WINDOWS: usize = 100_000;
/// Default of [`WindowConfig::max_values`].
pub const DEFAULT_MAX_VALUES: usize = 1_000;

/// One window transform in front of a sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// `tumbling`, `sliding`, `session` or `count`.
    pub kind: WindowKind,
    /// Length of a tumbling or sliding window, in milliseconds of event time.
    pub size_ms: Option<i64>,
    /// How far a sliding window's start moves, in milliseconds (a divisor of
    /// `size_ms` is usual; any positive value is accepted).
    pub slide_ms: Option<i64>,
    /// A session closes after this many milliseconds of event time without a change
    /// of its key.
    pub gap_ms: Option<i64>,
    /// Changes per count window (per key).
    pub count: Option<u64>,
    /// A SQLite expression over the change's image (its columns, `_table`, `_op`)
    /// whose value keys the window state; default: one key for every change. A plain
    /// column name is read directly, anything else is evaluated by SQLite as filters
    /// are ([`crate::filter`]).
    #[serde(default)]
    pub key: Option<String>,
    /// How much older than the newest event time seen a change may be and still count
    /// in its window, in milliseconds (default 0). See `docs/DESIGN.md`, "Windows".
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    /// `close` (default): one result per window, when it closes. `change`: a result
    /// after every change the window takes, and a final one when it closes.
    #[serde(default)]
    pub emit: EmitMode,
    /// The `table` of the result events (default: the sink's name).
    pub table: Option<String>,
    /// Open windows held at most (over all keys); beyond it the window with the
    /// earliest end is closed early and emitted with `state = "evicted"`.
    #[serde(default = "default_max_open")]
    pub max_open_windows: usize,
    /// Values held per window by `collect` and `count_distinct`; values beyond it are
    /// counted in the result's `<name>_omitted` column, never silently dropped.
    #[serde(default = "default_max_values")]
    pub max_values: usize,
    /// The aggregates, each a column of the result.
    pub aggregates: Vec<AggregateConfig>,
}

fn default_max_open() -> usize {
    DEFAULT_MAX_OPEN_WINDOWS
}

fn default_max_values() -> usize {
    DEFAULT_MAX_VALUES
}

/// The window types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Tumbling,
    Sliding,
    Session,
    Count,
}

/// When results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitMode {
    #[default]
    Close,
    Change,
}

/// One aggregate column of the result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The result column's name.
    pub name: String,
    /// The function.
    #[serde(rename = "fn")]
    pub function: AggregateFn,
    /// The column aggregated (all but `count` need one; `count` without one counts
    /// changes, with one counts non-NULL values).
    pub column: Option<String>,
    /// Which image the column is read from: `after` (default; a DELETE has none, so it
    /// contributes nothing) or `before`.
    #[serde(default)]
    pub image: Image,
    /// Only changes of these operations count (`insert`, `update`, `delete`, `read`);
    /// default: all.
    #[serde(default)]
    pub ops: Vec<String>,
}

/// The aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Collect,
    CountDistinct,
}

/// Which row image an aggregate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Image {
    #[default]
    After,
    Before,
}

/// The result columns that are not aggregates, in order.
pub const FIXED_COLUMNS: [&str; 5] = [
    "window_key",
    "window_start",
    "window_end",
    "state",
    "changes",
];

impl WindowConfig {
    /// Checks the settings the kind needs, and the aggregates; the message names the fix.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: Option<i64>| match v {
            Some(x) if x > 0 => Ok(x),
            Some(_) => Err(format!("window: {name} must be > 0")),
            None => Err(format!("window: kind {:?} needs {name}", self.kind)),
        };
        let unused = |names: &[(&str, bool)]| {
            for (name, set) in names {
                if *set {
                    return Err(format!(
                        "window: {name} does not apply to kind {:?}",
                        self.kind
                    ));
                }
            }
            Ok(())
        };
        match self.kind {
            WindowKind::Tumbling => {
                positive("size_ms", self.size_ms)?;
                unused(&[
                    ("slide_ms", self.slide_ms.is_some()),
                    ("gap_ms", self.gap_ms.is_some()),
                    ("count", self.count.is_some()),
                ])?;
            }
            WindowKind::Sliding => {
                let size = positive("size_ms", self.size_ms)?;
                let slide = positive("slide_ms", self.slide_ms)?;
                if slide > size {
                    return Err(
                        "window: slide_ms larger than size_ms would leave changes in no window"
                            .into(),
                    );
                }
                if size / slide > 1_000 {
                    return Err("window: size_ms / slide_ms above 1000 puts every change in over 1000 windows".into());
                }
                unused(&[
                    ("gap_ms", self.gap_ms.is_some()),
                    ("count", self.count.is_some()),
                ])?;
            }
            WindowKind::Session => {
                positive("gap_ms", self.gap_ms)?;
                unused(&[
                    ("size_ms", self.size_ms.is_some()),
                    ("slide_ms", self.slide_ms.is_some()),
                    ("count", self.count.is_some()),
                ])?;
            }
            WindowKind::Count => {
                match self.count {
                    Some(n) if n > 0 => {}
                    _ => return Err("window: kind \"count\" needs count > 0".into()),
                }
                unused(&[
                    ("size_ms", self.size_ms.is_some()),
                    ("slide_ms", self.slide_ms.is_some()),
                    ("gap_ms", self.gap_ms.is_some()),
                ])?;
                if self.allowed_lateness_ms != 0 {
                    return Err("window: allowed_lateness_ms does not apply to count windows (they close on their count)".into());
                }
            }
        }
        if self.allowed_lateness_ms < 0 {
            return Err("window: allowed_lateness_ms must be >= 0".into());
        }
        if self.max_open_windows == 0 {
            return Err("window: max_open_windows must be > 0".into());
        }
        if self.aggregates.is_empty() {
            return Err(
                "window: add at least one aggregate, e.g. { name = \"n\", fn = \"count\" }".into(),
            );
        }
        let mut names: Vec<String> = FIXED_COLUMNS.iter().map(|c| c.to_string()).collect();
        for agg in &self.aggregates {
            if agg.function != AggregateFn::Count && agg.column.is_none() {
                return Err(format!(
                    "window: aggregate {:?} ({:?}) needs a column",
                    agg.name, agg.function
                ));
            }
            for op in &agg.ops {
                if astha_core::Operation::parse(op).is_none() {
                    return Err(format!("window: aggregate {:?}: unknown operation {op:?} (insert, update, delete, read)", agg.name));
                }
            }
            let mut own = vec![agg.name.clone()];
            if agg.function.holds_values() {
                own.push(format!("{}_omitted", agg.name));
            }
            for name in own {
                if names.contains(&name) {
                    return Err(format!("window: result column {name:?} is named twice"));
                }
                names.push(name);
            }
        }
        Ok(())
    }

    /// The result's column names, in order: [`FIXED_COLUMNS`], then per aggregate its
    /// name (and `<name>_omitted` for `collect` and `count_distinct`).
    pub fn result_columns(&self) -> Vec<String> {
        let mut out: Vec<String> = FIXED_COLUMNS.iter().map(|c| c.to_string()).collect();
        for agg in &self.aggregates {
            out.push(agg.name.clone());
            if agg.function.holds_values() {
                out.push(format!("{}_omitted", agg.name));
            }
        }
        out
    }
}

impl AggregateFn {
    /// Whether the aggregate keeps a set of values (bounded by `max_values`).
    pub fn holds_values(self) -> bool {
        matches!(self, AggregateFn::Collect | AggregateFn::CountDistinct)
    }
}
