//! Row values: JSON in, typed [`Datum`] in between, JSON or Iceberg bytes out.
//!
//! Owns the JSON shapes a column accepts and the canonical shape it is read back as, so that
//! `read_parquet_rows` output can be fed to `write_parquet` unchanged (compaction relies on
//! that). Also owns Iceberg's single-value binary serialisation used for manifest bounds, and
//! the bound truncation Iceberg's default `truncate(16)` metrics mode applies to strings and
//! binary. Parsing is strict: a value of the wrong JSON type is an error, never coerced.
//!
//! | type | accepted JSON | read back as |
//! | --- | --- | --- |
//! | boolean | `true`/`false` | same |
//! | int, long | integer in range | same |
//! | float, double | any number | number |
//! | string | string | same |
//! | binary | string (its UTF-8 bytes) or array of 0..=255 | string if valid UTF-8, else array |
//! | date | `"YYYY-MM-DD"` or integer days since 1970-01-01 | `"YYYY-MM-DD"` |
//! | timestamp | `"YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z]"` or integer µs since epoch | `"YYYY-MM-DDTHH:MM:SS.ffffff"` |

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::schema::IcebergType;

/// Iceberg's default metrics mode keeps this many characters (strings) or bytes (binary).
pub const BOUND_TRUNCATE_LEN: usize = 16;

/// One non-null value of a column, in its storage representation.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(String),
    Binary(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, no time zone.
    Timestamp(i64),
}

impl Datum {
    /// Parses a non-null JSON value for a column of type `ty`; the error says what was expected.
    pub fn from_json(ty: IcebergType, v: &Value) -> Result<Datum, String> {
        let wrong = || format!("expected {}, got {}", expected_shape(ty), json_kind(v));
        match ty {
            IcebergType::Boolean => v.as_bool().map(Datum::Boolean).ok_or_else(wrong),
            IcebergType::Int => {
                let n = v.as_i64().ok_or_else(wrong)?;
                i32::try_from(n)
                    .map(Datum::Int)
                    .map_err(|_| format!("{n} does not fit a 32-bit int"))
            }
            IcebergType::Long => v.as_i64().map(Datum::Long).ok_or_else(|| {
                if v.is_u64() {
                    format!("{v} does not fit a 64-bit long")
                } else {
                    wrong()
                }
            }),
            IcebergType::Float => v.as_f64().map(|f| Datum::Float(f as f32)).ok_or_else(wrong),
            IcebergType::Double => v.as_f64().map(Datum::Double).ok_or_else(wrong),
            IcebergType::String => v
                .as_str()
                .map(|s| Datum::String(s.to_string()))
                .ok_or_else(wrong),
            IcebergType::Binary => match v {
                Value::String(s) => Ok(Datum::Binary(s.as_bytes().to_vec())),
                Value::Array(items) => items
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .map(Datum::Binary)
                    .ok_or_else(|| "binary arrays must hold integers 0..=255".to_string()),
                _ => Err(wrong()),
            },
            IcebergType::Date => match v {
                Value::String(s) => parse_date(s).map(Datum::Date),
                Value::Number(_) => {
                    let n = v.as_i64().ok_or_else(wrong)?;
                    i32::try_from(n)
                        .map(Datum::Date)
                        .map_err(|_| format!("{n} days is out of range"))
                }
                _ => Err(wrong()),
            },
            IcebergType::Timestamp => match v {
                Value::String(s) => parse_timestamp(s).map(Datum::Timestamp),
                Value::Number(_) => v.as_i64().map(Datum::Timestamp).ok_or_else(wrong),
                _ => Err(wrong()),
            },
        }
    }

