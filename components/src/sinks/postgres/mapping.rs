//! SQLite's dynamic types → PostgreSQL column types, and each captured value → the
//! parameter that stores it exactly, or the reason it cannot be stored.
//!
//! A mirrored column's PostgreSQL type follows the SQLite column's affinity (its declared
//! type, [`astha_core::schema::affinity`]):
//!
//! | SQLite affinity (declared type)            | PostgreSQL         | values accepted            |
//! |--------------------------------------------|--------------------|----------------------------|
//! | INTEGER (`INT` anywhere)                   | `bigint`           | INTEGER                    |
//! | REAL (`REAL`, `FLOA`, `DOUB`)              | `double precision` | REAL (every bit pattern but NaN, which SQLite never stores) |
//! | TEXT (`CHAR`, `CLOB`, `TEXT`)              | `text`             | TEXT without NUL characters |
//! | BLOB (`BLOB`, or no type)                  | `bytea`            | BLOB                       |
//! | NUMERIC (anything else: `NUMERIC`, `DECIMAL`, `BOOLEAN`, `DATE`...) | `numeric` | INTEGER; REAL but `-0.0` (±infinity as `numeric`'s infinities) |
//!
//! NULL fits every column. Any other value (a BLOB in an INTEGER column, text that
//! SQLite kept as TEXT in a NUMERIC column, a TEXT holding NUL) does not fit: the change
//! is refused with the reason and goes to the dead letters. Nothing is converted into
//! something else: a value either arrives bit for bit or not at all.
//!
//! This module does no I/O; the sink owns the connection.

use astha_core::schema::{affinity, Affinity};
use astha_core::Value;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// The PostgreSQL type of a mirrored column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `bigint`.
    Bigint,
    /// `double precision`.
    Double,
    /// `text`.
    Text,
    /// `bytea`.
    Bytea,
    /// `numeric`, sent as text and cast by the server.
    Numeric,
}

impl PgType {
    /// The mirrored type of a SQLite column declared `declared_type`.
    pub fn for_declared(declared_type: &str) -> PgType {
        match affinity(declared_type) {
            Affinity::Integer => PgType::Bigint,
            Affinity::Real => PgType::Double,
            Affinity::Text => PgType::Text,
            Affinity::Blob => PgType::Bytea,
            Affinity::Numeric => PgType::Numeric,
        }
    }

    /// The type as written in DDL (and as `information_schema.columns.data_type` says it).
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Bigint => "bigint",
            PgType::Double => "double precision",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Numeric => "numeric",
        }
    }

    /// Reads `information_schema.columns.data_type` back; `None` for a type we never create.
    pub fn from_sql(name: &str) -> Option<PgType> {
        [
            PgType::Bigint,
            PgType::Double,
            PgType::Text,
            PgType::Bytea,
            PgType::Numeric,
        ]
        .into_iter()
        .find(|t| t.sql() == name)
    }

    /// The wire type of a parameter for a column of this type (`numeric` goes as text).
    pub fn param_type(self) -> Type {
        match self {
            PgType::Bigint => Type::INT8,
            PgType::Double => Type::FLOAT8,
            PgType::Text | PgType::Numeric => Type::TEXT,
            PgType::Bytea => Type::BYTEA,
        }
    }

    /// The placeholder for parameter `n`, with the cast `numeric` needs.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            PgType::Numeric => format!("${n}::numeric"),
            _ => format!("${n}"),
        }
    }

    /// `value` as a parameter for a column of this type, or why it does not fit.
    pub fn param(self, value: &Value) -> Result<Param, String> {
        let param = match (self, value) {
            (_, Value::Null) => Some(Param::Null),
            (PgType::Bigint, Value::Integer(i)) => Some(Param::Int(*i)),
            (PgType::Double, Value::Real(r)) => Some(Param::Float(*r)),
            (PgType::Text, Value::Text(t)) if !t.contains('\0') => Some(Param::Text(t.clone())),
            (PgType::Bytea, Value::Blob(b)) => Some(Param::Bytes(b.clone())),
            (PgType::Numeric, Value::Integer(i)) => Some(Param::Text(i.to_string())),
            (PgType::Numeric, Value::Real(r)) => numeric_text(*r).map(Param::Text),
            _ => None,
        };
        param.ok_or_else(|| {
            let what = match value {
                Value::Text(t) if t.contains('\0') && self == PgType::Text => {
                    "a TEXT value holding a NUL character (PostgreSQL text cannot)".to_string()
                }
                Value::Real(r) if *r == 0.0 && self == PgType::Numeric => {
                    "-0.0 (numeric has no negative zero)".to_string()
                }
                other => format!("a {} value", other.type_name().to_ascii_uppercase()),
            };
            format!("{what} does not fit a PostgreSQL {} column", self.sql())
        })
    }
}

