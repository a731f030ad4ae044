//! Row images: how a trigger writes a row into the change log, and how Astha reads it back.
//!
//! A trigger writes an image as SQLite's own `quote()` of each column, comma separated:
//! `NULL`, `42`, `3.00000000000000044408e-01`, `'it''s'`, `X'00FF'`. `quote()` never fails
//! (unlike `json_object`, which raises an error on a BLOB in a non-BLOB column and would
//! fail the user's write), keeps the storage class of every value, and prints a REAL with
//! as many digits as it takes to read back the same double. It is an SQLite built-in old
//! enough that a writer in any other process can fire the trigger.
//!
//! Known limits of the encoding, all inherited from SQLite's `quote()`, measured here
//! with SQLite 3.50.2 (see `every_real_round_trips` and MEASURED.md):
//! - a REAL reads back bit for bit when its magnitude is between 1e-30 and 1e30 (0 of
//!   100,000 random values per decade range were off), and ±infinity; beyond that range
//!   SQLite's own double-to-text conversion can be off by one unit in the last place
//!   (about one random bit pattern in five), and no SQLite built-in prints a double exactly;
//! - a REAL `-0.0` reads back as `0.0`;
//! - TEXT is cut at an embedded NUL character.

use crate::ident::quote_ident;
use crate::value::{parse_hex, Value};

/// How many `quote()` results one `printf` call joins. SQLite builds before 3.48 allow at
/// most 127 function arguments, so wide tables are written as several chunks joined with
/// `||`. Chunks keep the cost linear in the number of columns.
const COLUMNS_PER_CHUNK: usize = 100;

/// SQL expression that evaluates, inside a trigger, to the image of the `NEW` or `OLD` row.
pub fn image_sql(row: &str, columns: &[String]) -> String {
    let chunks: Vec<String> = columns
        .chunks(COLUMNS_PER_CHUNK)
        .map(|chunk| {
            let format = vec!["%s"; chunk.len()].join(",");
            let args: Vec<String> = chunk
                .iter()
                .map(|c| format!("quote({row}.{})", quote_ident(c)))
                .collect();
            format!("printf('{format}',{})", args.join(","))
        })
        .collect();
    chunks.join("||','||")
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads an image written by [`image_sql`] back into values, one per column.
pub fn parse_image(text: &str) -> Result<Vec<Value>, ImageError> {
    let bytes = text.as_bytes();
    let mut values = Vec::new();
    let mut pos = 0;
    loop {
        let (value, next) = parse_one(text, pos)?;
        values.push(value);
        match bytes.get(next) {
            None => return Ok(values),
            Some(b',') => pos = next + 1,
            Some(other) => {
                return Err(ImageError(format!(
                    "expected ',' at byte {next}, found {:?}",
                    *other as char
                )))
            }
        }
    }
}

/// Parses one value starting at `pos`; returns it and the position just after it.
fn parse_one(text: &str, pos: usize) -> Result<(Value, usize), ImageError> {
    let bytes = text.as_bytes();
    match bytes.get(pos) {
        None => Err(ImageError(format!("missing value at byte {pos}"))),
        Some(b'\'') => parse_text(text, pos + 1),
        Some(b'X') if bytes.get(pos + 1) == Some(&b'\'') => {
            let start = pos + 2;
            let end = text[start..]
                .find('\'')
                .map(|i| start + i)
                .ok_or_else(|| ImageError("unterminated blob literal".into()))?;
            let blob = parse_hex(&text[start..end])
                .ok_or_else(|| ImageError(format!("bad blob literal at byte {pos}")))?;
            Ok((Value::Blob(blob), end + 1))
        }
        Some(_) => {
            let end = text[pos..].find(',').map_or(text.len(), |i| pos + i);
            Ok((parse_bare(&text[pos..end])?, end))
        }
    }
}

/// A quoted string whose opening quote is just before `start`; `''` is an escaped quote.
fn parse_text(text: &str, start: usize) -> Result<(Value, usize), ImageError> {
    let mut out = String::new();
    let mut rest = &text[start..];
    let mut consumed = start;
    loop {
        let quote = rest
            .find('\'')
            .ok_or_else(|| ImageError("unterminated text literal".into()))?;
        out.push_str(&rest[..quote]);
        let after = &rest[quote + 1..];
        if let Some(tail) = after.strip_prefix('\'') {
            out.push('\'');
            rest = tail;
            consumed += quote + 2;
        } else {
            return Ok((Value::Text(out), consumed + quote + 1));
        }
    }
}

/// NULL, an integer or a real, as `quote()` prints them.
fn parse_bare(token: &str) -> Result<Value, ImageError> {
    if token == "NULL" {
        return Ok(Value::Null);
    }
    let is_real = token.contains(['.', 'e', 'E', 'I', 'i']);
    if !is_real {
        if let Ok(i) = token.parse::<i64>() {
            return Ok(Value::Integer(i));
        }
    }
    token
        .parse::<f64>()
        .map(Value::Real)
        .map_err(|_| ImageError(format!("not a SQLite literal: {token:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_literal_form() {
        let values =
            parse_image("NULL,-9223372036854775808,1.5,'a,''b''',X'00FF',9.0e+999,-Inf").unwrap();
        assert_eq!(
            values,
            vec![
                Value::Null,
                Value::Integer(i64::MIN),
                Value::Real(1.5),
                Value::Text("a,'b'".into()),
                Value::Blob(vec![0, 255]),
                Value::Real(f64::INFINITY),
                Value::Real(f64::NEG_INFINITY),
            ]
        );
    }

    #[test]
    fn empty_text_and_empty_blob() {
        assert_eq!(
            parse_image("'',X''").unwrap(),
            vec![Value::Text(String::new()), Value::Blob(vec![])]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_image("'open").is_err());
        assert!(parse_image("12abc").is_err());
        assert!(parse_image("1,,2").is_err());
        assert!(parse_image("X'0'").is_err());
    }

    #[test]
    fn wide_tables_are_chunked() {
        let cols: Vec<String> = (0..250).map(|i| format!("c{i}")).collect();
        let sql = image_sql("NEW", &cols);
        assert_eq!(sql.matches("printf(").count(), 3);
    }
}
