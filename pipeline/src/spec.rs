//! The pipeline file as written: its TOML schema, with `${VAR}` environment references.
//!
//! Owns the shape of `pipeline.toml` and nothing else: every table is
//! `deny_unknown_fields`, so a misspelt key is an error naming it, never a setting that
//! silently does not apply. It never opens a database or builds a sink; [`crate::plan`]
//! turns a [`PipelineSpec`] into something that can run.
//!
//! ```toml
//! [defaults]                      # global level of the cascade
//! exclude_columns = ["password"]
//!
//! [[sources]]
//! name = "shop"
//! database = "shop.db"
//! tables = ["orders", "audit_*"]  # names or globs; default: every user table
//! exclude_tables = ["audit_tmp"]
//! install = true                  # create capture triggers where missing
//!
//! [sources.table.orders]          # table level of the cascade
//! filter = "status = 'paid'"
//!
//! [[sinks]]
//! name = "orders-file"            # also the name of its durable slot
//! type = "file"
//! path = "out/{source}.jsonl"     # the rest is the sink type's own settings
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::PipelineError;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Settings every source and table inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Settings,
    /// The databases read (one is single mode, several multi mode).
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    /// Where changes go.
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
}

/// The settings that cascade global → source → table: the nearest level that sets one wins.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Most log rows the source's poller reads per batch (source level and above).
    pub batch_size: Option<usize>,
    /// Event format of the sinks: `native`, `debezium` or `cloudevents`.
    pub format: Option<String>,
    /// With `format = "debezium"`: wrap each event (and the key, where the transport
    /// carries one) in `{"schema": ..., "payload": ...}` as Kafka Connect's JSON
    /// converter does with `schemas.enable=true` (sink level and above).
    pub debezium_schemas: Option<bool>,
    /// Write Debezium's BEGIN and END transaction markers around each marked
    /// transaction's changes (sink level and above; `astha_core::format::markers`).
    /// Only sinks that can place them take it (stdout, file); refused with a `filter`
    /// on any of the sink's tables, which would make the markers' counts a lie.
    pub transaction_events: Option<bool>,
    /// When a sink first receives a snapshot of its tables: `never` (default),
    /// `initial`, `initial_only` or `when_needed` (sink level and above; see
    /// `astha_core::snapshot::SnapshotMode`).
    pub snapshot: Option<String>,
    /// Create capture triggers on the selected tables where they are missing.
    pub install: Option<bool>,
    /// Only these columns leave the process (primary-key columns must be among them).
    pub include_columns: Option<Vec<String>>,
    /// These columns never leave the process.
    pub exclude_columns: Option<Vec<String>>,
    /// A SQLite expression over the row's columns (and `_op`, `_table`); a change is
    /// passed on only where it is true. See [`crate::filter`].
    pub filter: Option<String>,
    /// How long the source's change log keeps rows every sink is past, e.g. `"7d"`
    /// (source level and above; `astha_core::retention`). Default: the engine's
    /// `[retention] keep_for`.
    pub keep_for: Option<String>,
    /// Keep the newest this many LSNs of the source's log (source level and above).
    /// Default: the engine's `[retention] keep_rows`.
    pub keep_rows: Option<u64>,
}

/// One source database.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct SourceSpec {
    /// The source's name in sink selections and `{source}` templates; default: the
    /// database file's stem.
    pub name: Option<String>,
    /// The SQLite database file; relative paths are relative to the pipeline file.
    pub database: PathBuf,
    /// Table names or globs to capture; default: every user table.
    pub tables: Vec<String>,
    /// Table names or globs left out of `tables`.
    pub exclude_tables: Vec<String>,
    /// The source level of the cascade (its keys sit beside `database`).
    pub settings: Settings,
    /// The table level of the cascade, by exact table name.
    pub table: BTreeMap<String, Settings>,
}

/// A source as written. serde cannot combine `flatten` with `deny_unknown_fields` (the
/// flattened struct never sees the keys it does not know), so the keys nobody else took
/// are collected here and parsed as [`Settings`], which refuses unknown ones by name.
#[derive(Deserialize)]
struct RawSource {
    name: Option<String>,
    database: PathBuf,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    exclude_tables: Vec<String>,
    #[serde(default)]
    table: BTreeMap<String, Settings>,
    #[serde(flatten)]
    rest: toml::Table,
}

