//! The broker destinations of the sinks suite: changes per second into RabbitMQ and into
//! a Kafka-protocol broker through `astha run`, beside the same client (lapin, rdkafka)
//! publishing the same payloads (the captured changes, debezium-encoded, with the same
//! properties or headers) with no Astha: in windows as the sink publishes them (256
//! messages then their confirms; 1000 records then their acknowledgements), and one at a
//! time (publish, await the confirm; the first 5000 only).

use std::time::Instant;

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_core::format::{debezium, Encoder, EventFormat, SourceInfo};
use astha_core::Change;
use astha_pipeline::{plan, PipelineSpec};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::sinks::{captured_changes, measure_async, new_db, DestinationRun};

/// The RabbitMQ sink's default window (`max_in_flight`).
const AMQP_WINDOW: usize = 256;
/// The Kafka sink's default window (`max_in_flight`).
const KAFKA_WINDOW: usize = 1000;
/// Messages of the one-at-a-time baseline (each waits for its confirm: slow).
const SINGLE: usize = 5000;

fn encoder() -> Encoder {
    Encoder::new(
        EventFormat::Debezium,
        SourceInfo {
            name: "sinks".into(),
            db: "sinks".into(),
            identity: "bench".into(),
        },
    )
}

/// `astha run` with one sink (TOML after `[[sinks]]`, named `bus`) on the wide table.
fn through_pipeline(data: &[Vec<rusqlite::types::Value>], sink: &str) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"t\"]\ninstall = true\n\
         [[sinks]]\nname = \"bus\"\nformat = \"debezium\"\n{sink}\n",
        path.display(),
    );
    let spec = PipelineSpec::parse(&text, |_| None).expect("pipeline");
    let engine = AsthaConfig::default();
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine).expect("plan");
    let system = actix::System::new();
    system
        .block_on(async {
            let running = checked.start(&engine).await.expect("start");
            let rates = measure_async(&path, "bus", data).await;
            running.stop().await.expect("stop");
            rates
        })
        .1
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// RabbitMQ at `url`: a durable topic exchange with one durable queue bound to it.
pub fn rabbitmq(data: &[Vec<rusqlite::types::Value>], url: &str) -> DestinationRun {
    let exchange = format!("astha_bench_{}", std::process::id());
    let queue = format!("{exchange}_q");
    let rt = runtime();
    let (connection, channel) = rt.block_on(async {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to ASTHA_AMQP_URL");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        (connection, channel)
    });
    let delivered_rate = through_pipeline(
        data,
        &format!("type = \"rabbitmq\"\nurl = \"{url}\"\nexchange = \"{exchange}\"\n"),
    );

    let changes = captured_changes(data);
    let encoder = encoder();
    // Encoded before the clock starts: the raw rate is the client's and the broker's.
    let messages: Vec<(String, Vec<u8>, BasicProperties)> = changes
        .iter()
        .map(|change| {
            let payload = serde_json::to_vec(&encoder.encode(change)).expect("encode");
            let mut headers = FieldTable::default();
            headers.insert("astha-lsn".into(), AMQPValue::LongLongInt(change.lsn));
            headers.insert(
                "astha-table".into(),
                AMQPValue::LongString(LongString::from(change.table.to_string())),
            );
            headers.insert(
                "astha-operation".into(),
                AMQPValue::LongString(LongString::from(change.op.name().to_ascii_lowercase())),
            );
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(format!("bench:{}", change.lsn)))
                .with_headers(headers);
            let key = format!(
                "cdc.{}.{}",
                change.table,
                change.op.name().to_ascii_lowercase()
            );
            (key, payload, properties)
        })
        .collect();
    let run = |window: usize, n: usize| -> f64 {
        let start = Instant::now();
        rt.block_on(async {
            for chunk in messages[..n].chunks(window) {
                let mut confirms = Vec::with_capacity(chunk.len());
                for (key, payload, properties) in chunk {
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            payload,
                            properties.clone(),
                        )
                        .await
                        .expect("publish");
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    assert!(confirm.await.expect("confirm").is_ack(), "confirmed");
                }
            }
        });
        n as f64 / start.elapsed().as_secs_f64()
    };
    let raw_batched_rate = run(AMQP_WINDOW, messages.len());
    let raw_single_rate = run(1, messages.len().min(SINGLE));
    rt.block_on(async {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
        channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await
            .expect("delete exchange");
        connection.close(200, "done".into()).await.expect("close");
    });
    DestinationRun {
        label: "RabbitMQ 3.10 (`type = \"rabbitmq\"`, persistent, confirms, loopback)".into(),
        rows: data.len(),
        delivered_rate,
        raw_batched_rate,
        raw_single_rate,
    }
}

/// A Kafka-protocol broker at `brokers` (tansu, memory storage, in CI).
pub fn kafka(data: &[Vec<rusqlite::types::Value>], brokers: &str) -> DestinationRun {
    let run_id = std::process::id();
    let delivered_rate = through_pipeline(
        data,
        &format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"astha_bench_{run_id}.{{table}}\"\n"
        ),
    );
    let changes = captured_changes(data);
    let encoder = encoder();
    let rt = runtime();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let records: Vec<(Vec<u8>, Vec<u8>, Change)> = changes
        .iter()
        .map(|c| {
            (
                serde_json::to_vec(&debezium::key(c)).expect("key"),
                serde_json::to_vec(&encoder.encode(c)).expect("value"),
                c.clone(),
            )
        })
        .collect();
    let mut round = 0;
    let mut run = |window: usize, n: usize| -> f64 {
        round += 1;
        let topic = format!("astha_bench_raw_{run_id}_{round}");
        let start = Instant::now();
        rt.block_on(async {
            for chunk in records[..n].chunks(window) {
                let mut deliveries = Vec::with_capacity(chunk.len());
                for (key, value, change) in chunk {
                    let lsn = change.lsn.to_string();
                    let operation = change.op.name().to_ascii_lowercase();
                    let id = format!("bench:{lsn}");
                    let headers = OwnedHeaders::new_with_capacity(4)
                        .insert(Header {
                            key: "astha-lsn",
                            value: Some(lsn.as_str()),
                        })
                        .insert(Header {
                            key: "astha-table",
                            value: Some(&*change.table),
                        })
                        .insert(Header {
                            key: "astha-operation",
                            value: Some(operation.as_str()),
                        })
                        .insert(Header {
                            key: "astha-id",
                            value: Some(id.as_str()),
                        });
                    let record = FutureRecord::to(&topic)
                        .key(key)
                        .payload(value)
                        .headers(headers);
                    deliveries.push(
                        producer
                            .send_result(record)
                            .map_err(|(e, _)| e)
                            .expect("send"),
                    );
                }
                for delivery in deliveries {
                    delivery
                        .await
                        .expect("delivery")
                        .map_err(|(e, _)| e)
                        .expect("ack");
                }
            }
        });
        n as f64 / start.elapsed().as_secs_f64()
    };
    let raw_batched_rate = run(KAFKA_WINDOW, records.len());
    let raw_single_rate = run(1, records.len().min(SINGLE));
    DestinationRun {
        label:
            "tansu 0.6, Kafka protocol (`type = \"kafka\"`, idempotent, memory storage, loopback)"
                .into(),
        rows: data.len(),
        delivered_rate,
        raw_batched_rate,
        raw_single_rate,
    }
}
