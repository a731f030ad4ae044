//! Partition specs: which partition a row belongs to, how its values are
//! stored in manifests and spelled in paths.
//!
//! Owns what users write ([`PartitionDef`]: a column and a transform, `transform.rs`), a
//! [`PartitionSpec`] as table metadata stores it (field ids from 1000), its binding to a
//! schema ([`BoundSpec`]: result types, a row's partition, the Avro partition record of a
//! manifest, the manifest list's field summaries) and the `name=value/...` partition path.
//!
//! Partition values travel as canonical JSON of the transform's result type (as
//! `value.rs` defines it: day results are `"YYYY-MM-DD"` dates, year/month/hour/bucket
//! results are ints), `null` for a null source value. A path is the human form of the
//! values, percent-encoded, and parses back to the same values ([`BoundSpec::parse_path`]).
//!
//! It never does partition spec evolution: a table has one spec, fixed at creation.

use std::collections::HashMap;

use apache_avro::types::Value as AvroValue;
use serde_json::{json, Value};

use super::avro_value::{opt, unwrap_union};
use super::error::{IcebergError, Result};
use super::schema::{ColumnSpec, IcebergType};
use super::value::{format_date, Datum};

pub use super::transform::Transform;

/// Partition field ids start here (`last-partition-id` 999 means none assigned).
pub const FIRST_PARTITION_FIELD_ID: i32 = 1000;

/// How a user asks for a partition field: a column and a transform, spelled
/// `col`, `identity(col)`, `year(col)`, `month(col)`, `day(col)`, `hour(col)`,
/// `bucket(N, col)` or `truncate(W, col)` (Spark's plural `years`/`months`/`days`/`hours`
/// too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDef {
    pub column: String,
    pub transform: Transform,
}

impl PartitionDef {
    pub fn new(column: impl Into<String>, transform: Transform) -> Self {
        PartitionDef {
            column: column.into(),
            transform,
        }
    }

    /// Parses one definition (see the type doc).
    pub fn parse(text: &str) -> Result<PartitionDef> {
        let bad = |why: &str| {
            IcebergError::InvalidSchema(format!("partition definition {text:?}: {why}"))
        };
        let t = text.trim();
        let Some(open) = t.find('(') else {
            if t.is_empty() {
                return Err(bad("empty"));
            }
            return Ok(PartitionDef::new(t, Transform::Identity));
        };
        let inner = t[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| bad("missing ')'"))?;
        let func = t[..open].trim().to_ascii_lowercase();
        let args: Vec<&str> = inner.split(',').map(str::trim).collect();
        let column_only = |transform| match args.as_slice() {
            [c] if !c.is_empty() => Ok(PartitionDef::new(*c, transform)),
            _ => Err(bad("expected one column")),
        };
        let with_width = |make: fn(u32) -> Transform| match args.as_slice() {
            [n, c] if !c.is_empty() => {
                let n: u32 = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("the width must be a positive integer"))?;
                Ok(PartitionDef::new(*c, make(n)))
            }
            _ => Err(bad("expected (width, column)")),
        };
        match func.as_str() {
            "identity" => column_only(Transform::Identity),
            "year" | "years" => column_only(Transform::Year),
            "month" | "months" => column_only(Transform::Month),
            "day" | "days" => column_only(Transform::Day),
            "hour" | "hours" => column_only(Transform::Hour),
            "bucket" => with_width(Transform::Bucket),
            "truncate" => with_width(Transform::Truncate),
            _ => Err(bad("unknown transform")),
        }
    }
}

/// One field of a partition spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// Field id of the source column.
    pub source_id: i32,
    /// Partition field id (1000, 1001, ...).
    pub field_id: i32,
    pub name: String,
    pub transform: Transform,
}

/// A partition spec as table metadata stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub spec_id: i32,
    pub fields: Vec<PartitionField>,
}

