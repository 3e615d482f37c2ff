//! Replication on a 3-broker cluster (`common::cluster`), through librdkafka and raw Kafka
//! requests: every acknowledged record survives kill -9 of partition leaders and of the
//! controller leader exactly once and in key order; a killed follower catches up; metadata
//! names every broker and replica, and admin changes made through any broker are committed
//! by the controller.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{check_read_back, isr_of, replicas_of, send_keyed, wait_listed, Cluster};
use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

const PARTITIONS: i32 = 6;
/// Election timeout (randomized in [1 s, 2 s)), the tick that notices it, and the client's
/// metadata refresh: a new leader must be named within this after a kill.
const ELECTION_SLACK: Duration = Duration::from_secs(10);

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[test]
fn acknowledged_records_survive_leader_and_controller_kills_exactly_once() {
    run_bounded("failover", Duration::from_secs(420), || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let topic = unique_name("failover");
        create_topic_rf(&bootstrap, &topic, PARTITIONS, 3, &[]);
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        const ROUND: usize = 5_000;
        send_keyed(&p, &topic, 0, ROUND);

        // The leader of partition 0 dies under load; another replica takes over.
        let victim = cluster.leader(&topic, 0).expect("partition 0 has a leader");
        cluster.node(victim).kill9();
        send_keyed(&p, &topic, ROUND, ROUND);
        let (next, took) = cluster.wait_new_leader(&topic, 0, victim, ELECTION_SLACK);
        eprintln!("partition leader {victim} killed: {next} leads after {took:?}");
        p.flush(Duration::from_secs(120)).expect("flush");
        cluster.node(victim).restart();

        // Then the controller leader: metadata changes go on through the others.
        let controller = controller_id(&cluster.live_bootstrap());
        cluster.node(controller).kill9();
        send_keyed(&p, &topic, 2 * ROUND, ROUND);
        let other = unique_name("after-controller");
        let started = Instant::now();
        create_topic_rf(&cluster.live_bootstrap(), &other, 1, 3, &[]);
        eprintln!(
            "controller {controller} killed: a topic was created through the others in {:?}",
            started.elapsed()
        );
        p.flush(Duration::from_secs(120)).expect("flush");
        cluster.node(controller).restart();
        send_keyed(&p, &topic, 3 * ROUND, ROUND);
        p.flush(Duration::from_secs(120)).expect("flush");

        assert_eq!(
            log.failed(),
            0,
            "an idempotent producer with retries lost records"
        );
        let acked = check_read_back(&bootstrap, &topic, PARTITIONS, &log);
        assert_eq!(acked, 4 * ROUND);
        for b in &cluster.brokers {
            b.assert_alive();
        }
    });
}

/// The controller id Metadata reports.
fn controller_id(bootstrap: &str) -> i32 {
    let first = bootstrap.split(',').next().unwrap();
    let mut s = connect(first.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let r = send_request(
        &mut s,
        &MetadataRequest::default().with_topics(Some(vec![])),
        12,
    );
    r.controller_id.0
}

#[test]
fn metadata_names_every_broker_and_any_broker_takes_admin_changes() {
    run_bounded("metadata", Duration::from_secs(180), || {
        let cluster = Cluster::start(3);
        for (i, b) in cluster.brokers.iter().enumerate() {
            let mut s = connect(b.addr(), Duration::from_secs(10)).expect("connect");
            // CreateTopics through every broker: only the controller leader commits, the
            // others forward.
            let name = unique_name(&format!("via{}", i + 1));
            let create = |rf: i16, name: &str| {
                CreateTopicsRequest::default()
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(TopicName(sb(name)))
                        .with_num_partitions(3)
                        .with_replication_factor(rf)])
                    .with_timeout_ms(30_000)
            };
            let r = send_request(&mut s, &create(3, &name), 7);
            assert_eq!(r.topics[0].error_code, 0, "{r:?}");
            assert_eq!(r.topics[0].replication_factor, 3);
            let r = send_request(&mut s, &create(4, &unique_name("rf4")), 7);
            assert_eq!(
                r.topics[0].error_code, 38,
                "replication factor 4 on 3 brokers: {r:?}"
            );
            // Every broker knows the topic at once, with three replicas per partition and
            // leaders spread over the brokers.
            for other in &cluster.brokers {
                let mut o = connect(other.addr(), Duration::from_secs(10)).expect("connect");
                let md = send_request(&mut o, &MetadataRequest::default().with_topics(None), 12);
                assert_eq!(md.brokers.len(), 3, "{md:?}");
                let t = md
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("{name} not in {}'s metadata", other.bootstrap()));
                for p in &t.partitions {
                    let mut r = p.replica_nodes.clone();
                    r.sort();
                    assert_eq!(r, vec![BrokerId(1), BrokerId(2), BrokerId(3)], "{p:?}");
                }
                let preferred: Vec<i32> =
                    t.partitions.iter().map(|p| p.replica_nodes[0].0).collect();
                let mut distinct = preferred.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), 3, "preferred leaders {preferred:?}");
            }
        }
    });
}

