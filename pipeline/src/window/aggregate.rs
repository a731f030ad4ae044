//! Aggregate accumulators: what one window remembers per aggregate, and its result.
//!
//! Owns the arithmetic and the ordering of values. It promises: a result never changes a
//! value's type or digits silently (a `sum` of integers is an INTEGER, exact; past i64 it
//! is the exact decimal as TEXT; with any REAL it is REAL, as SQLite's `sum`); `min` and
//! `max` order values as SQLite does (numbers < TEXT < BLOB, NULL left out); `first` and
//! `last` are by LSN, also across merged sessions; `collect` and `count_distinct` hold at
//! most `max_values` values and count the rest in `<name>_omitted`. It never reads a
//! change: [`super::state`] hands it values.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use astha_core::Value;
use serde::{Deserialize, Serialize};

use super::config::AggregateFn;

/// A value in the state's stored (JSON) form: [`Value::to_json`], exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stored(pub serde_json::Value);

impl Stored {
    pub fn from_value(v: &Value) -> Stored {
        Stored(v.to_json())
    }

    pub fn value(&self) -> Value {
        astha_core::format::decode_native_value(&self.0).unwrap_or(Value::Null)
    }
}

/// One aggregate's state in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Acc {
    Count {
        n: u64,
    },
    Sum {
        /// As decimal text: JSON numbers stop at 64 bits.
        #[serde(with = "i128_text")]
        int: i128,
        real: f64,
        reals: bool,
        n: u64,
    },
    Min {
        v: Option<Stored>,
    },
    Max {
        v: Option<Stored>,
    },
    First {
        lsn: i64,
        v: Option<Stored>,
    },
    Last {
        lsn: i64,
        v: Option<Stored>,
    },
    Collect {
        items: Vec<(i64, Stored)>,
        omitted: u64,
    },
    CountDistinct {
        seen: BTreeSet<String>,
        omitted: u64,
    },
}

impl Acc {
    /// The empty state of `function` (`avg` keeps a sum).
    pub fn new(function: AggregateFn) -> Acc {
        match function {
            AggregateFn::Count => Acc::Count { n: 0 },
            AggregateFn::Sum | AggregateFn::Avg => Acc::Sum {
                int: 0,
                real: 0.0,
                reals: false,
                n: 0,
            },
            AggregateFn::Min => Acc::Min { v: None },
            AggregateFn::Max => Acc::Max { v: None },
            AggregateFn::First => Acc::First {
                lsn: i64::MAX,
                v: None,
            },
            AggregateFn::Last => Acc::Last {
                lsn: i64::MIN,
                v: None,
            },
            AggregateFn::Collect => Acc::Collect {
                items: Vec::new(),
                omitted: 0,
            },
            AggregateFn::CountDistinct => Acc::CountDistinct {
                seen: BTreeSet::new(),
                omitted: 0,
            },
        }
    }

    /// Takes one change's value (`None`: the change counts but has no value, e.g. a
    /// `count` without a column).
    pub fn add(&mut self, lsn: i64, value: Option<&Value>, max_values: usize) {
        match self {
            Acc::Count { n } => {
                if !matches!(value, Some(Value::Null)) {
                    *n += 1;
                }
            }
            Acc::Sum {
                int,
                real,
                reals,
                n,
            } => match value.and_then(numeric) {
                Some(Num::Int(i)) => {
                    *int += i as i128;
                    *n += 1;
                }
                Some(Num::Real(r)) => {
                    *real += r;
                    *reals = true;
                    *n += 1;
                }
                None => {}
            },
            Acc::Min { v } => keep(v, value, Ordering::Less),
            Acc::Max { v } => keep(v, value, Ordering::Greater),
            Acc::First { lsn: at, v } => {
                if lsn < *at {
                    *at = lsn;
                    *v = value.map(Stored::from_value);
                }
            }
            Acc::Last { lsn: at, v } => {
                if lsn > *at {
                    *at = lsn;
                    *v = value.map(Stored::from_value);
                }
            }
            Acc::Collect { items, omitted } => {
                let Some(value) = value else { return };
                if items.len() < max_values {
                    let at = items.partition_point(|(l, _)| *l <= lsn);
                    items.insert(at, (lsn, Stored::from_value(value)));
                } else {
                    *omitted += 1;
                }
            }
            Acc::CountDistinct { seen, omitted } => {
                let Some(value) = value.filter(|x| !matches!(x, Value::Null)) else {
                    return;
                };
                let key = value.to_json().to_string();
                if seen.contains(&key) {
                    return;
                }
                if seen.len() < max_values {
                    seen.insert(key);
                } else {
                    *omitted += 1;
                }
            }
        }
    }

    /// Folds `other` (the same function's state of a merged session) into `self`.
    pub fn merge(&mut self, other: Acc, max_values: usize) {
        match (self, other) {
            (Acc::Count { n }, Acc::Count { n: m }) => *n += m,
            (
                Acc::Sum {
                    int,
                    real,
                    reals,
                    n,
                },
                Acc::Sum {
                    int: i2,
                    real: r2,
                    reals: s2,
                    n: n2,
                },
            ) => {
                *int += i2;
                *real += r2;
                *reals |= s2;
                *n += n2;
            }
            (Acc::Min { v }, Acc::Min { v: other }) => {
                keep(v, other.map(|o| o.value()).as_ref(), Ordering::Less)
            }
            (Acc::Max { v }, Acc::Max { v: other }) => {
                keep(v, other.map(|o| o.value()).as_ref(), Ordering::Greater)
            }
            (Acc::First { lsn: at, v: mine }, Acc::First { lsn, v }) if lsn < *at => {
                *at = lsn;
                *mine = v;
            }
            (Acc::Last { lsn: at, v: mine }, Acc::Last { lsn, v }) if lsn > *at => {
                *at = lsn;
                *mine = v;
            }
            (me @ Acc::Collect { .. }, Acc::Collect { items, omitted }) => {
                for (lsn, v) in items {
                    me.add(lsn, Some(&v.value()), max_values);
                }
                if let Acc::Collect { omitted: mine, .. } = me {
                    *mine += omitted;
                }
            }
            (
                Acc::CountDistinct { seen, omitted },
                Acc::CountDistinct {
                    seen: s2,
                    omitted: o2,
                },
            ) => {
                for key in s2 {
                    if seen.len() < max_values {
                        seen.insert(key);
                    } else if !seen.contains(&key) {
                        *omitted += 1;
                    }
                }
                *omitted += o2;
            }
            _ => {}
        }
    }

