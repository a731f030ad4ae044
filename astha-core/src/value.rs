//! One SQLite value, exactly as SQLite stores it: the five storage classes.
//!
//! Values move through Astha in this form, never through a lossy JSON round trip.
//! The JSON form (for `astha watch`, sinks and typed decoding) is plain JSON where
//! plain JSON is exact, and a tagged object where it is not:
//! a BLOB is `{"$blob": "<HEX>"}`, a non-finite REAL is `{"$real": "inf" | "-inf"}`.

use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::json;

/// A SQLite value of any storage class.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// The storage class name, as SQLite's `typeof()` prints it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }

    /// Exact equality: REALs compare bit for bit (so NaN-free SQLite values and
    /// signed zeros are told apart), everything else by value.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }

    /// The JSON form described in the module docs.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => json!(i),
            Value::Real(r) if r.is_finite() => json!(r),
            Value::Real(r) => json!({ "$real": if *r > 0.0 { "inf" } else { "-inf" } }),
            Value::Text(s) => json!(s),
            Value::Blob(b) => json!({ "$blob": hex_upper(b) }),
        }
    }

    /// Builds a value from a column of a row read with rusqlite.
    pub fn from_ref(value: ValueRef<'_>) -> Value {
        match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            // SQLite does not check that TEXT is UTF-8; invalid bytes are replaced
            // rather than failing the whole change.
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl rusqlite::types::FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        Ok(Value::from_ref(value))
    }
}

/// Upper-case hex, the form SQLite's `hex()` and `quote()` print.
pub fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xF) as usize] as char);
    }
    out
}

/// Parses hex digits (either case) into bytes; `None` on odd length or a bad digit.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_tags_what_json_cannot_hold() {
        assert_eq!(
            Value::Blob(vec![0, 255]).to_json(),
            json!({"$blob": "00FF"})
        );
        assert_eq!(
            Value::Real(f64::NEG_INFINITY).to_json(),
            json!({"$real": "-inf"})
        );
        assert_eq!(Value::Integer(i64::MIN).to_json(), json!(i64::MIN));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_hex(&hex_upper(&bytes)).unwrap(), bytes);
        assert!(parse_hex("ABC").is_none());
        assert!(parse_hex("zz").is_none());
    }
}
