//! Iceberg partition transforms: identity, year, month, day, hour, `bucket[N]`, `truncate[W]`.
//!
//! Owns [`Transform`] with the Iceberg spec's semantics: bucket is
//! `(murmur3_x86_32(v) & i32::MAX) % N` over the value's hash serialisation (spec Appendix B:
//! int, long, date and timestamp as an 8-byte little-endian long, strings as UTF-8, binary
//! as is); times count from 1970-01-01 with floor division (1969-12-31T23:59 is year, month,
//! day and hour -1); truncate rounds numbers down to a multiple of W and cuts strings to W
//! characters, binary to W bytes. Which source types each accepts and its result type.
//! Nothing here knows about specs, files or paths (`partition.rs`).

use std::fmt;

use chrono::Datelike;

use super::error::{IcebergError, Result};
use super::schema::IcebergType;
use super::value::Datum;

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// An Iceberg partition transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Identity,
    /// Years since 1970 (int).
    Year,
    /// Months since 1970-01 (int).
    Month,
    /// Days since 1970-01-01 (date).
    Day,
    /// Hours since 1970-01-01T00:00 (int).
    Hour,
    /// `bucket[N]`: murmur3 hash bucket in `0..N` (int).
    Bucket(u32),
    /// `truncate[W]`: ints/longs rounded down to a multiple of W, strings cut to W
    /// characters, binary to W bytes.
    Truncate(u32),
}

impl Transform {
    /// Parses Iceberg's spelling (`identity`, `day`, `bucket[16]`, `truncate[4]`, ...).
    pub fn parse(s: &str) -> Result<Transform> {
        let bad = || IcebergError::InvalidSchema(format!("unknown partition transform {s:?}"));
        let arg = |prefix: &str| -> Result<Option<u32>> {
            let Some(rest) = s.strip_prefix(prefix) else {
                return Ok(None);
            };
            let n: u32 = rest
                .strip_suffix(']')
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(bad)?;
            if n == 0 {
                return Err(IcebergError::InvalidSchema(format!(
                    "partition transform {s:?} needs a positive width"
                )));
            }
            Ok(Some(n))
        };
        if let Some(n) = arg("bucket[")? {
            return Ok(Transform::Bucket(n));
        }
        if let Some(n) = arg("truncate[")? {
            return Ok(Transform::Truncate(n));
        }
        Ok(match s {
            "identity" => Transform::Identity,
            "year" => Transform::Year,
            "month" => Transform::Month,
            "day" => Transform::Day,
            "hour" => Transform::Hour,
            _ => return Err(bad()),
        })
    }

    /// The type of the transform's result for a source column of type `source`, or why the
    /// transform does not apply to it.
    pub fn result_type(self, source: IcebergType) -> Result<IcebergType, String> {
        use IcebergType as T;
        let ok = match self {
            Transform::Identity => return Ok(source),
            Transform::Year | Transform::Month => matches!(source, T::Date | T::Timestamp),
            Transform::Day => matches!(source, T::Date | T::Timestamp),
            Transform::Hour => source == T::Timestamp,
            Transform::Bucket(_) => matches!(
                source,
                T::Int | T::Long | T::Date | T::Timestamp | T::String | T::Binary
            ),
            Transform::Truncate(_) => matches!(source, T::Int | T::Long | T::String | T::Binary),
        };
        if !ok {
            return Err(format!(
                "transform {self} does not apply to a {source} column"
            ));
        }
        Ok(match self {
            Transform::Day => T::Date,
            Transform::Truncate(_) => source,
            _ => T::Int,
        })
    }

