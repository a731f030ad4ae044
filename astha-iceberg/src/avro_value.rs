//! Small helpers to build and take apart generic Avro values.
//!
//! Manifests written by other Iceberg writers order fields differently and may omit optional
//! ones, so reading goes by field name, and unions are unwrapped wherever they appear.

use std::collections::BTreeMap;

use apache_avro::types::Value;

/// `["null", T]` union holding `v`, or null.
pub fn opt(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// A record value from `(name, value)` pairs.
pub fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// An Iceberg map as Avro: an array of `{key, value}` records.
pub fn int_map<V>(entries: impl IntoIterator<Item = (i32, V)>, f: impl Fn(V) -> Value) -> Value {
    Value::Array(
        entries
            .into_iter()
            .map(|(k, v)| record(vec![("key", Value::Int(k)), ("value", f(v))]))
            .collect(),
    )
}

/// The value inside a union, or the value itself.
pub fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

/// Field `name` of a record, unwrapped; `None` if absent or null.
pub fn field<'a>(rec: &'a Value, name: &str) -> Option<&'a Value> {
    match unwrap_union(rec) {
        Value::Record(fields) => fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| unwrap_union(v))
            .filter(|v| !matches!(v, Value::Null)),
        _ => None,
    }
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Long(x) => Some(*x),
        Value::Int(x) => Some(i64::from(*x)),
        _ => None,
    }
}

pub fn as_i32(v: &Value) -> Option<i32> {
    match v {
        Value::Int(x) => Some(*x),
        _ => None,
    }
}

pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// An Iceberg map `int -> T` read back from its array-of-records form (or an Avro map with
/// string keys, which some writers used for older manifests).
pub fn read_int_map<T>(v: &Value, f: impl Fn(&Value) -> Option<T>) -> Option<BTreeMap<i32, T>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| Some((as_i32(field(item, "key")?)?, f(field(item, "value")?)?)))
            .collect(),
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Some((k.parse().ok()?, f(unwrap_union(v))?)))
            .collect(),
        _ => None,
    }
}

pub fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) | Value::Fixed(_, b) => Some(b.clone()),
        _ => None,
    }
}