impl PartitionSpec {
    pub fn unpartitioned() -> Self {
        PartitionSpec {
            spec_id: 0,
            fields: Vec::new(),
        }
    }

    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// Spec 0 of a new table: one field per definition, ids from 1000, names as the Java
    /// implementation gives them; refuses unknown columns, transforms that do not apply,
    /// duplicate names and names Avro cannot carry.
    pub fn from_definitions(columns: &[ColumnSpec], defs: &[PartitionDef]) -> Result<Self> {
        let fields = defs
            .iter()
            .zip(FIRST_PARTITION_FIELD_ID..)
            .map(|(d, field_id)| {
                let col = columns.iter().find(|c| c.name == d.column).ok_or_else(|| {
                    IcebergError::InvalidSchema(format!(
                        "partition column {:?} is not a column of the table",
                        d.column
                    ))
                })?;
                Ok(PartitionField {
                    source_id: col.field_id,
                    field_id,
                    name: d.transform.default_name(&col.name),
                    transform: d.transform,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = PartitionSpec { spec_id: 0, fields };
        spec.bind(columns)?;
        Ok(spec)
    }

    /// The `partition-specs` entry of table metadata.
    pub fn to_json(&self) -> Value {
        json!({
            "spec-id": self.spec_id,
            "fields": self.fields_json(),
        })
    }

    /// The `fields` array (also the manifest header's `partition-spec`).
    pub fn fields_json(&self) -> Value {
        Value::Array(
            self.fields
                .iter()
                .map(|f| {
                    json!({
                        "source-id": f.source_id,
                        "field-id": f.field_id,
                        "name": f.name,
                        "transform": f.transform.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// Parses a `partition-specs` entry.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |why: String| IcebergError::InvalidSchema(format!("partition spec {v}: {why}"));
        let spec_id = v
            .get("spec-id")
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad("missing spec-id".into()))?;
        let fields = v
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing fields".into()))?
            .iter()
            .map(|f| {
                let int = |k: &str| {
                    f.get(k)
                        .and_then(Value::as_i64)
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| bad(format!("field without {k}")))
                };
                Ok(PartitionField {
                    source_id: int("source-id")?,
                    field_id: int("field-id")?,
                    name: f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("field without name".into()))?
                        .to_string(),
                    transform: Transform::parse(
                        f.get("transform")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad("field without transform".into()))?,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PartitionSpec { spec_id, fields })
    }

    /// Highest partition field id (999 when unpartitioned).
    pub fn last_field_id(&self) -> i32 {
        self.fields
            .iter()
            .map(|f| f.field_id)
            .max()
            .unwrap_or(FIRST_PARTITION_FIELD_ID - 1)
    }

    /// The spec bound to `columns`: every source column found, every transform applicable.
    pub fn bind(&self, columns: &[ColumnSpec]) -> Result<BoundSpec> {
        let mut bound = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let (index, col) = columns
                .iter()
                .enumerate()
                .find(|(_, c)| c.field_id == f.source_id)
                .ok_or_else(|| {
                    IcebergError::InvalidSchema(format!(
                        "partition field {:?} has source id {}, which the schema lacks",
                        f.name, f.source_id
                    ))
                })?;
            let result = f.transform.result_type(col.ty).map_err(|why| {
                IcebergError::InvalidSchema(format!(
                    "partition field {:?} on column {:?}: {why}",
                    f.name, col.name
                ))
            })?;
            if !is_avro_name(&f.name) {
                return Err(IcebergError::InvalidSchema(format!(
                    "partition field name {:?} is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*)",
                    f.name
                )));
            }
            if bound.iter().any(|b: &BoundField| b.field.name == f.name) {
                return Err(IcebergError::InvalidSchema(format!(
                    "partition field name {:?} is used twice",
                    f.name
                )));
            }
            bound.push(BoundField {
                field: f.clone(),
                source_index: index,
                source_type: col.ty,
                result_type: result,
            });
        }
        Ok(BoundSpec {
            spec: self.clone(),
            fields: bound,
        })
    }
}

fn is_avro_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A partition field with what binding it to the schema told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundField {
    pub field: PartitionField,
    /// Position of the source column in the table's columns (and in a row).
    pub source_index: usize,
    pub source_type: IcebergType,
    pub result_type: IcebergType,
}

/// A partition spec bound to the table's current columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSpec {
    pub spec: PartitionSpec,
    pub fields: Vec<BoundField>,
}

/// Summary of one partition field over the files of a manifest (manifest list `partitions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSummary {
    pub contains_null: bool,
    pub contains_nan: Option<bool>,
    pub lower_bound: Option<Vec<u8>>,
    pub upper_bound: Option<Vec<u8>>,
}

impl BoundSpec {
    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// The partition of a row (one JSON value per column, in column order).
    pub fn partition_of(&self, row: &[Value]) -> Result<Vec<Value>, String> {
        self.fields
            .iter()
            .map(|b| {
                let v = row.get(b.source_index).unwrap_or(&Value::Null);
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let d = Datum::from_json(b.source_type, v)
                    .map_err(|e| format!("partition source of {:?}: {e}", b.field.name))?;
                Ok(b.field.transform.apply(&d)?.to_json())
            })
            .collect()
    }

    /// Splits `rows` by partition, in the order partitions first appear (one group holding
    /// every row when unpartitioned). Refuses a row whose source value does not fit its
    /// column.
    #[allow(clippy::type_complexity)]
    pub fn split(&self, rows: &[Vec<Value>]) -> Result<Vec<(Vec<Value>, Vec<Vec<Value>>)>> {
        let mut groups: Vec<(Vec<Value>, Vec<Vec<Value>>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let partition = self
                .partition_of(row)
                .map_err(|reason| IcebergError::InvalidArgument(format!("row {i}: {reason}")))?;
            let key = Value::Array(partition.clone()).to_string();
            let at = *index.entry(key).or_insert_with(|| {
                groups.push((partition, Vec::new()));
                groups.len() - 1
            });
            groups[at].1.push(row.clone());
        }
        Ok(groups)
    }

    /// Typed values of a partition tuple; refuses a tuple of the wrong arity or types.
    pub fn datums(&self, values: &[Value]) -> Result<Vec<Option<Datum>>, String> {
        if values.len() != self.fields.len() {
            return Err(format!(
                "partition has {} values but the spec has {} fields",
                values.len(),
                self.fields.len()
            ));
        }
        self.fields
            .iter()
            .zip(values)
            .map(|(b, v)| {
                if v.is_null() {
                    return Ok(None);
                }
                Datum::from_json(b.result_type, v)
                    .map(Some)
                    .map_err(|e| format!("partition field {:?}: {e}", b.field.name))
            })
            .collect()
    }

    /// `name=value/...` with human values, percent-encoded (empty when unpartitioned).
    pub fn path(&self, values: &[Value]) -> Result<String, String> {
        let datums = self.datums(values)?;
        Ok(self
            .fields
            .iter()
            .zip(&datums)
            .map(|(b, d)| {
                let human = match d {
                    None => "null".to_string(),
                    Some(d) => human(b.field.transform, d),
                };
                format!("{}={}", b.field.name, human)
            })
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// Inverse of [`path`](Self::path).
    pub fn parse_path(&self, path: &str) -> Result<Vec<Value>, String> {
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        if parts.len() != self.fields.len() {
            return Err(format!(
                "partition path {path:?} has {} parts but the spec has {} fields",
                parts.len(),
                self.fields.len()
            ));
        }
        self.fields
            .iter()
            .zip(parts)
            .map(|(b, part)| {
                let (name, text) = part
                    .split_once('=')
                    .ok_or_else(|| format!("partition path part {part:?} is not name=value"))?;
                if name != b.field.name {
                    return Err(format!(
                        "partition path part {part:?}: expected field {:?}",
                        b.field.name
                    ));
                }
                if text == "null" {
                    return Ok(Value::Null);
                }
                parse_human(b, text)
                    .map(|d| d.to_json())
                    .map_err(|e| format!("partition path part {part:?}: {e}"))
            })
            .collect()
    }

    /// Checks that a data file with these column bounds can belong to partition `values`:
    /// for order-preserving transforms the bounds of the source column must transform to the
    /// partition's value. Bounds of strings and binary may be truncated, so they are not
    /// checked; nor is bucket.
    pub fn check_bounds(
        &self,
        values: &[Value],
        bounds: impl Fn(i32) -> (Option<Datum>, Option<Datum>),
    ) -> Result<(), String> {
        let datums = self.datums(values)?;
        for (b, want) in self.fields.iter().zip(&datums) {
            if !b.field.transform.is_order_preserving()
                || matches!(b.source_type, IcebergType::String | IcebergType::Binary)
            {
                continue;
            }
            let (lower, upper) = bounds(b.field.source_id);
            for bound in [lower, upper].into_iter().flatten() {
                let got = b.field.transform.apply(&bound)?;
                if want.as_ref() != Some(&got) {
                    return Err(format!(
                        "partition field {:?} is {} but the file holds values in partition {}",
                        b.field.name,
                        want.as_ref().map_or(Value::Null, Datum::to_json),
                        got.to_json()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The Avro fields of the manifest's partition record (`r102`): one optional field per
    /// partition field, with its field id and result type.
    pub fn avro_fields(&self) -> Vec<Value> {
        self.fields
            .iter()
            .map(|b| {
                json!({
                    "name": b.field.name,
                    "type": ["null", avro_type(b.result_type)],
                    "default": null,
                    "field-id": b.field.field_id,
                })
            })
            .collect()
    }

    /// The partition record of a data file.
    pub fn avro_value(&self, values: &[Value]) -> Result<AvroValue, String> {
        let datums = self.datums(values)?;
        Ok(AvroValue::Record(
            self.fields
                .iter()
                .zip(datums)
                .map(|(b, d)| (b.field.name.clone(), opt(d.map(avro_datum))))
                .collect(),
        ))
    }

    /// Summaries of each partition field over `partitions` (one tuple per file).
    pub fn summaries<'a>(
        &self,
        partitions: impl Iterator<Item = &'a [Value]>,
    ) -> Result<Vec<FieldSummary>, String> {
        let mut out: Vec<(FieldSummary, Option<Datum>, Option<Datum>)> = self
            .fields
            .iter()
            .map(|_| {
                let summary = FieldSummary {
                    // Values come from JSON, which cannot carry NaN.
                    contains_nan: Some(false),
                    ..FieldSummary::default()
                };
                (summary, None, None)
            })
            .collect();
        for values in partitions {
            for ((summary, lo, hi), d) in out.iter_mut().zip(self.datums(values)?) {
                let Some(d) = d else {
                    summary.contains_null = true;
                    continue;
                };
                if lo
                    .as_ref()
                    .is_none_or(|l| d.compare(l) == Some(std::cmp::Ordering::Less))
                {
                    *lo = Some(d.clone());
                }
                if hi
                    .as_ref()
                    .is_none_or(|h| d.compare(h) == Some(std::cmp::Ordering::Greater))
                {
                    *hi = Some(d);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(mut s, lo, hi)| {
                s.lower_bound = lo.map(|d| d.to_bytes());
                s.upper_bound = hi.map(|d| d.to_bytes());
                s
            })
            .collect())
    }
}

/// A partition record read from a manifest, as canonical JSON values in field order. Needs
/// no spec: the Avro types say what each value is.
pub fn partition_from_avro(v: &AvroValue) -> Result<Vec<Value>, String> {
    let AvroValue::Record(fields) = unwrap_union(v) else {
        return Err("partition is not a record".into());
    };
    fields
        .iter()
        .map(|(name, v)| {
            Ok(match unwrap_union(v) {
                AvroValue::Null => Value::Null,
                AvroValue::Boolean(b) => Value::Bool(*b),
                AvroValue::Int(i) => Value::from(*i),
                AvroValue::Long(i) => Value::from(*i),
                AvroValue::Float(f) => Value::from(f64::from(*f)),
                AvroValue::Double(f) => Value::from(*f),
                AvroValue::String(s) => Value::String(s.clone()),
                AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => Datum::Binary(b.clone()).to_json(),
                AvroValue::Date(d) => Value::String(format_date(*d)),
                AvroValue::TimestampMicros(t) | AvroValue::LocalTimestampMicros(t) => {
                    Datum::Timestamp(*t).to_json()
                }
                other => return Err(format!("partition field {name:?}: unsupported {other:?}")),
            })
        })
        .collect()
}

fn avro_type(ty: IcebergType) -> Value {
    match ty {
        IcebergType::Boolean => json!("boolean"),
        IcebergType::Int => json!("int"),
        IcebergType::Long => json!("long"),
        IcebergType::Float => json!("float"),
        IcebergType::Double => json!("double"),
        IcebergType::String => json!("string"),
        IcebergType::Binary => json!("bytes"),
        IcebergType::Date => json!({"type": "int", "logicalType": "date"}),
        IcebergType::Timestamp => json!({
            "type": "long", "logicalType": "timestamp-micros", "adjust-to-utc": false
        }),
    }
}

fn avro_datum(d: Datum) -> AvroValue {
    match d {
        Datum::Boolean(b) => AvroValue::Boolean(b),
        Datum::Int(i) => AvroValue::Int(i),
        Datum::Long(i) => AvroValue::Long(i),
        Datum::Float(f) => AvroValue::Float(f),
        Datum::Double(f) => AvroValue::Double(f),
        Datum::String(s) => AvroValue::String(s),
        Datum::Binary(b) => AvroValue::Bytes(b),
        Datum::Date(d) => AvroValue::Date(d),
        Datum::Timestamp(t) => AvroValue::TimestampMicros(t),
    }
}

/// The human form of a transform result, percent-encoded for a path.
fn human(transform: Transform, d: &Datum) -> String {
    let text = match (transform, d) {
        (Transform::Year, Datum::Int(y)) => (1970 + i64::from(*y)).to_string(),
        (Transform::Month, Datum::Int(m)) => {
            let m = i64::from(*m);
            format!("{:04}-{:02}", 1970 + m.div_euclid(12), m.rem_euclid(12) + 1)
        }
        (Transform::Hour, Datum::Int(h)) => {
            let h = i64::from(*h);
            format!(
                "{}-{:02}",
                format_date(h.div_euclid(24) as i32),
                h.rem_euclid(24)
            )
        }
        (_, Datum::Binary(b)) => return percent_encode(b),
        (_, other) => match other.to_json() {
            Value::String(s) => s,
            v => v.to_string(),
        },
    };
    if text == "null" {
        // Keeps the string "null" apart from a null value.
        return "%6Eull".into();
    }
    percent_encode(text.as_bytes())
}

fn parse_human(b: &BoundField, text: &str) -> Result<Datum, String> {
    let bytes = percent_decode(text)?;
    if b.result_type == IcebergType::Binary {
        return Ok(Datum::Binary(bytes));
    }
    let s = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let int = |s: &str| s.parse::<i64>().map_err(|e| format!("{s:?}: {e}"));
    let fit = |n: i64| i32::try_from(n).map_err(|_| format!("{n} out of range"));
    match (b.field.transform, b.result_type) {
        (Transform::Year, _) => Ok(Datum::Int(fit(int(&s)? - 1970)?)),
        (Transform::Month, _) => {
            let (y, m) = s.split_once('-').ok_or("expected YYYY-MM")?;
            let (y, m) = (int(y)?, int(m)?);
            if !(1..=12).contains(&m) {
                return Err(format!("month {m} out of range"));
            }
            Ok(Datum::Int(fit((y - 1970) * 12 + m - 1)?))
        }
        (Transform::Hour, _) => {
            let (date, hour) = s.rsplit_once('-').ok_or("expected YYYY-MM-DD-HH")?;
            let Datum::Date(days) = Datum::from_json(IcebergType::Date, &Value::from(date))? else {
                return Err("expected a date".into());
            };
            let hour = int(hour)?;
            if !(0..24).contains(&hour) {
                return Err(format!("hour {hour} out of range"));
            }
            Ok(Datum::Int(fit(i64::from(days) * 24 + hour)?))
        }
        (_, IcebergType::String | IcebergType::Date | IcebergType::Timestamp) => {
            Datum::from_json(b.result_type, &Value::String(s))
        }
        (_, IcebergType::Boolean) => match s.as_str() {
            "true" => Ok(Datum::Boolean(true)),
            "false" => Ok(Datum::Boolean(false)),
            _ => Err(format!("{s:?} is not a boolean")),
        },
        (_, ty) => {
            let v: Value = serde_json::from_str(&s).map_err(|e| format!("{s:?}: {e}"))?;
            Datum::from_json(ty, &v)
        }
    }
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<ColumnSpec> {
        vec![
            ColumnSpec::new(1, "id", IcebergType::Long, true),
            ColumnSpec::new(2, "region", IcebergType::String, false),
            ColumnSpec::new(3, "at", IcebergType::Timestamp, false),
            ColumnSpec::new(4, "blob", IcebergType::Binary, false),
        ]
    }

    #[test]
    fn definitions_parse_and_build_a_spec_with_java_names() {
        let defs: Vec<PartitionDef> =
            ["region", "days(at)", "bucket(8, id)", "truncate(3, region)"]
                .iter()
                .map(|s| PartitionDef::parse(s).unwrap())
                .collect();
        let spec = PartitionSpec::from_definitions(&columns(), &defs).unwrap();
        assert_eq!(
            spec.to_json(),
            json!({"spec-id": 0, "fields": [
                {"source-id": 2, "field-id": 1000, "name": "region", "transform": "identity"},
                {"source-id": 3, "field-id": 1001, "name": "at_day", "transform": "day"},
                {"source-id": 1, "field-id": 1002, "name": "id_bucket", "transform": "bucket[8]"},
                {"source-id": 2, "field-id": 1003, "name": "region_trunc", "transform": "truncate[3]"}]})
        );
        assert_eq!(PartitionSpec::from_json(&spec.to_json()).unwrap(), spec);
        assert_eq!(spec.last_field_id(), 1003);
        assert!(PartitionDef::parse("bucket(x, id)").is_err());
        assert!(PartitionDef::parse("frob(id)").is_err());
        let unknown =
            PartitionSpec::from_definitions(&columns(), &[PartitionDef::parse("nope").unwrap()]);
        assert!(unknown.unwrap_err().to_string().contains("nope"));
        let bad = PartitionSpec::from_definitions(
            &columns(),
            &[PartitionDef::parse("hour(id)").unwrap()],
        );
        assert!(bad.is_err());
    }

    #[test]
    fn paths_round_trip_every_transform() {
        let defs: Vec<PartitionDef> = [
            "region",
            "year(at)",
            "month(at)",
            "day(at)",
            "hour(at)",
            "bucket(8, id)",
            "truncate(3, region)",
            "blob",
        ]
        .iter()
        .map(|s| PartitionDef::parse(s).unwrap())
        .collect();
        let bound = PartitionSpec::from_definitions(&columns(), &defs)
            .unwrap()
            .bind(&columns())
            .unwrap();
        for row in [
            vec![
                json!(7),
                json!("eu/west x=1%"),
                json!("2017-11-16T22:31:08"),
                json!([0, 255]),
            ],
            vec![
                json!(-3),
                json!("null"),
                json!("1969-12-31T23:00:00"),
                json!("ok"),
            ],
            vec![json!(1), Value::Null, Value::Null, Value::Null],
        ] {
            let p = bound.partition_of(&row).unwrap();
            let path = bound.path(&p).unwrap();
            assert_eq!(bound.parse_path(&path).unwrap(), p, "{path}");
        }
        let p = bound
            .partition_of(&[
                json!(7),
                json!("eu"),
                json!("2017-11-16T22:31:08"),
                json!("x"),
            ])
            .unwrap();
        assert_eq!(
            bound.path(&p).unwrap(),
            format!(
                "region=eu/at_year=2017/at_month=2017-11/at_day=2017-11-16/at_hour=2017-11-16-22/id_bucket={}/region_trunc=eu/blob=x",
                p[5]
            )
        );
        assert!(bound.parse_path("region=eu").is_err());
    }

    #[test]
    fn avro_partition_round_trips_and_summaries_bound_the_values() {
        let defs = [
            PartitionDef::parse("day(at)").unwrap(),
            PartitionDef::parse("region").unwrap(),
        ];
        let bound = PartitionSpec::from_definitions(&columns(), &defs)
            .unwrap()
            .bind(&columns())
            .unwrap();
        let a = vec![json!("2024-03-05"), json!("eu")];
        let b = vec![json!("2024-03-01"), Value::Null];
        let v = bound.avro_value(&a).unwrap();
        assert_eq!(partition_from_avro(&v).unwrap(), a);
        let s = bound
            .summaries([a.as_slice(), b.as_slice()].into_iter())
            .unwrap();
        let day = |s: &str| {
            Datum::from_json(IcebergType::Date, &json!(s))
                .unwrap()
                .to_bytes()
        };
        assert_eq!(s[0].lower_bound, Some(day("2024-03-01")));
        assert_eq!(s[0].upper_bound, Some(day("2024-03-05")));
        assert!(!s[0].contains_null);
        assert!(s[1].contains_null);
        assert_eq!(s[1].lower_bound, Some(b"eu".to_vec()));
        assert!(bound.avro_value(&a[..1]).is_err());
    }

    #[test]
    fn bounds_outside_the_partition_are_refused() {
        let defs = [PartitionDef::parse("day(at)").unwrap()];
        let bound = PartitionSpec::from_definitions(&columns(), &defs)
            .unwrap()
            .bind(&columns())
            .unwrap();
        let ts = |s: &str| Datum::from_json(IcebergType::Timestamp, &json!(s)).unwrap();
        let inside = |_| {
            (
                Some(ts("2024-03-05T01:00:00")),
                Some(ts("2024-03-05T23:00:00")),
            )
        };
        assert!(bound.check_bounds(&[json!("2024-03-05")], inside).is_ok());
        let across = |_| {
            (
                Some(ts("2024-03-05T01:00:00")),
                Some(ts("2024-03-06T00:00:00")),
            )
        };
        assert!(bound.check_bounds(&[json!("2024-03-05")], across).is_err());
    }
}
