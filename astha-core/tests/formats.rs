//! Every value SQLite can store, written through real triggers, comes back exactly from
//! each event format's encoding (native, Debezium, CloudEvents), decoded from the JSON
//! text a consumer would receive.

mod common;

use astha_core::format::{
    cloudevents, debezium, decode_native_value, Encoder, EventFormat, SourceInfo,
};
use astha_core::{Change, Row, Value};
use common::*;
use proptest::prelude::*;
use serde_json::Value as Json;

fn source() -> SourceInfo {
    SourceInfo {
        name: "shop".into(),
        db: "shop".into(),
        identity: "0f1e2d3c".into(),
    }
}

/// Encodes with `format`, prints, parses the text back: what a consumer holds.
fn wire(format: EventFormat, change: &Change) -> Json {
    let text = Encoder::new(format, source()).json_lines([change]);
    serde_json::from_slice(&text).unwrap()
}

fn native_image(event: &Json, image: &str) -> Option<Vec<(String, Value)>> {
    let row = event.get(image)?.as_object()?;
    row.iter()
        .map(|(c, v)| Some((c.clone(), decode_native_value(v)?)))
        .collect()
}

fn same(decoded: &[(String, Value)], row: &Row) -> bool {
    decoded.len() == row.columns().len()
        && row
            .columns()
            .iter()
            .zip(row.values())
            .all(|(c, v)| decoded.iter().any(|(dc, dv)| dc == c && dv.same_as(v)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_value_round_trips_through_every_format(rows in prop::collection::vec(prop::collection::vec(arb_value(), 4), 1..6)) {
        let db = TestDb::new();
        let conn = db.conn();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a BLOB, b, c REAL, d TEXT)").unwrap();
        capture().install(&conn, "t").unwrap();
        for (i, row) in rows.iter().enumerate() {
            conn.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![i as i64, row[0], row[1], row[2], row[3]]).unwrap();
            conn.execute("UPDATE t SET a = ?2, b = ?3 WHERE id = ?1",
                rusqlite::params![i as i64, row[3], row[2]]).unwrap();
            conn.execute("DELETE FROM t WHERE id = ?1", [i as i64]).unwrap();
        }
        let changes = read_all(&conn, 0, 100);
        prop_assert_eq!(changes.len(), rows.len() * 3);
        for change in &changes {
            let native = wire(EventFormat::Native, change);
            let dbz = wire(EventFormat::Debezium, change);
            let ce = wire(EventFormat::CloudEvents, change);
            prop_assert_eq!(&ce["data"], &native);
            prop_assert_eq!(dbz["source"]["lsn"].as_i64(), Some(change.lsn));
            for (image, row) in [("before", &change.before), ("after", &change.after)] {
                match row {
                    Some(row) => {
                        let n = native_image(&native, image).unwrap();
                        prop_assert!(same(&n, row), "native {} {:?} vs {:?}", image, n, row);
                        let d = debezium::decode_row(&dbz, image).unwrap();
                        prop_assert!(same(&d, row), "debezium {} {:?} vs {:?}", image, d, row);
                    }
                    None => {
                        prop_assert!(native[image].is_null());
                        prop_assert!(dbz[image].is_null());
                    }
                }
            }
        }
    }
}

#[test]
fn the_debezium_envelope_has_the_fields_its_consumers_read() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, photo BLOB, big INTEGER, x REAL)",
    )
    .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute_batch(
        "INSERT INTO t VALUES (1, 'ann', x'00ff10', 9007199254740993, 9e999);
         UPDATE t SET name = 'bo' WHERE id = 1;
         DELETE FROM t WHERE id = 1;",
    )
    .unwrap();
    let changes = read_all(&conn, 0, 10);
    let ops: Vec<Json> = changes
        .iter()
        .map(|c| wire(EventFormat::Debezium, c))
        .collect();
    assert_eq!(
        ops.iter()
            .map(|e| e["op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["c", "u", "d"]
    );
    let c = &ops[0];
    assert!(c["before"].is_null());
    assert_eq!(c["after"]["photo"], "AP8Q", "BLOBs are base64");
    assert_eq!(
        c["after"]["big"].as_i64(),
        Some(9007199254740993),
        "exact beyond 2^53"
    );
    assert_eq!(c["after"]["x"], "Infinity");
    assert_eq!(c["source"]["connector"], "sqlite");
    assert_eq!(c["source"]["table"], "t");
    assert_eq!(c["source"]["db"], "shop");
    assert_eq!(c["source"]["snapshot"], "false");
    assert_eq!(c["source"]["types"]["after"]["photo"], "blob");
    assert_eq!(c["source"]["types"]["after"]["x"], "real");
    assert_eq!(c["ts_ms"], c["source"]["ts_ms"]);
    assert!(c.get("transaction").is_some());
    assert_eq!(ops[1]["before"]["name"], "ann");
    assert_eq!(ops[1]["after"]["name"], "bo");
    assert!(ops[2]["after"].is_null());
    assert_eq!(debezium::key(&changes[2]), serde_json::json!({"id": 1}));
}

#[test]
fn cloudevents_carry_the_required_attributes_and_stable_ids() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    let change = &read_all(&conn, 0, 10)[0];
    let e = wire(EventFormat::CloudEvents, change);
    for attr in [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
    ] {
        assert!(e[attr].is_string(), "{attr} missing: {e}");
    }
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["id"], format!("0f1e2d3c:{}", change.lsn));
    assert_eq!(e["type"], "io.astha.change.insert");
    assert_eq!(e["subject"], "t");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        e,
        wire(EventFormat::CloudEvents, change),
        "same event every time"
    );
    let headers = cloudevents::binary_headers(change, &source());
    assert!(headers.iter().any(|(k, v)| k == "ce-id" && *v == e["id"]));
    assert!(headers.iter().all(|(k, _)| k != "ce-datacontenttype"));
}