/// MiB the catch-up test writes while the follower is down (`SLUICE_CATCH_UP_MB`, for the
/// 1 GB measurement; CI runs the default).
const CATCH_UP_MB_DEFAULT: u64 = 64;

#[test]
fn a_killed_follower_catches_up() {
    let mb: u64 = std::env::var("SLUICE_CATCH_UP_MB").map_or(CATCH_UP_MB_DEFAULT, |v| {
        v.parse().expect("SLUICE_CATCH_UP_MB is a number of MiB")
    });
    // Waits grow with the size (a second per 4 MiB on top of two minutes), so a 1 GB run
    // is bounded too.
    let wait = Duration::from_secs(120 + mb / 4);
    run_bounded("catch_up", wait * 3, move || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let topic = unique_name("catchup");
        create_topic_rf(&bootstrap, &topic, 1, 3, &[]);
        let leader = cluster.leader(&topic, 0).expect("leader");
        let follower = if leader == 1 { 2 } else { 1 };
        cluster.node(follower).kill9();
        let mut cfg = producer_config(&cluster.live_bootstrap());
        cfg.set("linger.ms", "20").set("batch.size", "1000000");
        let (p, log) = logged_producer(&cfg);
        let value = vec![b'x'; 16 << 10];
        let records = (mb as usize) << 6; // 16 KiB each
        let deadline = Instant::now() + wait;
        for n in 0..records {
            send_retrying(
                &p,
                BaseRecord::with_opaque_to(&topic, n)
                    .partition(0)
                    .payload(&value[..]),
                deadline,
            );
        }
        p.flush(wait).expect("flush");
        assert_eq!(
            log.acked(),
            records as u64,
            "first failures: {:?}",
            log.snapshot()
                .iter()
                .filter(|d| d.result.is_err())
                .take(3)
                .collect::<Vec<_>>()
        );
        let started = Instant::now();
        cluster.node(follower).restart();
        // Caught up once its replica holds as many bytes as the leader's (the same
        // entries, replicated frame by frame).
        loop {
            let have = replica_bytes(&cluster, follower, &topic);
            let want = replica_bytes(&cluster, leader, &topic);
            if have >= want && want > 0 {
                break;
            }
            assert!(
                started.elapsed() < wait,
                "follower {follower} has {have} of {want} bytes"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "follower {follower} caught up on {mb} MiB in {:?}",
            started.elapsed()
        );
        let read = read_until(&bootstrap, &topic, 1, wait, |r| r[&0].len() >= records);
        assert_eq!(read[&0].len(), records);
        assert!(read[&0].iter().all(|m| m.payload() == Some(&value[..])));
    });
}

/// Bytes of `topic`-0's replica on `node`, as DescribeLogDirs reports them.
fn replica_bytes(cluster: &Cluster, node: i32, topic: &str) -> i64 {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::DescribeLogDirsRequest;
    let mut s = connect(cluster.node(node).addr(), Duration::from_secs(10)).expect("connect");
    let r = send_request(
        &mut s,
        &DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(vec![0]),
        ])),
        1,
    );
    r.results
        .iter()
        .flat_map(|d| &d.topics)
        .flat_map(|t| &t.partitions)
        .map(|p| p.partition_size)
        .sum()
}

