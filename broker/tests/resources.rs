//! Running out of a resource is bad input too (issue: many partitions per core): a second
//! broker on a locked data directory refuses to start, a broker under a descriptor limit far
//! below its partition count serves and restarts, a partition whose log can't be opened is
//! offline while the others serve, and creating past `topic.partitions.per.shard` is refused.
//!
//! Needs a broker the harness starts (fails when `SLUICE_BOOTSTRAP` points elsewhere).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{NewPartitions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

const TEST_LIMIT: Duration = Duration::from_secs(240);
/// `RLIMIT_NOFILE` of the broker in the descriptor test, far below its partition count.
const NOFILE: u64 = 256;
const FD_TOPICS: usize = 30;
const FD_PARTITIONS: i32 = 20;

fn require_harness() {
    assert!(
        std::env::var_os("SLUICE_BOOTSTRAP").is_none(),
        "these tests start, stop and restart brokers: unset SLUICE_BOOTSTRAP"
    );
}

fn broker_fds(broker: &Broker) -> usize {
    let pid = broker.pid().expect("broker runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("list the broker's descriptors")
}

/// Produces one record (acks=all) to every partition of `topics`; value names the partition.
fn produce_one_each(broker: &Broker, topics: &[String], partitions: i32, round: &str) {
    let (p, log) = logged_producer(&producer_config(broker.bootstrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    for t in topics {
        for part in 0..partitions {
            let value = format!("{t}/{part}/{round}");
            send_retrying(
                &p,
                BaseRecord::with_opaque_to(t, n)
                    .partition(part)
                    .key(round.as_bytes())
                    .payload(value.as_bytes()),
                deadline,
            );
            n += 1;
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let failed: Vec<String> = log
        .snapshot()
        .iter()
        .filter_map(|d| d.result.as_ref().err().map(|e| format!("{e}")))
        .take(3)
        .collect();
    assert_eq!(
        log.acked(),
        n as u64,
        "every record acknowledged; errors {failed:?}; broker log:\n{}",
        broker.log_tail(30)
    );
}

/// Reads every partition back and checks it holds exactly the records of `rounds`, in order.
fn check_all(bootstrap: &str, topics: &[String], partitions: i32, rounds: &[&str]) {
    for t in topics {
        let got = read_to_end(bootstrap, t, partitions, Duration::from_secs(60));
        for part in 0..partitions {
            let values: Vec<(i64, String)> = got[&part]
                .iter()
                .map(|m| {
                    let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                    (m.offset(), v)
                })
                .collect();
            let want: Vec<(i64, String)> = rounds
                .iter()
                .enumerate()
                .map(|(i, r)| (i as i64, format!("{t}/{part}/{r}")))
                .collect();
            assert_eq!(values, want, "{t}/{part}");
        }
    }
}

#[test]
fn second_broker_on_a_port_in_use_refuses_and_the_first_keeps_serving() {
    require_harness();
    run_bounded("port-in-use", TEST_LIMIT, || {
        let first = Broker::start_cores(1);
        let topic = unique_name("port-held");
        create_topic(first.bootstrap(), &topic, 1, &[]);
        let data = tempfile::tempdir().expect("data dir");
        // The shards listen with SO_REUSEPORT: without the check the second broker would
        // bind the same port and take part of the first one's connections.
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["start", "--cores", "1", "--listen", first.bootstrap()])
            .arg("--data-dir")
            .arg(data.path())
            .stdin(Stdio::null())
            .output()
            .expect("run a second sluice");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second broker started: {stderr}");
        assert!(
            stderr.contains(&format!("listen {} is already in use", first.bootstrap())),
            "the refusal names the port: {stderr}"
        );
        first.assert_alive();
        rdkafka_round_trip(first.bootstrap(), &topic);
    });
}

#[test]
fn second_broker_on_a_locked_data_dir_refuses_and_the_first_keeps_serving() {
    require_harness();
    run_bounded("lock", TEST_LIMIT, || {
        let first = Broker::start_cores(1);
        let topic = unique_name("locked");
        create_topic(first.bootstrap(), &topic, 1, &[]);
        let (port, admin) = free_port_pair();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["start", "--cores", "1", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--data-dir")
            .arg(first.data_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run a second sluice");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "second broker started: {stderr}");
        let pid = first.pid().expect("first broker runs").to_string();
        assert!(
            stderr.contains("in use by another sluice") && stderr.contains(&pid),
            "the refusal names the holder (pid {pid}): {stderr}"
        );
        first.assert_alive();
        rdkafka_round_trip(first.bootstrap(), &topic);
        // kill -9 leaves the lock file behind; the kernel dropped the lock with the process.
        first.kill9();
        first.restart();
        rdkafka_round_trip(first.bootstrap(), &topic);
    });
}

#[test]
fn more_partitions_than_descriptors_serve_and_restart() {
    require_harness();
    run_bounded("descriptors", TEST_LIMIT, || {
        let broker = Broker::start_with(BrokerOpts {
            cores: 1,
            nofile: Some(NOFILE),
            ..BrokerOpts::default()
        });
        let bootstrap = broker.bootstrap().to_string();
        let topics: Vec<String> = (0..FD_TOPICS)
            .map(|i| unique_name(&format!("fd{i}")))
            .collect();
        let admin = admin(&bootstrap);
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, FD_PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        for r in block_on(admin.create_topics(new.iter(), &admin_opts())).expect("create") {
            r.unwrap_or_else(|(n, e)| panic!("create {n}: {e:?}"));
        }
        for t in &topics {
            wait_topic_ready(&bootstrap, t, FD_PARTITIONS);
        }
        let total = FD_TOPICS * FD_PARTITIONS as usize;
        assert!(total as u64 > NOFILE, "the test must exceed the limit");
        produce_one_each(&broker, &topics, FD_PARTITIONS, "a");
        check_all(&bootstrap, &topics, FD_PARTITIONS, &["a"]);
        let fds = broker_fds(&broker);
        assert!(fds < NOFILE as usize, "{fds} descriptors");

        broker.sigterm_and_wait();
        broker.restart();
        for t in &topics {
            wait_topic_ready(&bootstrap, t, FD_PARTITIONS);
        }
        check_all(&bootstrap, &topics, FD_PARTITIONS, &["a"]);
        produce_one_each(&broker, &topics, FD_PARTITIONS, "b");

        broker.kill9();
        broker.restart();
        for t in &topics {
            wait_topic_ready(&bootstrap, t, FD_PARTITIONS);
        }
        check_all(&bootstrap, &topics, FD_PARTITIONS, &["a", "b"]);
        println!(
            "{total} partitions under RLIMIT_NOFILE {NOFILE}: {} descriptors after restarts",
            broker_fds(&broker)
        );
        broker.assert_alive();
    });
}

#[test]
fn a_partition_that_cannot_open_is_offline_and_the_rest_serve() {
    require_harness();
    run_bounded("offline", TEST_LIMIT, || {
        let broker = Broker::start_cores(2);
        let bootstrap = broker.bootstrap().to_string();
        let topic = unique_name("offline");
        create_topic(&bootstrap, &topic, 3, &[]);
        produce_one_each(&broker, std::slice::from_ref(&topic), 3, "a");
        broker.sigterm_and_wait();
        // A file where partition 1's directory should be: its log can't open.
        let dir = broker.data_dir().join(format!("{topic}-1"));
        std::fs::remove_dir_all(&dir).expect("remove partition dir");
        std::fs::write(&dir, b"not a directory").expect("plant a file");
        broker.restart();

        let c = consumer(&bootstrap);
        let md = c
            .fetch_metadata(Some(&topic), CALL_TIMEOUT)
            .expect("metadata");
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .expect("topic listed");
        let leaders: HashMap<i32, i32> = t
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader()))
            .collect();
        assert_eq!(leaders[&1], -1, "partition 1 offline: {leaders:?}");
        assert!(
            leaders[&0] >= 0 && leaders[&2] >= 0,
            "others online: {leaders:?}"
        );
        let p1 = t
            .partitions()
            .iter()
            .find(|p| p.id() == 1)
            .expect("partition 1");
        assert_eq!(
            p1.error(),
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
        );
        for p in [0, 2] {
            let (lo, hi) = watermarks(&bootstrap, &topic, p);
            assert_eq!((lo, hi), (0, 1), "partition {p} kept its record");
        }
        broker.assert_alive();

        // Once the directory is usable again, the next metadata change opens it.
        std::fs::remove_file(&dir).expect("remove the planted file");
        create_topic(&bootstrap, &unique_name("nudge"), 1, &[]);
        wait_topic_ready(&bootstrap, &topic, 3);
        produce_one_each(&broker, std::slice::from_ref(&topic), 3, "b");
        // Partition 1 starts over empty (its data went with the directory); the others go on.
        let marks: Vec<(i64, i64)> = (0..3).map(|p| watermarks(&bootstrap, &topic, p)).collect();
        assert_eq!(marks, vec![(0, 2), (0, 1), (0, 2)]);
        assert!(
            broker.log_tail(400).contains("cannot open partition"),
            "the failure is logged"
        );
    });
}

#[test]
fn creating_past_the_partition_limit_is_refused() {
    require_harness();
    run_bounded("limit", TEST_LIMIT, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("sluice.toml");
        // One shard of 100: the 50 partitions of __consumer_offsets leave room for 50.
        std::fs::write(&cfg, "\"topic.partitions.per.shard\" = 100\n").expect("write config");
        let broker = Broker::start_with(BrokerOpts {
            cores: 1,
            extra_args: vec!["--config".into(), cfg.display().to_string()],
            ..BrokerOpts::default()
        });
        let bootstrap = broker.bootstrap().to_string();
        let admin = admin(&bootstrap);
        let big = unique_name("big");
        let refused = block_on(admin.create_topics(
            [&NewTopic::new(&big, 60, TopicReplication::Fixed(1))],
            &admin_opts(),
        ))
        .expect("create_topics");
        match &refused[0] {
            Err((_, code)) => assert_eq!(*code, RDKafkaErrorCode::InvalidPartitions),
            Ok(n) => panic!("{n} created past the limit"),
        }
        let fits = unique_name("fits");
        create_topic(&bootstrap, &fits, 40, &[]);
        let grown =
            block_on(admin.create_partitions([&NewPartitions::new(&fits, 60)], &admin_opts()))
                .expect("create_partitions");
        match &grown[0] {
            Err((_, code)) => assert_eq!(*code, RDKafkaErrorCode::InvalidPartitions),
            Ok(n) => panic!("{n} grown past the limit"),
        }
        let names = topic_names(&bootstrap);
        assert!(!names.contains(&big), "the refused topic does not exist");
        wait_topic_ready(&bootstrap, &fits, 40);
        rdkafka_round_trip(&bootstrap, &fits);
        broker.assert_alive();
    });
}
