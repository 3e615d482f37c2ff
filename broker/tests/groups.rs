//! Consumer groups against a real `sluice`: committed offsets across broker restarts
//! (SIGTERM and kill -9) and 1,000 groups committing at once. The member-failure scenario
//! lives in tests/python/test_group_failover.py: librdkafka 2.12 (this crate's) skips the
//! first offset of some partitions when members reset while a producer runs, even against
//! Apache Kafka, so it can't check "every message at least once" there.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const TEST_LIMIT: Duration = Duration::from_secs(150);
/// Kafka's minimum session timeout: how long the survivor waits for a killed member.
const SESSION_TIMEOUT_MS: &str = "6000";

fn group_consumer(bs: &str, group: &str) -> BaseConsumer {
    client_config(bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// Consumes `n` messages through the group, committing each; returns their offsets.
fn consume_committing(bs: &str, topic: &str, group: &str, n: usize) -> Vec<i64> {
    let c = group_consumer(bs, group);
    c.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got.push(m.offset());
            c.commit_message(&m, CommitMode::Sync).expect("commit");
        }
    }
    got
}

/// Committed offsets survive a broker SIGTERM and a kill -9; consumption resumes from them.
#[test]
fn committed_offsets_survive_broker_restarts() {
    run_bounded(
        "committed_offsets_survive_broker_restarts",
        TEST_LIMIT,
        || {
            let broker = Broker::start();
            let bs = broker.bootstrap().to_string();
            let topic = unique_name("restart-offsets");
            let group = unique_name("restart-group");
            create_topic(&bs, &topic, 1, &[]);
            let producer: ThreadedProducer<_> = producer_config(&bs).create().expect("producer");
            for i in 0..90 {
                producer
                    .send(BaseRecord::<str, str>::to(&topic).payload(&format!("m{i}")))
                    .unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            drop(producer);
            assert_eq!(
                consume_committing(&bs, &topic, &group, 30),
                (0..30).collect::<Vec<_>>()
            );
            broker.sigterm_and_wait();
            broker.restart();
            assert_eq!(
                consume_committing(&bs, &topic, &group, 30),
                (30..60).collect::<Vec<_>>()
            );
            broker.kill9();
            broker.restart();
            assert_eq!(
                consume_committing(&bs, &topic, &group, 30),
                (60..90).collect::<Vec<_>>()
            );
        },
    );
}

/// 1,000 groups commit concurrently (spread over every `__consumer_offsets` partition and
/// both shards) and all read back their offsets after a SIGTERM restart and a kill -9.
#[test]
fn thousand_groups_commit_and_survive_restarts() {
    run_bounded("thousand_groups", TEST_LIMIT, || {
        const GROUPS: usize = 1_000;
        const THREADS: usize = 8;
        let broker = Broker::start();
        let bs = broker.bootstrap().to_string();
        let topic = unique_name("many-groups");
        create_topic(&bs, &topic, 1, &[]);
        let prefix = unique_name("g");
        let addr = broker.addr();
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (prefix, topic) = (prefix.clone(), topic.clone());
                std::thread::spawn(move || {
                    let mut s = connect(addr, Duration::from_secs(20)).unwrap();
                    for g in (t..GROUPS).step_by(THREADS) {
                        let resp = send_request(
                            &mut s,
                            &commit_request(&format!("{prefix}-{g}"), &topic, g as i64 * 7),
                            8,
                        );
                        assert_eq!(
                            resp.topics[0].partitions[0].error_code, 0,
                            "commit of group {g}"
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let check = || {
            let mut s = connect(addr, Duration::from_secs(20)).unwrap();
            for g in 0..GROUPS {
                assert_eq!(
                    fetched_offset(&mut s, &format!("{prefix}-{g}"), &topic),
                    g as i64 * 7,
                    "group {g}"
                );
            }
        };
        check();
        broker.sigterm_and_wait();
        broker.restart();
        check();
        broker.kill9();
        broker.restart();
        check();
    });
}

/// A rebalance callback: (event, partitions).
type RebalanceEvent = (String, Vec<i32>);

/// Records rebalance callbacks in order.
#[derive(Default, Clone)]
struct RebalanceLog(std::sync::Arc<std::sync::Mutex<Vec<RebalanceEvent>>>);

impl rdkafka::ClientContext for RebalanceLog {}

impl rdkafka::consumer::ConsumerContext for RebalanceLog {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        r: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let (kind, tpl) = match r {
            rdkafka::consumer::Rebalance::Assign(t) => ("assign", Some(*t)),
            rdkafka::consumer::Rebalance::Revoke(t) => ("revoke", Some(*t)),
            rdkafka::consumer::Rebalance::Error(_) => ("error", None),
        };
        let parts = tpl.map_or_else(Vec::new, |t| {
            t.elements().iter().map(|e| e.partition()).collect()
        });
        self.0.lock().unwrap().push((kind.to_string(), parts));
    }
}

fn assigned(log: &RebalanceLog) -> Vec<i32> {
    let mut current: Vec<i32> = Vec::new();
    for (kind, parts) in log.0.lock().unwrap().iter() {
        match kind.as_str() {
            "assign" => current = parts.clone(),
            "revoke" => current.retain(|p| !parts.contains(p)),
            _ => {}
        }
    }
    current.sort();
    current
}

/// librdkafka through the rdkafka crate: subscribe, rebalance callbacks and manual commits;
/// a second member makes the first give up half of its partitions.
#[test]
fn rdkafka_subscribe_rebalance_callbacks_and_manual_commit() {
    run_bounded("rdkafka_groups", TEST_LIMIT, || {
        const PARTS: i32 = 4;
        let broker = Broker::start();
        let bs = broker.bootstrap().to_string();
        let topic = unique_name("rebalance");
        let group = unique_name("rebalance-group");
        create_topic(&bs, &topic, PARTS, &[]);
        let producer: ThreadedProducer<_> = producer_config(&bs).create().expect("producer");
        for i in 0..400 {
            let key = format!("k{i}");
            producer
                .send(BaseRecord::to(&topic).key(&key).payload("v"))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let make = |log: &RebalanceLog| -> BaseConsumer<RebalanceLog> {
            client_config(&bs)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", SESSION_TIMEOUT_MS)
                .set("fetch.wait.max.ms", "100")
                .create_with_context(log.clone())
                .expect("consumer")
        };
        let (log_a, log_b) = (RebalanceLog::default(), RebalanceLog::default());
        let a = make(&log_a);
        a.subscribe(&[&topic]).unwrap();
        let mut seen = std::collections::HashSet::new();
        let poll = |c: &BaseConsumer<RebalanceLog>,
                    seen: &mut std::collections::HashSet<(i32, i64)>| {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen.insert((m.partition(), m.offset()));
                c.commit_message(&m, CommitMode::Sync).expect("commit");
            }
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        while assigned(&log_a) != vec![0, 1, 2, 3] && Instant::now() < deadline {
            poll(&a, &mut seen);
        }
        assert_eq!(
            assigned(&log_a),
            vec![0, 1, 2, 3],
            "a alone owns every partition"
        );
        let b = make(&log_b);
        b.subscribe(&[&topic]).unwrap();
        while (assigned(&log_a).len() != 2 || assigned(&log_b).len() != 2)
            && Instant::now() < deadline
        {
            poll(&a, &mut seen);
            poll(&b, &mut seen);
        }
        let (pa, pb) = (assigned(&log_a), assigned(&log_b));
        assert_eq!(
            (pa.len(), pb.len()),
            (2, 2),
            "the second member takes half: {pa:?} / {pb:?}"
        );
        assert!(
            pa.iter().all(|p| !pb.contains(p)),
            "no partition is owned twice"
        );
        assert!(
            log_a.0.lock().unwrap().iter().any(|(k, _)| k == "revoke"),
            "a's revoke callback ran"
        );
        while seen.len() < 400 && Instant::now() < deadline {
            poll(&a, &mut seen);
            poll(&b, &mut seen);
        }
        assert_eq!(seen.len(), 400, "every message consumed");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTS {
            tpl.add_partition(&topic, p);
        }
        let committed = a.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        for e in committed.elements() {
            let end = watermarks(&bs, &topic, e.partition()).1;
            assert_eq!(
                e.offset(),
                rdkafka::Offset::Offset(end),
                "partition {} committed to its end",
                e.partition()
            );
        }
    });
}