    /// The transform of a non-null value (of a type [`result_type`](Self::result_type)
    /// accepts).
    pub fn apply(self, d: &Datum) -> Result<Datum, String> {
        let unsupported = || Err(format!("transform {self} does not apply to {d:?}"));
        Ok(match (self, d) {
            (Transform::Identity, _) => d.clone(),
            (Transform::Year, Datum::Date(days)) => Datum::Int(year_of_days(i64::from(*days))?),
            (Transform::Year, Datum::Timestamp(us)) => {
                Datum::Int(year_of_days(us.div_euclid(MICROS_PER_DAY))?)
            }
            (Transform::Month, Datum::Date(days)) => Datum::Int(month_of_days(i64::from(*days))?),
            (Transform::Month, Datum::Timestamp(us)) => {
                Datum::Int(month_of_days(us.div_euclid(MICROS_PER_DAY))?)
            }
            (Transform::Day, Datum::Date(days)) => Datum::Date(*days),
            (Transform::Day, Datum::Timestamp(us)) => Datum::Date(
                i32::try_from(us.div_euclid(MICROS_PER_DAY)).map_err(|_| "day out of range")?,
            ),
            (Transform::Hour, Datum::Timestamp(us)) => Datum::Int(
                i32::try_from(us.div_euclid(MICROS_PER_HOUR)).map_err(|_| "hour out of range")?,
            ),
            (Transform::Bucket(n), _) => {
                let bytes = match d {
                    Datum::Int(v) | Datum::Date(v) => i64::from(*v).to_le_bytes().to_vec(),
                    Datum::Long(v) | Datum::Timestamp(v) => v.to_le_bytes().to_vec(),
                    Datum::String(s) => s.as_bytes().to_vec(),
                    Datum::Binary(b) => b.clone(),
                    _ => return unsupported(),
                };
                let hash = murmur3_32(&bytes);
                Datum::Int((hash & i32::MAX) % n as i32)
            }
            (Transform::Truncate(w), Datum::Int(v)) => {
                let w = i32::try_from(w).map_err(|_| "width out of range")?;
                Datum::Int(v - v.rem_euclid(w))
            }
            (Transform::Truncate(w), Datum::Long(v)) => Datum::Long(v - v.rem_euclid(i64::from(w))),
            (Transform::Truncate(w), Datum::String(s)) => {
                Datum::String(s.chars().take(w as usize).collect())
            }
            (Transform::Truncate(w), Datum::Binary(b)) => {
                Datum::Binary(b[..b.len().min(w as usize)].to_vec())
            }
            _ => return unsupported(),
        })
    }

    /// Whether `a <= b` implies `apply(a) <= apply(b)`, so a file whose column bounds
    /// transform to one value holds only that partition.
    pub(super) fn is_order_preserving(self) -> bool {
        !matches!(self, Transform::Bucket(_))
    }

    /// The default partition field name for a source column, as the Java implementation
    /// names it.
    pub fn default_name(self, column: &str) -> String {
        match self {
            Transform::Identity => column.to_string(),
            Transform::Year => format!("{column}_year"),
            Transform::Month => format!("{column}_month"),
            Transform::Day => format!("{column}_day"),
            Transform::Hour => format!("{column}_hour"),
            Transform::Bucket(_) => format!("{column}_bucket"),
            Transform::Truncate(_) => format!("{column}_trunc"),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Identity => f.write_str("identity"),
            Transform::Year => f.write_str("year"),
            Transform::Month => f.write_str("month"),
            Transform::Day => f.write_str("day"),
            Transform::Hour => f.write_str("hour"),
            Transform::Bucket(n) => write!(f, "bucket[{n}]"),
            Transform::Truncate(w) => write!(f, "truncate[{w}]"),
        }
    }
}

/// murmur3_x86_32 with seed 0, as Iceberg's bucket transform hashes (spec Appendix B).
pub fn murmur3_32(bytes: &[u8]) -> i32 {
    let mut cursor = std::io::Cursor::new(bytes);
    // Reading from a slice cannot fail.
    murmur3::murmur3_32(&mut cursor, 0).expect("hashing an in-memory slice") as i32
}

fn date_of_days(days: i64) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::TimeDelta::try_days(days)?))
        .ok_or_else(|| format!("day {days} out of range"))
}

fn year_of_days(days: i64) -> Result<i32, String> {
    Ok(date_of_days(days)?.year() - 1970)
}