    /// The result value(s): one, plus the omitted count for `collect`/`count_distinct`.
    pub fn result(&self, function: AggregateFn) -> Vec<Value> {
        match self {
            Acc::Count { n } => vec![Value::Integer(*n as i64)],
            Acc::Sum {
                int,
                real,
                reals,
                n,
            } => {
                if function == AggregateFn::Avg {
                    return vec![if *n == 0 {
                        Value::Null
                    } else {
                        Value::Real((*int as f64 + real) / *n as f64)
                    }];
                }
                vec![if *n == 0 {
                    Value::Null
                } else if *reals {
                    Value::Real(*int as f64 + real)
                } else {
                    i64::try_from(*int)
                        .map_or_else(|_| Value::Text(int.to_string()), Value::Integer)
                }]
            }
            Acc::Min { v } | Acc::Max { v } | Acc::First { v, .. } | Acc::Last { v, .. } => {
                vec![v.as_ref().map_or(Value::Null, Stored::value)]
            }
            Acc::Collect { items, omitted } => {
                let array: Vec<serde_json::Value> =
                    items.iter().map(|(_, v)| v.0.clone()).collect();
                vec![
                    Value::Text(serde_json::Value::Array(array).to_string()),
                    Value::Integer(*omitted as i64),
                ]
            }
            Acc::CountDistinct { seen, omitted } => {
                vec![
                    Value::Integer(seen.len() as i64),
                    Value::Integer(*omitted as i64),
                ]
            }
        }
    }
}

/// Keeps `value` in `v` when it orders `want` against what `v` holds (NULL never kept).
fn keep(v: &mut Option<Stored>, value: Option<&Value>, want: Ordering) {
    let Some(new) = value.filter(|x| !matches!(x, Value::Null)) else {
        return;
    };
    if v.as_ref()
        .is_none_or(|old| compare(new, &old.value()) == want)
    {
        *v = Some(Stored::from_value(new));
    }
}

/// An i128 stored as its decimal text.
mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

enum Num {
    Int(i64),
    Real(f64),
}

/// INTEGER and REAL as themselves, TEXT that reads as a number as that number; else None.
fn numeric(value: &Value) -> Option<Num> {
    match value {
        Value::Integer(i) => Some(Num::Int(*i)),
        Value::Real(r) => Some(Num::Real(*r)),
        Value::Text(t) => {
            let t = t.trim();
            t.parse::<i64>().map(Num::Int).ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite())
                    .map(Num::Real)
            })
        }
        _ => None,
    }
}

/// SQLite's order of non-NULL values: numbers (by value) < TEXT (by bytes) < BLOB.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    fn class(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) | Value::TextBytes(_) => 2,
            Value::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Integer(x), Value::Real(y)) => (*x as f64).total_cmp(y),
        (Value::Real(x), Value::Integer(y)) => x.total_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ if class(a) == 2 && class(b) == 2 => a
            .text_bytes()
            .unwrap_or_default()
            .cmp(b.text_bytes().unwrap_or_default()),
        _ => class(a).cmp(&class(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_stay_exact_and_min_max_follow_sqlite_order() {
        let mut s = Acc::new(AggregateFn::Sum);
        s.add(1, Some(&Value::Integer(i64::MAX)), 10);
        s.add(2, Some(&Value::Integer(1)), 10);
        assert_eq!(
            s.result(AggregateFn::Sum),
            [Value::Text("9223372036854775808".into())]
        );
        let mut m = Acc::new(AggregateFn::Max);
        for (i, v) in [
            Value::Integer(3),
            Value::Text("a".into()),
            Value::Real(9.5),
            Value::Null,
        ]
        .iter()
        .enumerate()
        {
            m.add(i as i64, Some(v), 10);
        }
        assert_eq!(m.result(AggregateFn::Max), [Value::Text("a".into())]);
        let mut n = Acc::new(AggregateFn::Min);
        n.add(1, Some(&Value::Real(2.5)), 10);
        n.add(2, Some(&Value::Integer(2)), 10);
        assert_eq!(n.result(AggregateFn::Min), [Value::Integer(2)]);
    }

    #[test]
    fn held_values_are_bounded_and_the_rest_counted() {
        let mut c = Acc::new(AggregateFn::Collect);
        for i in 0..5 {
            c.add(i, Some(&Value::Integer(i)), 3);
        }
        assert_eq!(
            c.result(AggregateFn::Collect),
            [Value::Text("[0,1,2]".into()), Value::Integer(2)]
        );
        let mut d = Acc::new(AggregateFn::CountDistinct);
        for i in [1, 1, 2, 3, 4, 2] {
            d.add(0, Some(&Value::Integer(i)), 3);
        }
        assert_eq!(
            d.result(AggregateFn::CountDistinct),
            [Value::Integer(3), Value::Integer(1)]
        );
    }
}
