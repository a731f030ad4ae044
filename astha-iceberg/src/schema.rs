//! Table columns and their Iceberg, SQL and Arrow spellings.
//!
//! Owns [`IcebergType`] (the primitive types this writer supports), [`ColumnSpec`] (one
//! top-level column with its permanent Iceberg field id) and the Iceberg schema JSON that table
//! metadata and manifest headers embed. Nested types (struct/list/map), decimals, UUIDs and
//! time zones are deliberately absent: a schema using them is refused with a clear error rather
//! than written half-right.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use serde::{Deserialize, Serialize};

use super::error::{IcebergError, Result};

/// Arrow field metadata key through which Parquet stores an Iceberg field id.
pub const PARQUET_FIELD_ID_KEY: &str = "PARQUET:field_id";

/// A primitive Iceberg type. Serialises as Iceberg's own spelling (`"long"`, `"timestamp"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcebergType {
    Boolean,
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    Long,
    /// 32-bit IEEE 754 float.
    Float,
    /// 64-bit IEEE 754 float.
    Double,
    /// UTF-8 text.
    String,
    /// Arbitrary bytes.
    Binary,
    /// Calendar date, stored as days since 1970-01-01.
    Date,
    /// Timestamp in microseconds since the epoch, without time zone.
    Timestamp,
}

impl IcebergType {
    /// Maps a common SQL / engine type name (case-insensitive) to an Iceberg type.
    pub fn from_sql(name: &str) -> Result<Self> {
        let norm = name.trim().to_ascii_lowercase();
        // `varchar(255)`, `character varying(10)`: the length does not matter to Iceberg.
        let base = norm.split('(').next().unwrap_or("").trim();
        Ok(match base {
            "int64" | "bigint" | "integer" | "long" | "int8" => IcebergType::Long,
            "int32" | "int" | "int4" => IcebergType::Int,
            "string" | "text" | "varchar" | "character varying" | "char" => IcebergType::String,
            "double" | "float64" | "real" | "double precision" | "float8" => IcebergType::Double,
            "float32" | "float" | "float4" => IcebergType::Float,
            "bool" | "boolean" => IcebergType::Boolean,
            "binary" | "blob" | "bytes" | "bytea" | "varbinary" => IcebergType::Binary,
            "date" => IcebergType::Date,
            "timestamp" | "datetime" | "timestamp without time zone" => IcebergType::Timestamp,
            _ => return Err(IcebergError::UnknownSqlType(name.to_string())),
        })
    }

    /// Iceberg's spelling of the type, as in schema JSON.
    pub fn iceberg_name(self) -> &'static str {
        match self {
            IcebergType::Boolean => "boolean",
            IcebergType::Int => "int",
            IcebergType::Long => "long",
            IcebergType::Float => "float",
            IcebergType::Double => "double",
            IcebergType::String => "string",
            IcebergType::Binary => "binary",
            IcebergType::Date => "date",
            IcebergType::Timestamp => "timestamp",
        }
    }

    /// The Arrow type Parquet files of this table use for the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            IcebergType::Boolean => DataType::Boolean,
            IcebergType::Int => DataType::Int32,
            IcebergType::Long => DataType::Int64,
            IcebergType::Float => DataType::Float32,
            IcebergType::Double => DataType::Float64,
            IcebergType::String => DataType::Utf8,
            IcebergType::Binary => DataType::Binary,
            IcebergType::Date => DataType::Date32,
            IcebergType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

impl fmt::Display for IcebergType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.iceberg_name())
    }
}

/// One top-level column. `field_id` is the column's identity forever (renames keep it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub field_id: i32,
    pub name: String,
    pub ty: IcebergType,
    /// A required column rejects nulls.
    pub required: bool,
}

impl ColumnSpec {
    pub fn new(field_id: i32, name: impl Into<String>, ty: IcebergType, required: bool) -> Self {
        ColumnSpec {
            field_id,
            name: name.into(),
            ty,
            required,
        }
    }

    /// The Arrow field, carrying the field id so Parquet writes it into the file schema.
    pub fn arrow_field(&self) -> Field {
        Field::new(&self.name, self.ty.arrow_type(), !self.required)
            .with_metadata([(PARQUET_FIELD_ID_KEY.to_string(), self.field_id.to_string())].into())
    }
}

/// Checks that `columns` can be a table schema: non-empty, positive unique ids, unique names.
pub fn validate_columns(columns: &[ColumnSpec]) -> Result<()> {
    if columns.is_empty() {
        return Err(IcebergError::InvalidSchema("no columns".into()));
    }
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    for c in columns {
        if c.field_id <= 0 {
            return Err(IcebergError::InvalidSchema(format!(
                "column {:?} has field id {}; ids must be positive",
                c.name, c.field_id
            )));
        }
        if c.name.is_empty() {
            return Err(IcebergError::InvalidSchema(format!(
                "field id {} has an empty name",
                c.field_id
            )));
        }
        if !ids.insert(c.field_id) {
            return Err(IcebergError::InvalidSchema(format!(
                "field id {} is used twice",
                c.field_id
            )));
        }
        if !names.insert(c.name.as_str()) {
            return Err(IcebergError::InvalidSchema(format!(
                "column name {:?} is used twice",
                c.name
            )));
        }
    }
    Ok(())
}

