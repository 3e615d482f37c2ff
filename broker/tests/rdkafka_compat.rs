//! Compatibility with librdkafka (through the `rdkafka` crate and its bundled librdkafka):
//! idempotent produce and assign-style consume, offsets by time, seek, watermarks, the
//! admin API, and the compression codecs.
//!
//! Run against any broker with `SLUICE_BOOTSTRAP=host:port`; see `common/mod.rs`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{
    AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const TEST_LIMIT: Duration = Duration::from_secs(90);

fn key_of(i: usize) -> String {
    format!("key-{:03}", i % 101)
}

fn value_of(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i:06}-").into_bytes();
    v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 64));
    v
}

fn bin_header_of(i: usize) -> Vec<u8> {
    vec![(i & 0xff) as u8, (i >> 8) as u8, 0x00, 0xff]
}

/// ≥ 10,000 keyed messages with two headers and explicit timestamps through an idempotent
/// acks=all producer into 4 partitions, then read back with `assign` and checked one by
/// one; then replay, offsets_for_times, seek and watermarks.
#[test]
fn idempotent_produce_then_assign_consume() {
    run_bounded("idempotent_produce_then_assign_consume", TEST_LIMIT, || {
        const N: usize = 10_000;
        const PARTS: i32 = 4;
        let broker = Broker::start();
        let bs = broker.bootstrap().to_string();
        let topic = unique_name("compat-idem");
        create_topic(&bs, &topic, PARTS, &[]);

        // Timestamps a little in the past, one millisecond apart, increasing with i.
        let base_ts = now_ms() - 10 * 60 * 1000;
        let (producer, log) = logged_producer(&idempotent_producer_config(&bs));
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..N {
            let key = key_of(i);
            let value = value_of(i);
            let seq = i.to_string();
            let bin = bin_header_of(i);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "seq",
                    value: Some(seq.as_bytes()),
                })
                .insert(Header {
                    key: "bin",
                    value: Some(&bin[..]),
                });
            let rec = BaseRecord::with_opaque_to(&topic, i)
                .key(key.as_bytes())
                .payload(&value[..])
                .headers(headers)
                .timestamp(base_ts + i as i64);
            send_retrying(&producer, rec, deadline);
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
        let reports = log.snapshot();
        assert_eq!(reports.len(), N, "one delivery report per message");

        // (partition, offset) -> message index, from the delivery reports.
        let mut at: HashMap<(i32, i64), usize> = HashMap::new();
        let mut per_part: HashMap<i32, usize> = HashMap::new();
        for r in &reports {
            let off = match &r.result {
                Ok(o) => *o,
                Err(e) => panic!("message {} not delivered: {e:?}", r.id),
            };
            assert!(
                at.insert((r.partition, off), r.id).is_none(),
                "two messages acked at {}/{off}",
                r.partition
            );
            *per_part.entry(r.partition).or_default() += 1;
        }
        assert_eq!(
            per_part.len(),
            PARTS as usize,
            "keys spread over all partitions: {per_part:?}"
        );
        // Keys map to one partition each.
        let mut key_part: HashMap<String, i32> = HashMap::new();
        for r in &reports {
            let prev = key_part.insert(key_of(r.id), r.partition);
            assert!(
                prev.is_none() || prev == Some(r.partition),
                "key {} in two partitions",
                key_of(r.id)
            );
        }

        let read = read_to_end(&bs, &topic, PARTS, Duration::from_secs(60));
        let mut total = 0;
        for p in 0..PARTS {
            let msgs = &read[&p];
            assert_eq!(
                msgs.len(),
                per_part[&p],
                "partition {p}: read back as many as acked"
            );
            let mut last_i = None;
            for (n, m) in msgs.iter().enumerate() {
                assert_eq!(
                    m.offset(),
                    n as i64,
                    "partition {p}: offsets contiguous from 0"
                );
                let i = *at
                    .get(&(p, m.offset()))
                    .unwrap_or_else(|| panic!("no ack for {p}/{}", m.offset()));
                check_message(m, i, base_ts);
                if let Some(l) = last_i {
                    assert!(i > l, "partition {p}: send order kept ({l} then {i})");
                }
                last_i = Some(i);
            }
            total += msgs.len();

            let (low, high) = watermarks(&bs, &topic, p);
            assert_eq!(
                (low, high),
                (0, msgs.len() as i64),
                "partition {p} watermarks"
            );
        }
        assert_eq!(total, N);

        // Replay partition 1 from an explicit offset 0 on a fresh consumer.
        let c = consumer(&bs);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 1, Offset::Offset(0))
            .unwrap();
        c.assign(&tpl).unwrap();
        let replay = poll_n(&c, read[&1].len(), Duration::from_secs(30));
        for (a, b) in replay.iter().zip(read[&1].iter()) {
            assert_eq!(
                (a.offset(), a.key(), a.payload()),
                (b.offset(), b.key(), b.payload()),
                "replay"
            );
        }

        // Seek back on the same (now fetching) consumer to the middle of partition 1.
        let mid = read[&1].len() as i64 / 2;
        c.seek(&topic, 1, Offset::Offset(mid), Duration::from_secs(10))
            .expect("seek");
        let after_seek = poll_n(&c, 1, Duration::from_secs(30));
        assert_eq!(after_seek[0].offset(), mid, "first message after seek");
        check_message(&after_seek[0], at[&(1, mid)], base_ts);

        // offsets_for_times: the middle of the run, before everything, after everything.
        let t_mid = base_ts + (N / 2) as i64;
        let lookup = |ts: i64| -> HashMap<i32, Offset> {
            let mut q = TopicPartitionList::new();
            for p in 0..PARTS {
                q.add_partition_offset(&topic, p, Offset::Offset(ts))
                    .unwrap();
            }
            let r = c
                .offsets_for_times(q, Duration::from_secs(20))
                .expect("offsets_for_times");
            r.elements()
                .iter()
                .map(|e| {
                    e.error().unwrap_or_else(|err| {
                        panic!("offsets_for_times {}: {err:?}", e.partition())
                    });
                    (e.partition(), e.offset())
                })
                .collect()
        };
        let mid_offsets = lookup(t_mid);
        let before = lookup(base_ts - 60_000);
        let after = lookup(base_ts + N as i64 + 60_000);
        for p in 0..PARTS {
            let expected = read[&p]
                .iter()
                .find(|m| m.timestamp().to_millis().unwrap() >= t_mid)
                .map(|m| Offset::Offset(m.offset()))
                .unwrap_or(Offset::End);
            assert_eq!(
                mid_offsets[&p], expected,
                "partition {p}: offset for time {t_mid}"
            );
            assert_eq!(
                before[&p],
                Offset::Offset(0),
                "partition {p}: time before all messages"
            );
            assert_eq!(
                after[&p],
                Offset::End,
                "partition {p}: time after all messages"
            );
        }

        // ... and consume from the looked-up offsets.
        let c2 = consumer(&bs);
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTS {
            if let Offset::Offset(o) = mid_offsets[&p] {
                tpl.add_partition_offset(&topic, p, Offset::Offset(o))
                    .unwrap();
            }
        }
        let want = tpl.count();
        c2.assign(&tpl).unwrap();
        let mut firsts: HashMap<i32, OwnedMessage> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while firsts.len() < want {
            assert!(
                Instant::now() < deadline,
                "consume from offsets_for_times timed out"
            );
            if let Some(r) = c2.poll(Duration::from_millis(200)) {
                let m = r.expect("consume");
                firsts.entry(m.partition()).or_insert_with(|| m.detach());
            }
        }
        for (p, m) in &firsts {
            assert_eq!(
                Offset::Offset(m.offset()),
                mid_offsets[p],
                "partition {p}: started at looked-up offset"
            );
            assert!(m.timestamp().to_millis().unwrap() >= t_mid);
        }
        broker.assert_alive();
    });
}

