//! One SQLite value, exactly as SQLite stores it: the five storage classes.
//!
//! Values move through Astha in this form, never through a lossy JSON round trip.
//! The JSON form (for `astha watch`, sinks and typed decoding) is plain JSON where
//! plain JSON is exact, and a tagged object where it is not:
//! a BLOB is `{"$blob": "<HEX>"}`, a non-finite REAL is `{"$real": "inf" | "-inf"}`,
//! TEXT that is not valid UTF-8 is `{"$text": "<HEX of its bytes>"}`.
//!
//! SQLite does not check that TEXT is UTF-8 (`CAST(x'fffe41' AS TEXT)` is stored as
//! given), and a Rust `String` cannot hold such bytes, so that TEXT is a variant of its
//! own, [`Value::TextBytes`], and is never "repaired" with U+FFFD. Every constructor
//! here keeps the form canonical: valid UTF-8 is always [`Value::Text`].

use rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::json;

/// A SQLite value of any storage class.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    /// TEXT whose bytes are not valid UTF-8, exactly as stored. Never holds valid UTF-8
    /// (that is [`Value::Text`]); build it with [`Value::text_from_bytes`].
    TextBytes(Vec<u8>),
    Blob(Vec<u8>),
}

impl Value {
    /// The storage class name, as SQLite's `typeof()` prints it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) | Value::TextBytes(_) => "text",
            Value::Blob(_) => "blob",
        }
    }

    /// A TEXT value from its bytes: [`Value::Text`] when they are UTF-8, otherwise
    /// [`Value::TextBytes`] holding them unchanged.
    pub fn text_from_bytes(bytes: Vec<u8>) -> Value {
        match String::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(e) => Value::TextBytes(e.into_bytes()),
        }
    }

    /// A TEXT value's bytes (either variant); `None` for other storage classes.
    pub fn text_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Text(s) => Some(s.as_bytes()),
            Value::TextBytes(b) => Some(b),
            _ => None,
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
            Value::TextBytes(b) => json!({ "$text": hex_upper(b) }),
            Value::Blob(b) => json!({ "$blob": hex_upper(b) }),
        }
    }

    /// Builds a value from a column of a row read with rusqlite.
    pub fn from_ref(value: ValueRef<'_>) -> Value {
        match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            // SQLite does not check that TEXT is UTF-8: keep the bytes as they are.
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(text) => Value::Text(text.to_owned()),
                Err(_) => Value::TextBytes(t.to_vec()),
            },
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
            Value::TextBytes(b) => ToSqlOutput::Borrowed(ValueRef::Text(b)),
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
        assert_eq!(
            Value::text_from_bytes(vec![0xff, 0xfe, b'A']).to_json(),
            json!({"$text": "FFFE41"})
        );
        assert_eq!(
            Value::text_from_bytes(b"ok".to_vec()),
            Value::Text("ok".into())
        );
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_hex(&hex_upper(&bytes)).unwrap(), bytes);
        assert!(parse_hex("ABC").is_none());
        assert!(parse_hex("zz").is_none());
    }
}