impl TryFrom<RawSource> for SourceSpec {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        let settings = Settings::deserialize(toml::Value::Table(raw.rest)).map_err(|e| {
            format!(
                "source {}: {e} (or one of name, database, tables, exclude_tables, table)",
                raw.database.display()
            )
        })?;
        Ok(SourceSpec {
            name: raw.name,
            database: raw.database,
            tables: raw.tables,
            exclude_tables: raw.exclude_tables,
            settings,
            table: raw.table,
        })
    }
}

/// One sink: the keys the pipeline reads, plus the sink type's own settings.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkSpec {
    /// Unique among the sinks; the name of its durable slot in every source.
    pub name: String,
    /// The registered sink type (`astha run --list-sinks`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Source names this sink takes; default: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Table names or globs it takes from those sources; default: all their tables.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Overrides the cascaded format for this sink.
    pub format: Option<String>,
    /// Overrides the cascaded snapshot mode for this sink.
    pub snapshot: Option<String>,
    /// Overrides the cascaded `debezium_schemas` for this sink.
    pub debezium_schemas: Option<bool>,
    /// Overrides the cascaded `transaction_events` for this sink.
    pub transaction_events: Option<bool>,
    /// Where the sink's slot starts when it is created: `"lsn:N"` or `"time:T"`, a point
    /// the source's log still holds (`astha_core::retention::StartAt`). An existing
    /// slot keeps its position. Default: the log's head.
    pub start_at: Option<String>,
    /// A window transform: the sink receives window results instead of the changes
    /// ([`crate::window`]).
    pub window: Option<crate::window::WindowConfig>,
    /// Everything else: checked by the sink type's own config (unknown keys refused there).
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl PipelineSpec {
    /// Reads and parses `path`, replacing `${VAR}` with the environment's value first.
    /// Relative database paths are made relative to the file's directory.
    pub fn load(path: &Path) -> Result<PipelineSpec, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut spec = Self::parse(&text, |name| std::env::var(name).ok()).map_err(|e| {
            PipelineError::Parse {
                path: path.to_path_buf(),
                reason: e,
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for source in &mut spec.sources {
            if source.database.is_relative() {
                source.database = base.join(&source.database);
            }
        }
        Ok(spec)
    }

    /// Parses pipeline text, resolving `${VAR}` through `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let text = interpolate(text, env)?;
        toml::from_str(&text).map_err(|e| e.to_string())
    }
}

/// Replaces `${NAME}` with `env(NAME)`; `$${` stands for a literal `${`. A reference to
/// a variable that is not set is an error (a secret that silently became empty would
/// turn off authentication).
fn interpolate(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unclosed ${ in the pipeline file".to_string())?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            let value = env(name).ok_or_else(|| {
                format!("environment variable {name} is not set (the pipeline file refers to ${{{name}}})")
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn environment_references_are_replaced_and_missing_ones_refused() {
        assert_eq!(interpolate("a ${TOKEN} b", env).unwrap(), "a s3cret b");
        assert_eq!(
            interpolate("cost $5 and $${TOKEN}", env).unwrap(),
            "cost $5 and ${TOKEN}"
        );
        let err = interpolate("x = \"${NOPE}\"", env).unwrap_err();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(interpolate("${A-B}", env).is_err());
        assert!(interpolate("${OPEN", env).is_err());
    }

    #[test]
    fn a_full_file_parses_with_the_cascade_levels() {
        let spec = PipelineSpec::parse(
            r#"
            [defaults]
            exclude_columns = ["password"]
            [[sources]]
            database = "shop.db"
            tables = ["orders", "audit_*"]
            batch_size = 64
            [sources.table.orders]
            filter = "status = 'paid'"
            [[sinks]]
            name = "out"
            type = "file"
            path = "out.jsonl"
            "#,
            env,
        )
        .unwrap();
        assert_eq!(spec.defaults.exclude_columns, Some(vec!["password".into()]));
        assert_eq!(spec.sources[0].settings.batch_size, Some(64));
        assert_eq!(
            spec.sources[0].table["orders"].filter.as_deref(),
            Some("status = 'paid'")
        );
        assert_eq!(spec.sinks[0].kind, "file");
        assert_eq!(spec.sinks[0].settings["path"].as_str(), Some("out.jsonl"));
    }

    #[test]
    fn misspelt_keys_are_named() {
        let err = PipelineSpec::parse("[defaults]\nbatchsize = 3\n", env).unwrap_err();
        assert!(err.contains("batchsize"), "{err}");
        let err = PipelineSpec::parse("[[sources]]\ndatabase = \"a.db\"\ntabels = [\"x\"]\n", env)
            .unwrap_err();
        assert!(err.contains("tabels"), "{err}");
    }
}