fn check_message(m: &OwnedMessage, i: usize, base_ts: i64) {
    let where_ = format!("{}/{}", m.partition(), m.offset());
    assert_eq!(m.key(), Some(key_of(i).as_bytes()), "{where_}: key");
    assert_eq!(m.payload(), Some(&value_of(i)[..]), "{where_}: value");
    assert_eq!(
        m.timestamp(),
        Timestamp::CreateTime(base_ts + i as i64),
        "{where_}: timestamp"
    );
    let h = m
        .headers()
        .unwrap_or_else(|| panic!("{where_}: no headers"));
    assert_eq!(h.count(), 2, "{where_}: header count");
    let h0 = h.get(0);
    let h1 = h.get(1);
    assert_eq!(
        (h0.key, h0.value),
        ("seq", Some(i.to_string().as_bytes())),
        "{where_}: header 0"
    );
    assert_eq!(
        (h1.key, h1.value),
        ("bin", Some(&bin_header_of(i)[..])),
        "{where_}: header 1"
    );
}

fn poll_n(c: &rdkafka::consumer::BaseConsumer, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "poll_n: {} of {n} messages before timeout",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consumer error: {e:?}"),
        }
    }
    out
}

/// Produces `n` small messages to `topic`/`partition`; returns their offsets.
fn produce_n(bs: &str, topic: &str, partition: i32, n: usize) -> Vec<i64> {
    let (p, log) = logged_producer(&producer_config(bs));
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..n {
        let v = format!("m{i}");
        send_retrying(
            &p,
            BaseRecord::with_opaque_to(topic, i)
                .partition(partition)
                .payload(v.as_bytes()),
            deadline,
        );
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let mut r = log.snapshot();
    r.sort_by_key(|d| d.id);
    r.into_iter()
        .map(|d| {
            d.result
                .unwrap_or_else(|e| panic!("produce to {topic}/{partition}: {e:?}"))
        })
        .collect()
}

/// CreateTopics, DescribeConfigs, AlterConfigs, CreatePartitions, DeleteRecords and
/// DeleteTopics through the rdkafka AdminClient.
#[test]
fn admin_api() {
    run_bounded("admin_api", TEST_LIMIT, || {
        let broker = Broker::start();
        let bs = broker.bootstrap().to_string();
        let admin = admin(&bs);
        let opts = admin_opts();
        let topic = unique_name("compat-admin");

        // Create with a config; creating it again fails with TOPIC_ALREADY_EXISTS.
        let nt =
            NewTopic::new(&topic, 2, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
        let res = block_on(admin.create_topics([&nt], &opts)).expect("create_topics");
        assert_eq!(res, vec![Ok(topic.clone())]);
        wait_topic_ready(&bs, &topic, 2);
        let res = block_on(admin.create_topics([&nt], &opts)).expect("create_topics again");
        assert_eq!(
            res,
            vec![Err((topic.clone(), RDKafkaErrorCode::TopicAlreadyExists))]
        );

        // DescribeConfigs: the create-time config is a dynamic topic config.
        let describe = |what: &str| {
            let res = block_on(admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &opts))
                .unwrap_or_else(|e| panic!("describe_configs ({what}): {e:?}"));
            assert_eq!(res.len(), 1);
            res.into_iter()
                .next()
                .unwrap()
                .unwrap_or_else(|e| panic!("describe_configs ({what}): {e:?}"))
        };
        let cfg = describe("after create");
        let ret = cfg.get("retention.ms").expect("retention.ms listed");
        assert_eq!(ret.value.as_deref(), Some("3600000"));
        assert_eq!(
            ret.source,
            ConfigSource::DynamicTopic,
            "retention.ms set at create time"
        );
        assert!(!ret.is_default);
        for name in ["cleanup.policy", "segment.bytes", "max.message.bytes"] {
            assert!(cfg.get(name).is_some(), "DescribeConfigs lists {name}");
        }

        // AlterConfigs (the non-incremental one) and read it back.
        let ac = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "7200000");
        let res = block_on(admin.alter_configs([&ac], &opts)).expect("alter_configs");
        assert_eq!(res.len(), 1);
        assert!(res[0].is_ok(), "alter_configs: {:?}", res[0]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cfg = describe("after alter");
            let v = cfg.get("retention.ms").and_then(|e| e.value.clone());
            if v.as_deref() == Some("7200000") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "retention.ms after alter_configs: {v:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // CreatePartitions 2 -> 5; a new partition starts at offset 0.
        let np = NewPartitions::new(&topic, 5);
        let res = block_on(admin.create_partitions([&np], &opts)).expect("create_partitions");
        assert_eq!(res, vec![Ok(topic.clone())]);
        wait_topic_ready(&bs, &topic, 5);
        assert_eq!(
            produce_n(&bs, &topic, 4, 3),
            vec![0, 1, 2],
            "offsets in a new partition"
        );

        // DeleteRecords: the low watermark moves to the requested offset.
        assert_eq!(produce_n(&bs, &topic, 0, 10), (0..10).collect::<Vec<_>>());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(4))
            .unwrap();
        let res = block_on(admin.delete_records(&tpl, &opts)).expect("delete_records");
        let e = res
            .find_partition(&topic, 0)
            .expect("delete_records result for partition 0");
        e.error().expect("delete_records partition error");
        assert_eq!(
            e.offset(),
            Offset::Offset(4),
            "low watermark after delete_records"
        );
        assert_eq!(watermarks(&bs, &topic, 0), (4, 10));
        let c = consumer(&bs);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let first = poll_n(&c, 1, Duration::from_secs(30));
        assert_eq!(first[0].offset(), 4, "first offset after delete_records");
        assert_eq!(first[0].payload(), Some(&b"m4"[..]));
        drop(c);

        // DeleteTopics: the topic leaves the metadata; deleting it again fails.
        let res = block_on(admin.delete_topics(&[&topic], &opts)).expect("delete_topics");
        assert_eq!(res, vec![Ok(topic.clone())]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while topic_names(&bs).contains(&topic) {
            assert!(Instant::now() < deadline, "deleted topic still in metadata");
            std::thread::sleep(Duration::from_millis(200));
        }
        let res = block_on(admin.delete_topics(&[&topic], &opts)).expect("delete_topics again");
        assert_eq!(
            res,
            vec![Err((
                topic.clone(),
                RDKafkaErrorCode::UnknownTopicOrPartition
            ))]
        );

        // Several topics at once, one of them bad.
        let a = unique_name("compat-admin-a");
        let b = unique_name("compat-admin-b");
        let ta = NewTopic::new(&a, 1, TopicReplication::Fixed(1));
        let tb = NewTopic::new(&b, 3, TopicReplication::Fixed(1));
        let res = block_on(admin.create_topics([&ta, &tb], &opts)).expect("create two topics");
        assert_eq!(res, vec![Ok(a.clone()), Ok(b.clone())]);
        wait_topic_ready(&bs, &a, 1);
        wait_topic_ready(&bs, &b, 3);
        let missing = unique_name("compat-admin-missing");
        let res = block_on(admin.delete_topics(&[&a, &missing, &b], &opts)).expect("delete three");
        assert_eq!(
            res,
            vec![
                Ok(a.clone()),
                Err((missing.clone(), RDKafkaErrorCode::UnknownTopicOrPartition)),
                Ok(b.clone())
            ]
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let names = topic_names(&bs);
            if !names.contains(&a) && !names.contains(&b) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "deleted topics still in metadata"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        broker.assert_alive();
    });
}

/// gzip, snappy, lz4 and zstd batches from librdkafka, 1,000 messages each, read back intact.
#[test]
fn compression_codecs() {
    run_bounded("compression_codecs", TEST_LIMIT, || {
        const N: usize = 1_000;
        let broker = Broker::start();
        let bs = broker.bootstrap().to_string();
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let topic = unique_name(&format!("compat-{codec}"));
            let mut cfg = idempotent_producer_config(&bs);
            cfg.set("compression.codec", codec).set("linger.ms", "20");
            let log = DeliveryLog::default();
            // zstd needs the rdkafka crate's `zstd` feature (enabled in Cargo.toml).
            let producer: LoggedProducer = cfg
                .create_with_context(log.clone())
                .unwrap_or_else(|e| panic!("producer with compression.codec={codec}: {e:?}"));
            create_topic(&bs, &topic, 2, &[]);
            let value = |i: usize| {
                format!("{codec} message {i:05} ")
                    .repeat(1 + i % 20)
                    .into_bytes()
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            for i in 0..N {
                let v = value(i);
                let k = format!("k{}", i % 7);
                let h = OwnedHeaders::new().insert(Header {
                    key: "codec",
                    value: Some(codec),
                });
                let rec = BaseRecord::with_opaque_to(&topic, i)
                    .key(k.as_bytes())
                    .payload(&v[..])
                    .headers(h);
                send_retrying(&producer, rec, deadline);
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
            let reports = log.snapshot();
            assert_eq!(reports.len(), N);
            let mut at = HashMap::new();
            for r in &reports {
                let off = r
                    .result
                    .clone()
                    .unwrap_or_else(|e| panic!("{codec}: message {} failed: {e:?}", r.id));
                at.insert((r.partition, off), r.id);
            }
            let read = read_to_end(&bs, &topic, 2, Duration::from_secs(30));
            let mut seen = 0;
            for (p, msgs) in &read {
                for (n, m) in msgs.iter().enumerate() {
                    assert_eq!(m.offset(), n as i64, "{codec}: {p} offsets contiguous");
                    let i = at[&(*p, m.offset())];
                    assert_eq!(
                        m.payload(),
                        Some(&value(i)[..]),
                        "{codec}: value of message {i}"
                    );
                    assert_eq!(
                        m.key(),
                        Some(format!("k{}", i % 7).as_bytes()),
                        "{codec}: key of message {i}"
                    );
                    let h = m.headers().expect("headers");
                    assert_eq!(
                        (h.get(0).key, h.get(0).value),
                        ("codec", Some(codec.as_bytes()))
                    );
                    seen += 1;
                }
            }
            assert_eq!(seen, N, "{codec}: all messages read back");
        }
        broker.assert_alive();
    });
}