    /// The canonical JSON shape (see the module table).
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Boolean(b) => Value::Bool(*b),
            Datum::Int(i) => Value::from(*i),
            Datum::Long(i) => Value::from(*i),
            Datum::Float(f) => Value::from(*f as f64),
            Datum::Double(f) => Value::from(*f),
            Datum::String(s) => Value::String(s.clone()),
            Datum::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            },
            Datum::Date(d) => Value::String(format_date(*d)),
            Datum::Timestamp(t) => Value::String(format_timestamp(*t)),
        }
    }

    /// Iceberg's order for bounds: floats by IEEE total order (-0.0 < 0.0), strings and binary
    /// by unsigned bytes. Values of different types do not compare.
    pub fn compare(&self, other: &Datum) -> Option<Ordering> {
        Some(match (self, other) {
            (Datum::Boolean(a), Datum::Boolean(b)) => a.cmp(b),
            (Datum::Int(a), Datum::Int(b)) | (Datum::Date(a), Datum::Date(b)) => a.cmp(b),
            (Datum::Long(a), Datum::Long(b)) | (Datum::Timestamp(a), Datum::Timestamp(b)) => {
                a.cmp(b)
            }
            (Datum::Float(a), Datum::Float(b)) => a.total_cmp(b),
            (Datum::Double(a), Datum::Double(b)) => a.total_cmp(b),
            (Datum::String(a), Datum::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Datum::Binary(a), Datum::Binary(b)) => a.cmp(b),
            _ => return None,
        })
    }

    /// Iceberg single-value binary serialisation (little-endian numbers, raw UTF-8 / bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Datum::Boolean(b) => vec![u8::from(*b)],
            Datum::Int(i) | Datum::Date(i) => i.to_le_bytes().to_vec(),
            Datum::Long(i) | Datum::Timestamp(i) => i.to_le_bytes().to_vec(),
            Datum::Float(f) => f.to_le_bytes().to_vec(),
            Datum::Double(f) => f.to_le_bytes().to_vec(),
            Datum::String(s) => s.as_bytes().to_vec(),
            Datum::Binary(b) => b.clone(),
        }
    }

    /// Inverse of [`Datum::to_bytes`]; `None` when the length is wrong for the type.
    pub fn from_bytes(ty: IcebergType, bytes: &[u8]) -> Option<Datum> {
        Some(match ty {
            IcebergType::Boolean => Datum::Boolean(*bytes.first()? != 0),
            IcebergType::Int => Datum::Int(i32::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::Date => Datum::Date(i32::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::Long => Datum::Long(i64::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::Timestamp => Datum::Timestamp(i64::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::Float => Datum::Float(f32::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::Double => Datum::Double(f64::from_le_bytes(bytes.try_into().ok()?)),
            IcebergType::String => Datum::String(String::from_utf8(bytes.to_vec()).ok()?),
            IcebergType::Binary => Datum::Binary(bytes.to_vec()),
        })
    }
}

/// Serialised lower bound: strings and binary are cut to [`BOUND_TRUNCATE_LEN`], which can only
/// make the bound smaller, so it stays a valid lower bound.
pub fn lower_bound_bytes(d: &Datum) -> Vec<u8> {
    match d {
        Datum::String(s) => s
            .chars()
            .take(BOUND_TRUNCATE_LEN)
            .collect::<String>()
            .into_bytes(),
        Datum::Binary(b) => b[..b.len().min(BOUND_TRUNCATE_LEN)].to_vec(),
        other => other.to_bytes(),
    }
}

/// Serialised upper bound: a cut string or binary must be rounded *up* (last character or byte
/// incremented) to stay an upper bound; when no such value exists the bound is omitted.
pub fn upper_bound_bytes(d: &Datum) -> Option<Vec<u8>> {
    match d {
        Datum::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            if chars.len() <= BOUND_TRUNCATE_LEN {
                return Some(s.as_bytes().to_vec());
            }
            chars.truncate(BOUND_TRUNCATE_LEN);
            while let Some(last) = chars.pop() {
                if let Some(next) = next_char(last) {
                    chars.push(next);
                    return Some(chars.into_iter().collect::<String>().into_bytes());
                }
            }
            None
        }
        Datum::Binary(b) => {
            if b.len() <= BOUND_TRUNCATE_LEN {
                return Some(b.clone());
            }
            let mut cut = b[..BOUND_TRUNCATE_LEN].to_vec();
            while let Some(last) = cut.pop() {
                if last < u8::MAX {
                    cut.push(last + 1);
                    return Some(cut);
                }
            }
            None
        }
        other => Some(other.to_bytes()),
    }
}

fn next_char(c: char) -> Option<char> {
    let mut n = c as u32 + 1;
    if (0xD800..=0xDFFF).contains(&n) {
        n = 0xE000; // skip the surrogate gap: those are not chars
    }
    char::from_u32(n)
}

const UNIX_EPOCH_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => panic!("1970-01-01 is a valid date"),
};

fn parse_date(s: &str) -> Result<i32, String> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DD date ({e})"))?;
    i32::try_from((d - UNIX_EPOCH_DATE).num_days()).map_err(|_| format!("{s:?} is out of range"))
}

fn parse_timestamp(s: &str) -> Result<i64, String> {
    let trimmed = s.strip_suffix('Z').unwrap_or(s);
    let parsed = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(trimmed, f).ok())
        .ok_or_else(|| format!("{s:?} is not a YYYY-MM-DDTHH:MM:SS[.ffffff] timestamp"))?;
    let utc = parsed.and_utc();
    if utc.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!(
            "{s:?} has sub-microsecond digits; timestamps are stored in microseconds"
        ));
    }
    Ok(utc.timestamp_micros())
}