/// A REAL as `numeric` text: Rust's shortest round-trip decimal, which `numeric` stores
/// exactly and which reads back as the same double. `-0.0` has no `numeric` form.
fn numeric_text(r: f64) -> Option<String> {
    if r == 0.0 && r.is_sign_negative() {
        None
    } else if r == f64::INFINITY {
        Some("Infinity".into())
    } else if r == f64::NEG_INFINITY {
        Some("-Infinity".into())
    } else if r.is_nan() {
        None
    } else {
        Some(format!("{r}"))
    }
}

/// One statement parameter: a value that fits its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL.
    Null,
    /// `int8`.
    Int(i64),
    /// `float8`.
    Float(f64),
    /// `text` (also `numeric`, cast by the statement).
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => i.to_sql(ty, out),
            Param::Float(f) => f.to_sql(ty, out),
            Param::Text(t) => t.to_sql(ty, out),
            Param::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::FLOAT8, Type::TEXT, Type::BYTEA].contains(ty)
    }

    to_sql_checked!();
}

/// `name` as a PostgreSQL identifier: in double quotes, inner quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_by_affinity() {
        for (declared, pg) in [
            ("INTEGER", PgType::Bigint),
            ("int8", PgType::Bigint),
            ("VARCHAR(20)", PgType::Text),
            ("TEXT", PgType::Text),
            ("", PgType::Bytea),
            ("BLOB", PgType::Bytea),
            ("REAL", PgType::Double),
            ("DOUBLE PRECISION", PgType::Double),
            ("NUMERIC", PgType::Numeric),
            ("DECIMAL(10,2)", PgType::Numeric),
            ("BOOLEAN", PgType::Numeric),
        ] {
            assert_eq!(PgType::for_declared(declared), pg, "{declared}");
            assert_eq!(PgType::from_sql(pg.sql()), Some(pg));
        }
    }

    #[test]
    fn values_fit_exactly_or_are_refused_with_the_reason() {
        assert_eq!(
            PgType::Bigint.param(&Value::Integer(i64::MIN)),
            Ok(Param::Int(i64::MIN))
        );
        assert_eq!(PgType::Bytea.param(&Value::Null), Ok(Param::Null));
        let err = PgType::Bigint.param(&Value::Blob(vec![1])).unwrap_err();
        assert_eq!(err, "a BLOB value does not fit a PostgreSQL bigint column");
        assert!(PgType::Bigint.param(&Value::Real(1.5)).is_err());
        assert!(PgType::Double.param(&Value::Text("x".into())).is_err());
        assert!(PgType::Text
            .param(&Value::Text("a\0b".into()))
            .unwrap_err()
            .contains("NUL"));
        assert_eq!(
            PgType::Double.param(&Value::Real(-0.0)),
            Ok(Param::Float(-0.0))
        );
        assert!(PgType::Numeric
            .param(&Value::Real(-0.0))
            .unwrap_err()
            .contains("negative zero"));
        assert_eq!(
            PgType::Numeric.param(&Value::Real(0.1)),
            Ok(Param::Text("0.1".into()))
        );
        assert_eq!(
            PgType::Numeric.param(&Value::Real(f64::NEG_INFINITY)),
            Ok(Param::Text("-Infinity".into()))
        );
        assert!(PgType::Numeric
            .param(&Value::Text("2024-01-01".into()))
            .is_err());
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