#[test]
fn a_broker_beyond_the_seeds_joins_takes_replicas_and_rejoins() {
    run_bounded("join", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let joiner = cluster.spawn_joiner(4);
        let started = Instant::now();
        joiner.wait_ready();
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in cluster.brokers.iter().chain([&joiner]) {
            wait_listed(b, 4, deadline);
        }
        eprintln!(
            "broker 4 joined and is listed everywhere after {:?}",
            started.elapsed()
        );

        // A topic led by the new broker: every partition's preferred replica is 4.
        let topic = unique_name("joined");
        let assignments = (0..PARTITIONS)
            .map(|p| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(p)
                    .with_broker_ids(vec![
                        BrokerId(4),
                        BrokerId(p % 3 + 1),
                        BrokerId((p + 1) % 3 + 1),
                    ])
            })
            .collect();
        let mut s = connect(joiner.addr(), Duration::from_secs(10)).expect("connect");
        let r = send_request(
            &mut s,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(assignments)])
                .with_timeout_ms(30_000),
            7,
        );
        assert_eq!(r.topics[0].error_code, 0, "{r:?}");
        let all = format!("{},{}", cluster.bootstrap(), joiner.bootstrap());
        wait_topic_ready(&all, &topic, PARTITIONS);
        for p in 0..PARTITIONS {
            let deadline = Instant::now() + ELECTION_SLACK;
            while cluster.leader(&topic, p) != Some(4) {
                assert!(
                    Instant::now() < deadline,
                    "{topic}/{p} is not led by broker 4"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let (p, log) = logged_producer(&idempotent_producer_config(&all));
        send_keyed(&p, &topic, 0, 3_000);
        p.flush(Duration::from_secs(120)).expect("flush");

        // Killed and restarted, it rejoins with its data (it is a learner of the controller
        // already) and leads again.
        joiner.kill9();
        send_keyed(&p, &topic, 3_000, 2_000);
        joiner.restart();
        wait_listed(&joiner, 4, Instant::now() + Duration::from_secs(30));
        send_keyed(&p, &topic, 5_000, 1_000);
        p.flush(Duration::from_secs(120)).expect("flush");
        let acked = check_read_back(&all, &topic, PARTITIONS, &log);
        assert_eq!(acked, 6_000, "every record acknowledged");

        // Another broker that claims node id 4 is refused and exits.
        let impostor = cluster.spawn_joiner(4);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = impostor.exit_status() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "a joiner with node id 2 still runs"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success(), "{status}");
        let tail = impostor.log_tail(20);
        assert!(tail.contains("node.id of its own"), "{tail}");
    });
}

#[test]
fn a_leader_cut_off_from_its_quorum_answers_acks_all_with_a_timeout() {
    run_bounded("cut-off", Duration::from_secs(180), || {
        let cluster = Cluster::start(3);
        let topic = unique_name("cut-off");
        create_topic_rf(&cluster.bootstrap(), &topic, 1, 3, &[]);
        let leader = cluster.leader(&topic, 0).expect("a leader");
        let mut s = connect(cluster.node(leader).addr(), Duration::from_secs(10)).expect("connect");
        let req = |n| produce_request(&topic, vec![(0, encode_batch(&records(n, 16)))]);
        let r = send_request(&mut s, &req(1), 9);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "{r:?}");

        // Its followers stopped: the write is appended but never committed, and the leader
        // answers REQUEST_TIMED_OUT within the request's timeout instead of holding it.
        let followers: Vec<i32> = (1..=3).filter(|&n| n != leader).collect();
        for &f in &followers {
            cluster.node(f).signal(libc::SIGSTOP);
        }
        let started = Instant::now();
        let r = send_request(&mut s, &req(1).with_timeout_ms(1_000), 9);
        let took = started.elapsed();
        for &f in &followers {
            cluster.node(f).signal(libc::SIGCONT);
        }
        let p = &r.responses[0].partition_responses[0];
        assert!(
            p.error_code == 7 || p.error_code == 6,
            "want REQUEST_TIMED_OUT (or NOT_LEADER_OR_FOLLOWER once it stepped down): {r:?}"
        );
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        eprintln!(
            "cut-off leader answered error {} after {took:?}",
            p.error_code
        );
    });
}

