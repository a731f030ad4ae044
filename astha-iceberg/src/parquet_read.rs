//! Arrow column → canonical JSON values, for reading data files back.
//!
//! Owns the type mapping on the read side. It accepts the Arrow types this writer produces plus
//! the ones other Iceberg writers commonly use for the same Iceberg type (large/view strings,
//! timestamps in other units, narrower ints for `long`), and converts through [`Datum`] so the
//! JSON shape is exactly the one `write_parquet` accepts.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use serde_json::Value;

use super::schema::{ColumnSpec, IcebergType};
use super::value::Datum;

/// JSON values of one Arrow column read for `col`; the error says which types clashed.
pub fn column_to_json(array: &dyn Array, col: &ColumnSpec) -> Result<Vec<Value>, String> {
    let mismatch = || {
        format!(
            "column {:?} (field id {}) is {} in the file but {} in the table",
            col.name,
            col.field_id,
            array.data_type(),
            col.ty
        )
    };
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    // `get(i)` yields a Datum for row i; nulls are handled once, outside.
    let mut push_all = |get: &dyn Fn(usize) -> Datum| {
        for i in 0..n {
            out.push(if array.is_null(i) {
                Value::Null
            } else {
                get(i).to_json()
            });
        }
    };
    match (col.ty, array.data_type()) {
        (IcebergType::Boolean, DataType::Boolean) => {
            let a = array.as_boolean();
            push_all(&|i| Datum::Boolean(a.value(i)))
        }
        (IcebergType::Int | IcebergType::Long, DataType::Int8) => {
            let a = array.as_primitive::<Int8Type>();
            push_all(&|i| int_datum(col.ty, a.value(i).into()))
        }
        (IcebergType::Int | IcebergType::Long, DataType::Int16) => {
            let a = array.as_primitive::<Int16Type>();
            push_all(&|i| int_datum(col.ty, a.value(i).into()))
        }
        (IcebergType::Int | IcebergType::Long, DataType::Int32) => {
            let a = array.as_primitive::<Int32Type>();
            push_all(&|i| int_datum(col.ty, a.value(i).into()))
        }
        (IcebergType::Long, DataType::Int64) => {
            let a = array.as_primitive::<Int64Type>();
            push_all(&|i| Datum::Long(a.value(i)))
        }
        (IcebergType::Float, DataType::Float32) => {
            let a = array.as_primitive::<Float32Type>();
            push_all(&|i| Datum::Float(a.value(i)))
        }
        (IcebergType::Double, DataType::Float32) => {
            let a = array.as_primitive::<Float32Type>();
            push_all(&|i| Datum::Double(a.value(i).into()))
        }
        (IcebergType::Double, DataType::Float64) => {
            let a = array.as_primitive::<Float64Type>();
            push_all(&|i| Datum::Double(a.value(i)))
        }
        (IcebergType::String, DataType::Utf8) => {
            let a = array.as_string::<i32>();
            push_all(&|i| Datum::String(a.value(i).to_string()))
        }
        (IcebergType::String, DataType::LargeUtf8) => {
            let a = array.as_string::<i64>();
            push_all(&|i| Datum::String(a.value(i).to_string()))
        }
        (IcebergType::String, DataType::Utf8View) => {
            let a = array.as_string_view();
            push_all(&|i| Datum::String(a.value(i).to_string()))
        }
        (IcebergType::Binary, DataType::Binary) => {
            let a = array.as_binary::<i32>();
            push_all(&|i| Datum::Binary(a.value(i).to_vec()))
        }
        (IcebergType::Binary, DataType::LargeBinary) => {
            let a = array.as_binary::<i64>();
            push_all(&|i| Datum::Binary(a.value(i).to_vec()))
        }
        (IcebergType::Binary, DataType::BinaryView) => {
            let a = array.as_binary_view();
            push_all(&|i| Datum::Binary(a.value(i).to_vec()))
        }
        (IcebergType::Date, DataType::Date32) => {
            let a = array.as_primitive::<Date32Type>();
            push_all(&|i| Datum::Date(a.value(i)))
        }
        (IcebergType::Timestamp, DataType::Timestamp(unit, None)) => {
            let micros: Vec<i64> = match unit {
                TimeUnit::Second => {
                    scaled(array.as_primitive::<TimestampSecondType>().values(), |v| {
                        v * 1_000_000
                    })
                }
                TimeUnit::Millisecond => scaled(
                    array.as_primitive::<TimestampMillisecondType>().values(),
                    |v| v * 1000,
                ),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .to_vec(),
                TimeUnit::Nanosecond => scaled(
                    array.as_primitive::<TimestampNanosecondType>().values(),
                    |v| v.div_euclid(1000),
                ),
            };
            push_all(&|i| Datum::Timestamp(micros[i]))
        }
        _ => return Err(mismatch()),
    }
    Ok(out)
}

fn int_datum(ty: IcebergType, v: i64) -> Datum {
    match ty {
        // Only reached for Int8/16/32 sources, which always fit.
        IcebergType::Int => Datum::Int(v as i32),
        _ => Datum::Long(v),
    }
}

fn scaled(values: &[i64], f: impl Fn(i64) -> i64) -> Vec<i64> {
    values.iter().map(|v| f(*v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, LargeStringArray, TimestampNanosecondArray};
    use serde_json::json;

    #[test]
    fn widens_and_converts_foreign_shapes() {
        let long = ColumnSpec::new(1, "n", IcebergType::Long, false);
        let ints = Int32Array::from(vec![Some(1), None]);
        assert_eq!(
            column_to_json(&ints, &long).unwrap(),
            vec![json!(1), Value::Null]
        );

        let s = ColumnSpec::new(2, "s", IcebergType::String, false);
        let large = LargeStringArray::from(vec!["a"]);
        assert_eq!(column_to_json(&large, &s).unwrap(), vec![json!("a")]);

        let ts = ColumnSpec::new(3, "t", IcebergType::Timestamp, false);
        let nanos = TimestampNanosecondArray::from(vec![1_500_000_123]);
        assert_eq!(
            column_to_json(&nanos, &ts).unwrap(),
            vec![json!("1970-01-01T00:00:01.500000")]
        );

        let err = column_to_json(&large, &long).unwrap_err();
        assert!(err.contains("LargeUtf8") && err.contains("long"), "{err}");
    }
}