/// Arrow schema of the Parquet files written for `columns`.
pub fn arrow_schema(columns: &[ColumnSpec]) -> Arc<ArrowSchema> {
    Arc::new(ArrowSchema::new(
        columns
            .iter()
            .map(ColumnSpec::arrow_field)
            .collect::<Vec<_>>(),
    ))
}

/// One field of an Iceberg schema in table metadata JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaField {
    pub id: i32,
    pub name: String,
    pub required: bool,
    /// Kept as raw JSON so metadata written by others (with nested types) still parses;
    /// [`IcebergSchema::columns`] refuses what this writer cannot handle.
    #[serde(rename = "type")]
    pub ty: serde_json::Value,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An Iceberg schema as stored in table metadata (`{"type": "struct", "schema-id": .., ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IcebergSchema {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema_id: i32,
    pub fields: Vec<SchemaField>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl IcebergSchema {
    /// Schema JSON for `columns` with the given id.
    pub fn from_columns(schema_id: i32, columns: &[ColumnSpec]) -> Self {
        IcebergSchema {
            kind: "struct".into(),
            schema_id,
            fields: columns
                .iter()
                .map(|c| SchemaField {
                    id: c.field_id,
                    name: c.name.clone(),
                    required: c.required,
                    ty: serde_json::Value::String(c.ty.iceberg_name().into()),
                    extra: BTreeMap::new(),
                })
                .collect(),
            extra: BTreeMap::new(),
        }
    }

    /// The columns, or an error naming the first field whose type is not supported here.
    pub fn columns(&self) -> Result<Vec<ColumnSpec>> {
        self.fields
            .iter()
            .map(|f| {
                let ty = serde_json::from_value::<IcebergType>(f.ty.clone()).map_err(|_| {
                    IcebergError::InvalidSchema(format!(
                        "column {:?} has type {} which this writer does not support",
                        f.name, f.ty
                    ))
                })?;
                Ok(ColumnSpec::new(f.id, f.name.clone(), ty, f.required))
            })
            .collect()
    }

    /// Highest field id in the schema (Iceberg's `last-column-id` for a flat schema).
    pub fn max_field_id(&self) -> i32 {
        self.fields.iter().map(|f| f.id).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_map_to_iceberg_types() {
        let cases = [
            ("int64", IcebergType::Long),
            ("BIGINT", IcebergType::Long),
            ("integer", IcebergType::Long),
            ("int32", IcebergType::Int),
            ("int", IcebergType::Int),
            ("string", IcebergType::String),
            ("text", IcebergType::String),
            ("varchar(255)", IcebergType::String),
            ("double", IcebergType::Double),
            ("float64", IcebergType::Double),
            ("real", IcebergType::Double),
            ("float32", IcebergType::Float),
            ("float", IcebergType::Float),
            ("bool", IcebergType::Boolean),
            ("boolean", IcebergType::Boolean),
            ("binary", IcebergType::Binary),
            ("blob", IcebergType::Binary),
            ("date", IcebergType::Date),
            ("timestamp", IcebergType::Timestamp),
        ];
        for (sql, ty) in cases {
            assert_eq!(IcebergType::from_sql(sql).unwrap(), ty, "{sql}");
        }
        let err = IcebergType::from_sql("geography").unwrap_err();
        assert!(err.to_string().contains("\"geography\""), "{err}");
    }

    #[test]
    fn schema_json_round_trips_and_refuses_nested_types() {
        let cols = vec![
            ColumnSpec::new(1, "id", IcebergType::Long, true),
            ColumnSpec::new(2, "at", IcebergType::Timestamp, false),
        ];
        let schema = IcebergSchema::from_columns(0, &cols);
        let json = serde_json::to_value(&schema).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "id", "required": true, "type": "long"},
                {"id": 2, "name": "at", "required": false, "type": "timestamp"}]})
        );
        let back: IcebergSchema = serde_json::from_value(json).unwrap();
        assert_eq!(back.columns().unwrap(), cols);
        assert_eq!(back.max_field_id(), 2);

        let nested: IcebergSchema = serde_json::from_value(serde_json::json!({
            "type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "tags", "required": false,
             "type": {"type": "list", "element-id": 2, "element": "string", "element-required": false}}]}))
        .unwrap();
        assert!(nested.columns().unwrap_err().to_string().contains("tags"));
    }

    #[test]
    fn validate_rejects_duplicates() {
        let dup_id = [
            ColumnSpec::new(1, "a", IcebergType::Int, false),
            ColumnSpec::new(1, "b", IcebergType::Int, false),
        ];
        assert!(validate_columns(&dup_id).is_err());
        let dup_name = [
            ColumnSpec::new(1, "a", IcebergType::Int, false),
            ColumnSpec::new(2, "a", IcebergType::Int, false),
        ];
        assert!(validate_columns(&dup_name).is_err());
        assert!(validate_columns(&[]).is_err());
    }

    #[test]
    fn arrow_fields_carry_field_ids() {
        let f = ColumnSpec::new(7, "x", IcebergType::Date, true).arrow_field();
        assert_eq!(f.metadata().get(PARQUET_FIELD_ID_KEY).unwrap(), "7");
        assert!(!f.is_nullable());
    }
}