#[test]
fn the_schema_wrapper_and_the_key_are_what_kafka_connect_writes() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, photo BLOB, PRIMARY KEY (a, b))")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute_batch("INSERT INTO t VALUES (7, 'x', x'01'); DELETE FROM t;")
        .unwrap();
    let changes = read_all(&conn, 0, 10);
    let plain = Encoder::new(EventFormat::Debezium, source());
    let wrapped = plain.clone().with_debezium_schemas(true);
    let event = wrapped.encode(&changes[0]);
    assert_eq!(
        event["payload"],
        plain.encode(&changes[0]),
        "the payload is the envelope"
    );
    let schema = &event["schema"];
    assert_eq!(schema["name"], "shop.shop.t.Envelope");
    let fields: Vec<&str> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["before", "after", "source", "op", "ts_ms", "transaction"]
    );
    let after: Vec<(&str, &str)> = schema["fields"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(after, [("a", "int64"), ("b", "string"), ("photo", "bytes")]);
    // The key: the primary-key columns, of the old row for a delete.
    assert_eq!(
        plain.key(&changes[1]),
        serde_json::json!({"a": 7, "b": "x"})
    );
    let key = wrapped.key(&changes[1]);
    assert_eq!(key["payload"], serde_json::json!({"a": 7, "b": "x"}));
    assert_eq!(key["schema"]["name"], "shop.shop.t.Key");
    assert_eq!(key["schema"]["fields"][0]["type"], "int64");
    // Other formats are not wrapped.
    let native = Encoder::new(EventFormat::Native, source()).with_debezium_schemas(true);
    assert!(native.encode(&changes[0]).get("schema").is_none());
}

#[test]
fn snapshot_rows_are_read_events_in_every_format() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    capture().install(&conn, "t").unwrap();
    let snapshot =
        astha_core::snapshot::take(&db.path, "__cdc_log", "c", &["t".into()], "initial").unwrap();
    let (rows, _) = snapshot
        .read_chunk(astha_core::snapshot::Cursor::default(), 10)
        .unwrap();
    let debezium: Vec<Json> = rows
        .iter()
        .map(|c| wire(EventFormat::Debezium, c))
        .collect();
    assert_eq!(debezium[0]["op"], "r");
    assert_eq!(debezium[0]["source"]["snapshot"], "true");
    assert_eq!(debezium[1]["source"]["snapshot"], "last");
    assert!(debezium[0]["before"].is_null());
    assert_eq!(debezium[1]["after"]["v"], "b");
    assert_eq!(wire(EventFormat::Native, &rows[0])["op"], "READ");
    let ce: Vec<Json> = rows
        .iter()
        .map(|c| wire(EventFormat::CloudEvents, c))
        .collect();
    assert_eq!(ce[0]["type"], "io.astha.change.read");
    assert_ne!(
        ce[0]["id"], ce[1]["id"],
        "rows of one snapshot share its LSN, not their id"
    );
}

/// SQLite stores TEXT without checking it is UTF-8. `CAST(x'fffe41' AS TEXT)` used to
/// arrive as U+FFFD U+FFFD 'A' in every format; each now carries the three bytes.
#[test]
fn text_that_is_not_utf8_keeps_its_exact_bytes_in_every_format() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, u)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute_batch(
        "INSERT INTO t VALUES (1, CAST(x'fffe41' AS TEXT), CAST(x'c3' AS TEXT));
         UPDATE t SET s = 'ok', u = CAST(x'80' AS TEXT) WHERE id = 1;",
    )
    .unwrap();
    let changes = read_all(&conn, 0, 10);
    let native = wire(EventFormat::Native, &changes[0]);
    assert_eq!(native["after"]["s"], serde_json::json!({"$text": "FFFE41"}));
    assert_eq!(native["after"]["u"], serde_json::json!({"$text": "C3"}));
    let ce = wire(EventFormat::CloudEvents, &changes[0]);
    assert_eq!(ce["data"], native);
    let dbz = wire(EventFormat::Debezium, &changes[0]);
    assert_eq!(dbz["after"]["s"], "\u{FFFD}\u{FFFD}A", "readable form");
    assert_eq!(dbz["source"]["text_bytes"]["after"]["s"], "//5B");
    let update = wire(EventFormat::Debezium, &changes[1]);
    assert_eq!(update["source"]["text_bytes"]["before"]["s"], "//5B");
    assert_eq!(update["source"]["text_bytes"]["after"]["u"], "gA==");
    assert!(update["source"]["text_bytes"]["after"].get("s").is_none());
    for (event, image, column, bytes) in [
        (&dbz, "after", "s", &b"\xff\xfeA"[..]),
        (&update, "before", "s", b"\xff\xfeA"),
        (&update, "after", "u", b"\x80"),
    ] {
        let row = debezium::decode_row(event, image).unwrap();
        let (_, value) = row.iter().find(|(c, _)| c == column).unwrap();
        let sql: Vec<u8> = conn
            .query_row("SELECT CAST(?1 AS BLOB)", [value], |r| r.get(0))
            .unwrap();
        assert_eq!(sql, bytes, "{image}.{column} decodes to the stored bytes");
    }
    let back = decode_native_value(&native["after"]["s"]).unwrap();
    let typed: Vec<u8> = conn
        .query_row("SELECT CAST(?1 AS BLOB)", [&back], |r| r.get(0))
        .unwrap();
    assert_eq!(typed, b"\xff\xfeA");
}