fn month_of_days(days: i64) -> Result<i32, String> {
    let d = date_of_days(days)?;
    Ok((d.year() - 1970) * 12 + d.month0() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bucket(n: u32, d: Datum) -> i32 {
        match Transform::Bucket(n).apply(&d).unwrap() {
            Datum::Int(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// The hash values of the Iceberg spec, Appendix B ("32-bit Hash Requirements").
    #[test]
    fn murmur3_matches_the_spec_vectors() {
        let hash = |d: Datum| {
            let bytes = match d {
                Datum::Int(v) | Datum::Date(v) => i64::from(v).to_le_bytes().to_vec(),
                Datum::Long(v) | Datum::Timestamp(v) => v.to_le_bytes().to_vec(),
                Datum::String(s) => s.into_bytes(),
                Datum::Binary(b) => b,
                _ => unreachable!(),
            };
            murmur3_32(&bytes)
        };
        assert_eq!(hash(Datum::Int(34)), 2017239379);
        assert_eq!(hash(Datum::Long(34)), 2017239379);
        let date = Datum::from_json(IcebergType::Date, &json!("2017-11-16")).unwrap();
        assert_eq!(hash(date), -653330422);
        let ts = Datum::from_json(IcebergType::Timestamp, &json!("2017-11-16T22:31:08")).unwrap();
        assert_eq!(hash(ts), -2047944441);
        assert_eq!(hash(Datum::String("iceberg".into())), 1210000089);
        assert_eq!(hash(Datum::Binary(vec![0, 1, 2, 3])), -188683207);
        // And the bucket: (hash & Integer.MAX_VALUE) % N.
        assert_eq!(bucket(100, Datum::Int(34)), 2017239379 % 100);
        assert_eq!(
            bucket(16, Datum::Binary(vec![0, 1, 2, 3])),
            (-188683207i32 & i32::MAX) % 16
        );
    }

    #[test]
    fn truncate_follows_the_spec_examples() {
        let t = |w, d: Datum| Transform::Truncate(w).apply(&d).unwrap();
        assert_eq!(t(10, Datum::Int(1)), Datum::Int(0));
        assert_eq!(t(10, Datum::Int(-1)), Datum::Int(-10));
        assert_eq!(t(10, Datum::Long(-1)), Datum::Long(-10));
        assert_eq!(t(10, Datum::Long(25)), Datum::Long(20));
        assert_eq!(
            t(3, Datum::String("iceberg".into())),
            Datum::String("ice".into())
        );
        // Characters, not bytes.
        assert_eq!(
            t(2, Datum::String("äöü".into())),
            Datum::String("äö".into())
        );
        assert_eq!(
            t(2, Datum::Binary(vec![1, 2, 3])),
            Datum::Binary(vec![1, 2])
        );
    }

    #[test]
    fn time_transforms_count_from_1970_with_floor_division() {
        let ts = |s: &str| Datum::from_json(IcebergType::Timestamp, &json!(s)).unwrap();
        let date = |s: &str| Datum::from_json(IcebergType::Date, &json!(s)).unwrap();
        let at = ts("2017-11-16T22:31:08");
        assert_eq!(Transform::Year.apply(&at).unwrap(), Datum::Int(47));
        assert_eq!(
            Transform::Month.apply(&at).unwrap(),
            Datum::Int(47 * 12 + 10)
        );
        assert_eq!(Transform::Day.apply(&at).unwrap(), date("2017-11-16"));
        assert_eq!(Transform::Hour.apply(&at).unwrap(), Datum::Int(419_686));
        assert_eq!(
            Transform::Year.apply(&date("2017-11-16")).unwrap(),
            Datum::Int(47)
        );
        // Before the epoch: -1, not 0.
        let before = ts("1969-12-31T23:59:59.999999");
        assert_eq!(Transform::Year.apply(&before).unwrap(), Datum::Int(-1));
        assert_eq!(Transform::Month.apply(&before).unwrap(), Datum::Int(-1));
        assert_eq!(Transform::Day.apply(&before).unwrap(), Datum::Date(-1));
        assert_eq!(Transform::Hour.apply(&before).unwrap(), Datum::Int(-1));
        assert_eq!(
            Transform::Day.apply(&date("1969-12-31")).unwrap(),
            Datum::Date(-1)
        );
    }

    #[test]
    fn result_types_and_refusals() {
        use IcebergType as T;
        assert_eq!(Transform::Day.result_type(T::Timestamp), Ok(T::Date));
        assert_eq!(Transform::Bucket(4).result_type(T::String), Ok(T::Int));
        assert_eq!(Transform::Truncate(4).result_type(T::Long), Ok(T::Long));
        assert!(Transform::Hour.result_type(T::Date).is_err());
        assert!(Transform::Bucket(4).result_type(T::Double).is_err());
        assert!(Transform::Year.result_type(T::Long).is_err());
        for s in [
            "identity",
            "year",
            "month",
            "day",
            "hour",
            "bucket[16]",
            "truncate[4]",
        ] {
            assert_eq!(Transform::parse(s).unwrap().to_string(), s);
        }
        assert!(Transform::parse("bucket[0]").is_err());
        assert!(Transform::parse("void").is_err());
    }
}