/// `YYYY-MM-DD` for days since the epoch.
pub fn format_date(days: i32) -> String {
    UNIX_EPOCH_DATE
        .checked_add_signed(chrono::TimeDelta::days(days.into()))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("<date {days} out of range>"))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` for microseconds since the epoch.
pub fn format_timestamp(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_else(|| format!("<timestamp {micros} out of range>"))
}

fn expected_shape(ty: IcebergType) -> &'static str {
    match ty {
        IcebergType::Boolean => "a boolean",
        IcebergType::Int => "an integer (32-bit)",
        IcebergType::Long => "an integer (64-bit)",
        IcebergType::Float | IcebergType::Double => "a number",
        IcebergType::String => "a string",
        IcebergType::Binary => "a string or an array of bytes",
        IcebergType::Date => "a \"YYYY-MM-DD\" string or days since epoch",
        IcebergType::Timestamp => "a timestamp string or microseconds since epoch",
    }
}

fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("string {:?}...", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_formats_dates_and_timestamps() {
        assert_eq!(
            Datum::from_json(IcebergType::Date, &json!("1970-01-02")),
            Ok(Datum::Date(1))
        );
        assert_eq!(
            Datum::from_json(IcebergType::Date, &json!(-1)),
            Ok(Datum::Date(-1))
        );
        assert_eq!(Datum::Date(19_000).to_json(), json!("2022-01-08"));
        let t =
            Datum::from_json(IcebergType::Timestamp, &json!("2024-03-01T12:30:00.123456")).unwrap();
        assert_eq!(t, Datum::Timestamp(1_709_296_200_123_456));
        assert_eq!(t.to_json(), json!("2024-03-01T12:30:00.123456"));
        assert_eq!(
            Datum::from_json(IcebergType::Timestamp, &json!("2024-03-01 12:30:00Z")),
            Ok(Datum::Timestamp(1_709_296_200_000_000))
        );
        assert!(Datum::from_json(
            IcebergType::Timestamp,
            &json!("2024-03-01T12:30:00.1234567")
        )
        .is_err());
        assert!(Datum::from_json(IcebergType::Date, &json!("2024-02-30")).is_err());
    }

    #[test]
    fn strict_types_with_clear_messages() {
        let err = Datum::from_json(IcebergType::Long, &json!("12")).unwrap_err();
        assert_eq!(err, "expected an integer (64-bit), got string \"12\"");
        assert!(Datum::from_json(IcebergType::Int, &json!(1_i64 << 40))
            .unwrap_err()
            .contains("32-bit"));
        assert!(Datum::from_json(IcebergType::Long, &json!(u64::MAX))
            .unwrap_err()
            .contains("64-bit"));
        assert!(Datum::from_json(IcebergType::Boolean, &json!(1)).is_err());
        assert!(Datum::from_json(IcebergType::Long, &json!(1.5)).is_err());
        assert!(Datum::from_json(IcebergType::Binary, &json!([1, 256])).is_err());
    }

    #[test]
    fn canonical_json_round_trips() {
        let cases = [
            (IcebergType::Boolean, json!(true)),
            (IcebergType::Int, json!(-5)),
            (IcebergType::Long, json!(i64::MIN)),
            (IcebergType::Float, json!(1.5)),
            (IcebergType::Double, json!(-0.25)),
            (IcebergType::String, json!("héllo")),
            (IcebergType::Binary, json!("abc")),
            (IcebergType::Binary, json!([0, 255, 7])),
            (IcebergType::Date, json!("1999-12-31")),
            (IcebergType::Timestamp, json!("1960-05-06T07:08:09.000010")),
        ];
        for (ty, v) in cases {
            let d = Datum::from_json(ty, &v).unwrap();
            assert_eq!(d.to_json(), v, "{ty}");
            assert_eq!(Datum::from_bytes(ty, &d.to_bytes()), Some(d), "{ty}");
        }
    }

    #[test]
    fn single_value_serialisation_matches_the_spec() {
        assert_eq!(Datum::Int(1).to_bytes(), [1, 0, 0, 0]);
        assert_eq!(
            Datum::Long(-2).to_bytes(),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Datum::Boolean(true).to_bytes(), [1]);
        assert_eq!(Datum::Double(1.0).to_bytes(), 1.0f64.to_le_bytes());
        assert_eq!(Datum::String("ab".into()).to_bytes(), b"ab");
    }

    #[test]
    fn truncated_bounds_stay_bounds() {
        let long = Datum::String("abcdefghijklmnopqrstuvwxyz".into());
        assert_eq!(lower_bound_bytes(&long), b"abcdefghijklmnop");
        assert_eq!(upper_bound_bytes(&long).unwrap(), b"abcdefghijklmnoq");
        let short = Datum::String("abc".into());
        assert_eq!(upper_bound_bytes(&short).unwrap(), b"abc");
        let max = Datum::Binary(vec![0xff; 20]);
        assert_eq!(upper_bound_bytes(&max), None);
        let mut carry = vec![1u8; 15];
        carry.extend([0xff, 0xff, 0xff]);
        let mut expect = vec![1u8; 14];
        expect.push(2);
        assert_eq!(upper_bound_bytes(&Datum::Binary(carry)).unwrap(), expect);
        assert_eq!(next_char('\u{D7FF}'), Some('\u{E000}'));
    }

    #[test]
    fn floats_order_totally() {
        assert_eq!(
            Datum::Double(-0.0).compare(&Datum::Double(0.0)),
            Some(Ordering::Less)
        );
        assert_eq!(Datum::Int(1).compare(&Datum::Long(1)), None);
    }
}
