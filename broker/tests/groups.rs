//! Consumer groups against a real `sluice`: committed offsets across broker restarts
//! (SIGTERM and kill -9) and 1,000 groups committing at once. The member-failure scenario
//! lives in tests/python/test_group_failover.py: librdkafka 2.12 (this crate's) skips the
//! first offset of some partitions when members reset while a producer runs, even against
//! Apache Kafka, so it can't check "every message at least once" there.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
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

fn commit_request(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_leader_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.generation_id_or_member_epoch = -1;
    r.topics = vec![t];
    r
}

fn fetched_offset(s: &mut std::net::TcpStream, group: &str, topic: &str) -> i64 {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(StrBytes::from_string(group.to_string()));
    r.topics = Some(vec![t]);
    let resp = send_request(s, &r, 7);
    assert_eq!(resp.error_code, 0);
    resp.topics[0].partitions[0].committed_offset
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
