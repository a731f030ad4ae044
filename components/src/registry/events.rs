//! Registry changes as typed events: the `Event<T>` of seed 000 (docs/SEEDS.md), with `T` the registry
//! row struct of the table that changed, or a generic JSON row for any other table.

use astha_core::change::{Change, Event};
use astha_core::error::Result;

use super::rows::*;

/// A change of any captured table, decoded into the row type Astha knows for it.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    Databases(Event<Database>),
    Tables(Event<TableRow>),
    TableColumns(Event<TableColumn>),
    TableMetadata(Event<TableMetadata>),
    TableFiles(Event<TableFile>),
    FileStatistics(Event<FileStatistic>),
    TableSnapshots(Event<TableSnapshot>),
    /// A table Astha has no type for: rows in the JSON form of [`astha_core::Value::to_json`].
    Other(Event<serde_json::Map<String, serde_json::Value>>),
}

impl RegistryEvent {
    /// Decodes a change; a row that does not fit its table's type is an error that names
    /// the table (and is not retriable: the same row will never fit).
    pub fn decode(change: &Change) -> Result<RegistryEvent> {
        Ok(match &*change.table {
            "databases" => RegistryEvent::Databases(change.typed()?),
            "tables" => RegistryEvent::Tables(change.typed()?),
            "table_columns" => RegistryEvent::TableColumns(change.typed()?),
            "table_metadata" => RegistryEvent::TableMetadata(change.typed()?),
            "table_files" => RegistryEvent::TableFiles(change.typed()?),
            "file_statistics" => RegistryEvent::FileStatistics(change.typed()?),
            "table_snapshots" => RegistryEvent::TableSnapshots(change.typed()?),
            _ => RegistryEvent::Other(Event {
                lsn: change.lsn,
                timestamp_ms: change.timestamp_ms,
                table: change.table.clone(),
                op: change.op,
                before: change.before.as_ref().map(|r| r.to_json()),
                after: change.after.as_ref().map(|r| r.to_json()),
            }),
        })
    }
}
