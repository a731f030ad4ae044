//! The duration format of every config struct: `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`
//! (also `"us"` and `"ns"`), or a bare integer of milliseconds. It promises that
//! [`format_duration`] writes what [`parse_duration`] reads back unchanged; it knows no
//! setting.

use std::time::Duration;

const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"` (also `"us"` and `"ns"`): a non-negative
/// integer and a unit, optionally separated by spaces. The error completes the sentence
/// "invalid duration: ...".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let unit = unit.trim();
    let hint = "expected an integer and a unit (ns, us, ms, s, m, h, d), e.g. \"250ms\"";
    if number.is_empty() {
        return Err(format!("{text:?}: {hint}"));
    }
    if unit.is_empty() {
        return Err(format!(
            "{text:?} has no unit; write e.g. \"{number}ms\", or a bare integer for milliseconds"
        ));
    }
    let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("unknown unit `{unit}` in {text:?}; {hint}"));
    };
    let too_large = || format!("{text:?} is too large");
    let count: u128 = number.parse().map_err(|_| too_large())?;
    let nanos = count.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration in the largest unit that represents it exactly, e.g. `"250ms"`,
/// `"30s"`, `"1m"`; the inverse of [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0ms".to_owned();
    }
    let (unit, per) = UNITS
        .iter()
        // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.85.
        .find(|(_, per)| nanos / per * per == nanos)
        .expect("every duration is a whole number of nanoseconds");
    format!("{}{unit}", nanos / per)
}

/// Serde for `Duration` fields: reads `"250ms"`-style strings or integer milliseconds,
/// writes strings. Use with `#[serde(with = "crate::config::duration_serde")]`.
pub mod duration_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{format_duration, parse_duration};

    /// Writes the duration as a string such as `"250ms"`.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    /// Reads a duration string or an integer number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration such as \"250ms\", \"2s\", \"1m\" or \"1h\", \
                 or an integer number of milliseconds",
            )
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("invalid duration: {millis} is negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(|e| E::custom(format!("invalid duration: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_text_format() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            (" 1 m ", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("7us", Duration::from_micros(7)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "ms",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (duration, text) in [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_secs(2 * 86_400), "2d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_nanos(3), "3ns"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }
}
