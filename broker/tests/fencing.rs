//! Broker heartbeats and fencing on a 3-broker cluster: the controller leader fences a
//! broker it stops hearing from, new topics are placed on the brokers still heard from
//! (a replication factor above their count is refused), DescribeCluster leaves the fenced
//! broker out unless asked, and the broker is unfenced once it is back.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{check_read_back, replicas_of, send_keyed, Cluster};
use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, DescribeClusterRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// Short sessions, so the test waits seconds, not Kafka's 9.
const CONFIG: &str = "\"broker.session.timeout.ms\" = 2000\n\
                      \"broker.heartbeat.interval.ms\" = 250\n";
/// Longest fencing or unfencing may take here: a session, a controller election after the
/// kill of its leader (whose successor starts every session anew), and a commit.
const FENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// DescribeCluster v2 at `at`: the controller id and each listed broker with its fence flag.
fn describe(at: &str, include_fenced: bool) -> (i32, Vec<(i32, bool)>) {
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let r = send_request(
        &mut s,
        &DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(include_fenced),
        2,
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let mut brokers: Vec<_> = r
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.is_fenced))
        .collect();
    brokers.sort();
    (r.controller_id.0, brokers)
}

/// Waits until `at` reports broker `id` fenced (or not); returns how long that took.
fn wait_fenced(at: &str, id: i32, fenced: bool) -> Duration {
    let start = Instant::now();
    loop {
        let (_, brokers) = describe(at, true);
        if brokers.contains(&(id, fenced)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < FENCE_TIMEOUT,
            "broker {id} not {} after {FENCE_TIMEOUT:?}: {brokers:?}",
            if fenced { "fenced" } else { "unfenced" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CreateTopics (v7) at `at` with either a replication factor or an explicit assignment of
/// partition 0; returns the topic's error code and message.
fn create(at: &str, topic: &str, rf: i16, assignment: Option<&[i32]>) -> (i16, Option<String>) {
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("read timeout");
    let mut t = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_num_partitions(4)
        .with_replication_factor(rf);
    if let Some(a) = assignment {
        t = t
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(a.iter().map(|&b| BrokerId(b)).collect())]);
    }
    let r = send_request(
        &mut s,
        &CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(30_000),
        7,
    );
    let t = &r.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

#[test]
fn a_silent_broker_is_fenced_from_placement_until_it_is_back() {
    run_bounded("fencing", Duration::from_secs(240), || {
        let cluster = Cluster::start_with(3, CONFIG);
        let (controller, brokers) = describe(cluster.node(1).bootstrap(), true);
        assert_eq!(brokers, vec![(1, false), (2, false), (3, false)]);

        // The controller leader itself goes: its successor must fence it, after a session
        // of its own.
        let victim = controller;
        let live = if victim == 1 { 2 } else { 1 };
        let at = cluster.node(live).bootstrap().to_string();
        cluster.node(victim).kill9();
        let took = wait_fenced(&at, victim, true);
        eprintln!("controller leader {victim} fenced {took:?} after its kill -9");
        let (_, listed) = describe(&at, false);
        assert!(
            listed.iter().all(|(id, _)| *id != victim),
            "DescribeCluster without include_fenced_brokers lists the fenced broker: {listed:?}"
        );

        let (code, msg) = create(&at, &unique_name("three"), 3, None);
        assert_eq!(
            code,
            ResponseError::InvalidReplicationFactor.code(),
            "RF 3 with a broker fenced: {msg:?}"
        );
        let (code, msg) = create(&at, &unique_name("assigned"), -1, Some(&[victim, live]));
        assert_eq!(
            code,
            ResponseError::InvalidReplicaAssignment.code(),
            "an assignment naming the fenced broker: {msg:?}"
        );

        // RF 2 lands on the two brokers heard from, and takes writes.
        let two = unique_name("two");
        assert_eq!(create(&at, &two, 2, None), (0, None));
        let bootstrap = cluster.live_bootstrap();
        wait_topic_ready(&bootstrap, &two, 4);
        for p in 0..4 {
            let replicas = replicas_of(&at, &two, p);
            assert!(
                !replicas.contains(&victim),
                "partition {p} placed on fenced broker {victim}: {replicas:?}"
            );
        }
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &two, 0, 500);
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush");
        assert_eq!(check_read_back(&bootstrap, &two, 4, &log), 500);

        // Back on its data, it is heard from and placed on again.
        cluster.node(victim).restart();
        let took = wait_fenced(&at, victim, false);
        eprintln!("broker {victim} unfenced {took:?} after its restart was ready");
        let three = unique_name("three");
        assert_eq!(create(&at, &three, 3, None), (0, None));
        wait_topic_ready(&cluster.bootstrap(), &three, 4);
        assert_eq!(replicas_of(&at, &three, 0).len(), 3);
    });
}
