//! Log compaction against a real `sluice`: `__consumer_offsets` shrinks to about one record
//! per group and partition while every committed offset reads back, across restarts; and a
//! user topic with `cleanup.policy=compact` keeps the latest value of each key, read by
//! librdkafka from the beginning.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;

const TEST_LIMIT: Duration = Duration::from_secs(150);
/// How long the cleaner gets to shrink a log (it looks every 200 ms in these tests).
const COMPACTION_WAIT: Duration = Duration::from_secs(60);
const SEGMENT_BYTES: u64 = 16 * 1024;

/// A broker whose cleaner runs often, on small segments, with one offsets partition.
fn compacting_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap().keep();
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "\"offsets.topic.num.partitions\" = 1\n\
             \"offsets.topic.segment.bytes\" = {SEGMENT_BYTES}\n\
             \"log.cleaner.backoff.ms\" = 200\n"
        ),
    )
    .unwrap();
    Broker::start_with(BrokerOpts {
        cores: 2,
        extra_args: vec!["--config".into(), cfg.display().to_string()],
        ..BrokerOpts::default()
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until the partition directory's segment bytes drop below `limit`.
fn wait_smaller(dir: &Path, limit: u64) -> u64 {
    let deadline = Instant::now() + COMPACTION_WAIT;
    loop {
        let now = dir_bytes(dir);
        if now < limit {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} still holds {now} bytes of segments, expected compaction below {limit}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn commit(s: &mut std::net::TcpStream, group: &str, topic: &str, offset: i64) {
    let resp = send_request(s, &commit_request(group, topic, offset), 8);
    assert_eq!(resp.topics[0].partitions[0].error_code, 0, "commit {group}");
}

#[test]
fn consumer_offsets_are_compacted_and_survive_restarts() {
    run_bounded("consumer_offsets_compaction", TEST_LIMIT, || {
        const GROUPS: usize = 20;
        const ROUNDS: i64 = 150;
        let broker = compacting_broker();
        let bs = broker.bootstrap().to_string();
        let topic = unique_name("compacted-offsets");
        create_topic(&bs, &topic, 1, &[]);
        let groups: Vec<String> = (0..GROUPS)
            .map(|g| unique_name(&format!("cg{g}")))
            .collect();
        let mut s = connect(broker.addr(), Duration::from_secs(20)).unwrap();
        for round in 1..=ROUNDS {
            for g in &groups {
                commit(&mut s, g, &topic, round);
            }
        }
        let offsets_dir = broker.data_dir().join("__consumer_offsets-0");
        let (_, records) = watermarks(&bs, "__consumer_offsets", 0);
        assert!(
            records >= ROUNDS * GROUPS as i64,
            "{records} records in __consumer_offsets-0"
        );
        // Thousands of ~150-byte commit records fill dozens of segments; compacted, the
        // sealed ones hold one record per group and merge into a few files.
        let compacted = wait_smaller(&offsets_dir, 4 * SEGMENT_BYTES);
        eprintln!("__consumer_offsets-0: {records} records written, {compacted} bytes of segments after compaction");
        let check = |what: &str| {
            let mut s = connect(broker.addr(), Duration::from_secs(20)).unwrap();
            for g in &groups {
                assert_eq!(fetched_offset(&mut s, g, &topic), ROUNDS, "{g} {what}");
            }
        };
        check("after compaction");
        broker.kill9();
        broker.restart();
        check("after kill -9 and restart");
        // More commits, another compaction, a clean restart.
        let mut s = connect(broker.addr(), Duration::from_secs(20)).unwrap();
        for round in ROUNDS + 1..=2 * ROUNDS {
            for g in &groups {
                commit(&mut s, g, &topic, round);
            }
        }
        drop(s);
        wait_smaller(&offsets_dir, 4 * SEGMENT_BYTES);
        broker.sigterm_and_wait();
        broker.restart();
        let mut s = connect(broker.addr(), Duration::from_secs(20)).unwrap();
        for g in &groups {
            assert_eq!(
                fetched_offset(&mut s, g, &topic),
                2 * ROUNDS,
                "{g} after SIGTERM restart"
            );
        }
        assert!(
            broker.log_tail(400).contains("compacted"),
            "the cleaner logs its passes"
        );
    });
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_of_each_key() {
    run_bounded("compacted_topic", TEST_LIMIT, || {
        const KEYS: usize = 25;
        const ROUNDS: usize = 60;
        let broker = compacting_broker();
        let bs = broker.bootstrap().to_string();
        let topic = unique_name("compacted");
        let segment_bytes = SEGMENT_BYTES.to_string();
        create_topic(
            &bs,
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", &segment_bytes),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "0"),
            ],
        );
        let producer: ThreadedProducer<_> = idempotent_producer_config(&bs)
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        let mut want: BTreeMap<String, Option<String>> = BTreeMap::new();
        for round in 0..ROUNDS {
            for k in 0..KEYS {
                let key = format!("key-{k}");
                // Keys 0..5 end deleted (tombstones in the last round).
                let value = (round + 1 < ROUNDS || k >= 5).then(|| format!("v{round}-{k}"));
                let rec = BaseRecord::<str, str>::to(&topic).key(&key);
                let rec = match &value {
                    Some(v) => rec.payload(v),
                    None => rec,
                };
                producer.send(rec).map_err(|(e, _)| e).expect("send");
                want.insert(key, value);
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        }
        // One more round on fresh keys so the tombstones sit in a sealed segment.
        for k in 0..KEYS {
            let key = format!("tail-{k}");
            producer
                .send(BaseRecord::<str, str>::to(&topic).key(&key).payload("t"))
                .map_err(|(e, _)| e)
                .expect("send");
            want.insert(key, Some("t".into()));
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let total = (ROUNDS + 1) * KEYS;
        let dir = broker.data_dir().join(format!("{topic}-0"));
        // About 100 KB of records over several segments; compacted, a few files.
        wait_smaller(&dir, 3 * SEGMENT_BYTES);

        let (_, high) = watermarks(&bs, &topic, 0);
        assert_eq!(high as usize, total, "offsets never move");
        // Reads the whole partition: (records, latest value per key, last offset).
        let read_all = || {
            let c = consumer(&bs);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
                .unwrap();
            c.assign(&tpl).unwrap();
            let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
            let mut count = 0usize;
            let mut last_offset = -1i64;
            let deadline = Instant::now() + Duration::from_secs(30);
            while last_offset + 1 < high && Instant::now() < deadline {
                if let Some(m) = c.poll(Duration::from_millis(200)) {
                    let m = m.expect("consume");
                    assert!(m.offset() > last_offset, "offsets ascend");
                    last_offset = m.offset();
                    count += 1;
                    let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                    let value = m.payload().map(|v| String::from_utf8(v.to_vec()).unwrap());
                    seen.insert(key, value);
                }
            }
            (count, seen, last_offset)
        };
        // The size bound can be met while a pass is still merging segments: read again
        // after further passes until most superseded records are gone (or the wait ends).
        let deadline = Instant::now() + COMPACTION_WAIT;
        let (count, seen, last_offset) = loop {
            let r = read_all();
            if r.0 < total / 4 || Instant::now() >= deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(last_offset + 1, high, "read to the end");
        // Deleted keys may show their tombstone or nothing, never an older value.
        let alive: BTreeMap<_, _> = seen.into_iter().filter(|(_, v)| v.is_some()).collect();
        let want_alive: BTreeMap<_, _> = want.into_iter().filter(|(_, v)| v.is_some()).collect();
        assert_eq!(alive, want_alive, "the latest value of every live key");
        assert!(count < total / 4, "{count} of {total} records left");
        eprintln!("compacted topic: {count} of {total} records left");
    });
}