/// Sends ElectLeaders (v2) for `partitions` of `topic` (all partitions of all topics when
/// `None`) to broker `at`; returns (topic, partition, error code) for each result.
fn elect(at: &str, kind: i8, topic: &str, partitions: Option<Vec<i32>>) -> Vec<(String, i32, i16)> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::ElectLeadersRequest;
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let req = ElectLeadersRequest::default()
        .with_election_type(kind)
        .with_timeout_ms(10_000)
        .with_topic_partitions(partitions.map(|ps| {
            vec![TopicPartitions::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(ps)]
        }));
    let r = send_request(&mut s, &req, 2);
    assert_eq!(r.error_code, 0, "{r:?}");
    r.replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect()
}

#[test]
fn elect_leaders_hands_leadership_back_to_the_preferred_replica_under_traffic() {
    const PREFERRED: i8 = 0;
    const UNCLEAN: i8 = 1;
    const ELECTION_NOT_NEEDED: i16 = 84;
    const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    run_bounded("elect-leaders", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let topic = unique_name("elect");
        create_topic_rf(&bootstrap, &topic, PARTITIONS, 3, &[]);
        let any = cluster.node(1).bootstrap().to_string();
        let preferred = replicas_of(&any, &topic, 0)[0];
        let deadline = Instant::now() + ELECTION_SLACK;
        while cluster.leader(&topic, 0) != Some(preferred) {
            assert!(
                Instant::now() < deadline,
                "{preferred} never led partition 0"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // Nothing to elect while the preferred replica leads; an unclean election is never
        // needed while a leader exists; an unknown partition is named.
        let got = elect(&any, PREFERRED, &topic, Some(vec![0, PARTITIONS]));
        assert_eq!(
            got,
            vec![
                (topic.clone(), 0, ELECTION_NOT_NEEDED),
                (topic.clone(), PARTITIONS, 3)
            ]
        );
        let got = elect(&any, UNCLEAN, &topic, Some(vec![0]));
        assert_eq!(got, vec![(topic.clone(), 0, ELECTION_NOT_NEEDED)]);

        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 2_000);
        // The preferred replica stops with writes in flight; another takes over.
        cluster.node(preferred).signal(libc::SIGSTOP);
        let (interim, took) = cluster.wait_new_leader(&topic, 0, preferred, ELECTION_SLACK);
        eprintln!("{preferred} paused: {interim} leads partition 0 after {took:?}");
        send_keyed(&p, &topic, 2_000, 2_000);
        cluster.node(preferred).signal(libc::SIGCONT);

        // With records in flight, the third broker asks for the preferred leader back (the
        // leader it forwards to must first hear from the resumed replica).
        send_keyed(&p, &topic, 4_000, 4_000);
        let third = (1..=3).find(|&n| n != preferred && n != interim).unwrap();
        let at = cluster.node(third).bootstrap().to_string();
        let started = Instant::now();
        let got = loop {
            let got = elect(&at, PREFERRED, &topic, Some(vec![0]));
            if got[0].2 != PREFERRED_LEADER_NOT_AVAILABLE || started.elapsed() > ELECTION_SLACK {
                break got;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(got, vec![(topic.clone(), 0, 0)], "preferred election");
        eprintln!(
            "preferred leader {preferred} elected {:?} after it resumed",
            started.elapsed()
        );
        let deadline = Instant::now() + ELECTION_SLACK;
        while cluster.leader(&topic, 0) != Some(preferred) {
            assert!(
                Instant::now() < deadline,
                "Metadata never named {preferred}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Asking for every partition reports only those that needed an election.
        let got = elect(&at, PREFERRED, &topic, None);
        assert!(
            got.iter().all(|(_, _, code)| *code != ELECTION_NOT_NEEDED),
            "{got:?}"
        );

        p.flush(Duration::from_secs(120)).expect("flush");
        assert_eq!(log.failed(), 0, "records lost across the elections");
        assert_eq!(check_read_back(&bootstrap, &topic, PARTITIONS, &log), 8_000);
        for b in &cluster.brokers {
            b.assert_alive();
        }
    });
}

#[test]
fn a_stopped_follower_leaves_the_isr_and_rejoins_it_once_caught_up() {
    const LAG_MS: u64 = 2_000;
    run_bounded("isr", Duration::from_secs(180), || {
        let cluster = Cluster::start_with(3, &format!("\"replica.lag.time.max.ms\" = {LAG_MS}\n"));
        let bootstrap = cluster.bootstrap();
        let topic = unique_name("isr");
        create_topic_rf(&bootstrap, &topic, 1, 3, &[]);
        let leader = cluster.leader(&topic, 0).expect("a leader");
        let follower = (1..=3).find(|&n| n != leader).unwrap();
        let others: Vec<String> = (1..=3)
            .filter(|&n| n != follower)
            .map(|n| cluster.node(n).bootstrap().to_string())
            .collect();
        for at in &others {
            assert_eq!(isr_of(at, &topic, 0), vec![1, 2, 3], "from {at}");
        }

        // Stopped, it stops answering the leader: every running broker drops it from the ISR
        // once replica.lag.time.max.ms has passed, while writes go on with the other two.
        cluster.node(follower).signal(libc::SIGSTOP);
        let (p, log) = logged_producer(&idempotent_producer_config(&cluster.live_bootstrap()));
        let want: Vec<i32> = (1..=3).filter(|&n| n != follower).collect();
        let deadline = Instant::now() + Duration::from_millis(LAG_MS) + ELECTION_SLACK;
        for at in &others {
            while isr_of(at, &topic, 0) != want {
                assert!(
                    Instant::now() < deadline,
                    "{at} still reports ISR {:?}",
                    isr_of(at, &topic, 0)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        send_keyed(&p, &topic, 0, 500);
        p.flush(Duration::from_secs(60)).expect("flush");
        assert_eq!(log.failed(), 0);

        // Resumed, it catches up and is back in the ISR everywhere.
        cluster.node(follower).signal(libc::SIGCONT);
        let deadline = Instant::now() + ELECTION_SLACK;
        for b in &cluster.brokers {
            while isr_of(b.bootstrap(), &topic, 0) != vec![1, 2, 3] {
                assert!(
                    Instant::now() < deadline,
                    "{} reports ISR {:?} after the follower resumed",
                    b.bootstrap(),
                    isr_of(b.bootstrap(), &topic, 0)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
}

#[test]
fn a_minority_acknowledges_nothing_and_progress_resumes_after_it_heals() {
    run_bounded("minority", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let topic = unique_name("minority");
        create_topic_rf(&bootstrap, &topic, PARTITIONS, 3, &[]);
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 2_000);
        p.flush(Duration::from_secs(60)).expect("flush");

        // Two of three stop: broker 1 alone must acknowledge no acks=all write, whichever
        // partitions it leads or believes it leads.
        let survivor = 1;
        for n in [2, 3] {
            cluster.node(n).signal(libc::SIGSTOP);
        }
        let mut minority = idempotent_producer_config(cluster.node(survivor).bootstrap());
        minority.set("message.timeout.ms", "5000");
        let (m, mlog) = logged_producer(&minority);
        send_keyed(&m, &topic, 2_000, 500);
        let _ = m.flush(Duration::from_secs(30));
        assert_eq!(mlog.settled(), 500, "every minority write settled");
        assert_eq!(mlog.acked(), 0, "a minority acknowledged acks=all writes");
        drop(m);

        // Healed: writes succeed again, and nothing acknowledged before is lost. The records
        // the minority could not acknowledge may still be committed later (they were not
        // refused, only not confirmed), so they count as neither lost nor expected.
        let healed = Instant::now();
        for n in [2, 3] {
            cluster.node(n).signal(libc::SIGCONT);
        }
        send_keyed(&p, &topic, 2_500, 2_000);
        p.flush(Duration::from_secs(120)).expect("flush");
        eprintln!(
            "after the pause all 2,000 writes were acknowledged {:?} after SIGCONT",
            healed.elapsed()
        );
        assert_eq!(log.failed(), 0, "writes failed after the cluster healed");
        assert_eq!(check_read_back(&bootstrap, &topic, PARTITIONS, &log), 4_000);
        for b in &cluster.brokers {
            b.assert_alive();
        }
    });
}
