//! librdkafka against Kafka's limits and record rules (issue #12): a consumer whose
//! `fetch.max.bytes` is just under its `receive.message.max.bytes` reads partitions of
//! ~1 MB messages, and a keyless record to a compacted topic fails with INVALID_RECORD.
//!
//! Run against any broker with `SLUICE_BOOTSTRAP=host:port`; see `common/mod.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The value of message `i` of partition `p`: sizes from 300 kB to 950 kB, so that the
/// first partition of a fetch leaves room that the next partition's batch overflows.
fn value_of(p: i32, i: usize) -> Vec<u8> {
    const SIZES: [usize; 4] = [300_000, 950_000, 700_000, 450_000];
    let len = SIZES[(p as usize + i) % SIZES.len()];
    let mut v = format!("p{p}-m{i}-").into_bytes();
    v.resize(len, b'a' + ((p as usize * 7 + i) % 26) as u8);
    v
}

#[test]
fn consumer_with_fetch_max_bytes_reads_large_messages() {
    run_bounded(
        "consumer_with_fetch_max_bytes_reads_large_messages",
        TEST_LIMIT,
        || {
            const PARTS: i32 = 4;
            const PER_PARTITION: usize = 6;
            let broker = Broker::start();
            let bs = broker.bootstrap().to_string();
            let topic = unique_name("limits-large");
            create_topic(&bs, &topic, PARTS, &[]);

            let mut config = producer_config(&bs);
            // One message per batch, each under the client's and broker's message.max.bytes.
            config
                .set("linger.ms", "0")
                .set("message.max.bytes", "1000000");
            let (producer, log) = logged_producer(&config);
            for p in 0..PARTS {
                for i in 0..PER_PARTITION {
                    let value = value_of(p, i);
                    let key = format!("k{i}");
                    let id = p as usize * PER_PARTITION + i;
                    producer
                        .send(
                            BaseRecord::with_opaque_to(&topic, id)
                                .partition(p)
                                .key(&key)
                                .payload(&value),
                        )
                        .map_err(|(e, _)| e)
                        .expect("queue message");
                }
            }
            producer.flush(Duration::from_secs(60)).expect("flush");
            let total = (PARTS as usize * PER_PARTITION) as u64;
            assert_eq!(log.acked(), total, "failed: {:?}", log.snapshot());

            let consumer: rdkafka::consumer::BaseConsumer = consumer_config(&bs)
                .set("fetch.max.bytes", "1000000")
                .set("receive.message.max.bytes", "1000512")
                .create()
                .expect("create consumer");
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTS {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .expect("add partition");
            }
            consumer.assign(&tpl).expect("assign");
            let mut got: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < total as usize {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {total} messages arrived: {:?}",
                    got.len(),
                    got.keys().collect::<Vec<_>>()
                );
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        let value = m.payload().expect("payload").to_vec();
                        got.insert((m.partition(), m.offset()), value);
                    }
                    // Any error (the "message too large" disconnect among them) is a failure.
                    Some(Err(e)) => panic!("consumer error: {e}"),
                    None => {}
                }
            }
            for p in 0..PARTS {
                for i in 0..PER_PARTITION {
                    let v = got.get(&(p, i as i64)).expect("message present");
                    assert!(
                        v == &value_of(p, i),
                        "partition {p} offset {i}: wrong value"
                    );
                }
            }
            broker.assert_alive();
        },
    );
}

#[test]
fn keyless_record_to_compacted_topic_is_invalid_record() {
    run_bounded(
        "keyless_record_to_compacted_topic_is_invalid_record",
        TEST_LIMIT,
        || {
            let broker = Broker::start();
            let bs = broker.bootstrap().to_string();
            let topic = unique_name("limits-compact");
            create_topic(&bs, &topic, 1, &[("cleanup.policy", "compact")]);

            let mut config = producer_config(&bs);
            // INVALID_RECORD is not retriable; keep retries from hiding a wrong code.
            config.set("message.timeout.ms", "20000");
            let (producer, log) = logged_producer(&config);
            // Apart, so that librdkafka cannot put both in one batch (which fails whole).
            producer
                .send(BaseRecord::<str, str, usize>::with_opaque_to(&topic, 0).payload("no key"))
                .map_err(|(e, _)| e)
                .expect("queue keyless");
            producer.flush(Duration::from_secs(30)).expect("flush");
            producer
                .send(
                    BaseRecord::with_opaque_to(&topic, 1)
                        .key("k")
                        .payload("with key"),
                )
                .map_err(|(e, _)| e)
                .expect("queue keyed");
            producer.flush(Duration::from_secs(30)).expect("flush");
            let reports = log.snapshot();
            let of = |id| {
                reports
                    .iter()
                    .find(|d| d.id == id)
                    .map(|d| d.result.clone())
                    .expect("a delivery report")
            };
            match of(0) {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord)) => {}
                other => panic!("keyless record: {other:?}, want INVALID_RECORD"),
            }
            assert!(of(1).is_ok(), "keyed record: {:?}", of(1));
            // Only the keyed record is in the log.
            assert_eq!(watermarks(&bs, &topic, 0).1, 1);
        },
    );
}
