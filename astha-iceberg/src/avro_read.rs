//! Reading the records of an Avro object container file (a manifest or a manifest list)
//! without parsing the same writer schema again for every file.
//!
//! Owns one promise: the values returned are exactly those `apache_avro::Reader` returns for
//! the same bytes. Files this writer produces (codec `null`) are decoded here, block by block,
//! with the writer schema parsed once per distinct schema text (at most
//! [`SCHEMAS_KEPT`] kept; parsing was most of the cost of opening a small manifest). Any
//! other file (a compressed codec, a schema this path cannot decode) and any error on this
//! path goes through `apache_avro::Reader`, whose errors are the ones reported.
//!
//! Never writes, and never decides what a file means: `manifest.rs` and `manifest_list.rs`
//! interpret the values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, Reader, Schema};

/// Parsed writer schemas kept at most; past this many the cache starts over.
const SCHEMAS_KEPT: usize = 64;

/// The records of the container file `bytes`, as `apache_avro::Reader` yields them.
pub(crate) fn read_values(bytes: &[u8]) -> apache_avro::AvroResult<Vec<Value>> {
    if let Some(values) = fast_values(bytes) {
        return Ok(values);
    }
    Reader::new(bytes)?.collect()
}

/// The fast path of the module doc; `None` sends the file to `apache_avro::Reader`.
fn fast_values(bytes: &[u8]) -> Option<Vec<Value>> {
    let rest = bytes.strip_prefix(b"Obj\x01")?;
    let mut cursor = rest;
    let Value::Map(meta) = from_avro_datum(&Schema::map(Schema::Bytes), &mut cursor, None).ok()?
    else {
        return None;
    };
    let text = |k: &str| match meta.get(k) {
        Some(Value::Bytes(b)) => std::str::from_utf8(b).ok(),
        _ => None,
    };
    if text("avro.codec").is_some_and(|c| c != "null") {
        return None;
    }
    let schema = writer_schema(text("avro.schema")?)?;
    let marker: [u8; 16] = cursor.get(..16)?.try_into().ok()?;
    cursor = &cursor[16..];
    let mut out = Vec::new();
    while !cursor.is_empty() {
        let (Value::Long(count), Value::Long(size)) = (
            from_avro_datum(&Schema::Long, &mut cursor, None).ok()?,
            from_avro_datum(&Schema::Long, &mut cursor, None).ok()?,
        ) else {
            return None;
        };
        let size = usize::try_from(size).ok()?;
        let mut block = cursor.get(..size)?;
        for _ in 0..count {
            out.push(from_avro_datum(&schema, &mut block, None).ok()?);
        }
        if !block.is_empty() || cursor.get(size..size + 16)? != marker {
            return None;
        }
        cursor = &cursor[size + 16..];
    }
    Some(out)
}

/// The parsed schema of `text`, parsed once (see the module doc).
fn writer_schema(text: &str) -> Option<Arc<Schema>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Schema>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned cache is still a map of valid schemas.
    if let Some(s) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(text) {
        return Some(s.clone());
    }
    let schema = Arc::new(Schema::parse_str(text).ok()?);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= SCHEMAS_KEPT {
        cache.clear();
    }
    cache.insert(text.to_string(), schema.clone());
    Some(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{Codec, Writer};

    fn file(codec: Codec, records: i64) -> Vec<u8> {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"},
                {"name":"b","type":["null","string"]}]}"#,
        )
        .unwrap();
        let mut w = Writer::with_codec(&schema, Vec::new(), codec);
        for i in 0..records {
            let b = if i % 2 == 0 {
                Value::Union(1, Box::new(Value::String(format!("v{i}"))))
            } else {
                Value::Union(0, Box::new(Value::Null))
            };
            w.append(Value::Record(vec![
                ("a".into(), Value::Long(i)),
                ("b".into(), b),
            ]))
            .unwrap();
            if i == 2 {
                w.flush().unwrap(); // a second block
            }
        }
        w.into_inner().unwrap()
    }

    #[test]
    fn reads_what_the_avro_reader_reads() {
        for (codec, n) in [
            (Codec::Null, 0),
            (Codec::Null, 7),
            (Codec::Deflate(Default::default()), 7),
        ] {
            let bytes = file(codec, n);
            let expected: Vec<Value> = Reader::new(&bytes[..])
                .unwrap()
                .map(|v| v.unwrap())
                .collect();
            assert_eq!(read_values(&bytes).unwrap(), expected);
            assert_eq!(fast_values(&bytes).is_some(), matches!(codec, Codec::Null));
        }
    }

    #[test]
    fn a_corrupt_file_is_left_to_the_avro_reader() {
        let mut bytes = file(Codec::Null, 7);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // the last block's sync marker
        assert!(fast_values(&bytes).is_none());
        assert!(read_values(&bytes).is_err());
        assert!(read_values(&bytes[..10]).is_err());
    }
}
