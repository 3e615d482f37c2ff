//! Moving partitions between brokers (AlterPartitionReassignments and
//! ListPartitionReassignments) on a 3-broker cluster while an idempotent producer writes:
//! every acknowledged record is read back exactly once from the new replicas, the replicas
//! left out delete the partition, a move that cannot finish is listed and can be cancelled,
//! and bad requests get Kafka's error codes.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{check_read_back, isr_of, replicas_of, send_keyed, Cluster};
use common::*;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::Producer;

const PARTITIONS: i32 = 2;
/// Longest a move may take here: the new replica catches up, two membership changes
/// commit, maybe a leadership hand-over, then the controller records the end.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

fn create_assigned(at: &str, topic: &str, assignments: &[&[i32]]) {
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let assignments = assignments
        .iter()
        .enumerate()
        .map(|(p, r)| {
            CreatableReplicaAssignment::default()
                .with_partition_index(p as i32)
                .with_broker_ids(r.iter().map(|&b| BrokerId(b)).collect())
        })
        .collect();
    let r = send_request(
        &mut s,
        &CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(assignments)])
            .with_timeout_ms(30_000),
        7,
    );
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}

/// Sends AlterPartitionReassignments (v1) to `at`: `None` replicas cancel a move. Returns
/// each partition's (index, error code, message).
fn alter(
    at: &str,
    topic: &str,
    moves: &[(i32, Option<&[i32]>)],
    allow_rf_change: bool,
) -> Vec<(i32, i16, Option<String>)> {
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    // A paused controller leader holds a change until another one is elected.
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("read timeout");
    let partitions = moves
        .iter()
        .map(|(p, r)| {
            ReassignablePartition::default()
                .with_partition_index(*p)
                .with_replicas(r.map(|r| r.iter().map(|&b| BrokerId(b)).collect()))
        })
        .collect();
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(allow_rf_change)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions)]);
    let r = send_request(&mut s, &req, 1);
    assert_eq!(r.error_code, 0, "{r:?}");
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.error_code,
                p.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect()
}

/// The moves in progress of `topic` as `at` lists them (every topic's with `None`).
fn ongoing(at: &str, topic: Option<&str>) -> Vec<(String, OngoingPartitionReassignment)> {
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(topic.map(|t| {
            vec![ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(t))
                .with_partition_indexes((0..PARTITIONS).collect())]
        }));
    let r = send_request(&mut s, &req, 0);
    assert_eq!(r.error_code, 0, "{r:?}");
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.clone()))
        })
        .collect()
}

fn ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

/// Waits until no move of `topic` is listed on any broker and each partition's replicas
/// and ISR are `want` everywhere.
fn wait_moved(cluster: &Cluster, topic: &str, want: &[(i32, &[i32])]) -> Duration {
    let started = Instant::now();
    for b in &cluster.brokers {
        loop {
            let listed = ongoing(b.bootstrap(), Some(topic));
            let settled = listed.is_empty()
                && want.iter().all(|(p, r)| {
                    let mut sorted = r.to_vec();
                    sorted.sort_unstable();
                    replicas_of(b.bootstrap(), topic, *p) == *r
                        && isr_of(b.bootstrap(), topic, *p) == sorted
                });
            if settled {
                break;
            }
            assert!(
                started.elapsed() < MOVE_TIMEOUT,
                "{topic} not moved to {want:?} on {}: listed {listed:?}",
                b.bootstrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    started.elapsed()
}

/// Waits until broker `node` no longer holds `topic`/`partition` on disk.
fn wait_deleted(cluster: &Cluster, node: i32, topic: &str, partition: i32) {
    let dir = cluster
        .node(node)
        .data_dir()
        .join(format!("{topic}-{partition}"));
    let deadline = Instant::now() + MOVE_TIMEOUT;
    while Path::new(&dir).exists() {
        assert!(
            Instant::now() < deadline,
            "broker {node} still holds {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reassignments_move_replicas_under_traffic_and_lose_nothing() {
    run_bounded("reassign", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let at = cluster.node(3).bootstrap().to_string();
        let topic = unique_name("moved");
        create_assigned(&at, &topic, &[&[1, 2], &[2, 3]]);
        wait_topic_ready(&bootstrap, &topic, PARTITIONS);
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 2_000);

        // Writes go on through both moves: partition 0 leaves its preferred leader (1) for
        // [2, 3]; partition 1 shrinks from [2, 3] to broker 1 alone, a replica that had none
        // of it, so its leader hands over before it leaves.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, topic) = (stop.clone(), topic.clone());
            std::thread::spawn(move || {
                let mut n = 2_000;
                while !stop.load(Ordering::Relaxed) && n < 40_000 {
                    send_keyed(&p, &topic, n, 200);
                    n += 200;
                    std::thread::sleep(Duration::from_millis(20));
                }
                p.flush(Duration::from_secs(120)).expect("flush");
                n
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        let r = alter(&at, &topic, &[(0, Some(&[2, 3])), (1, Some(&[1]))], true);
        assert_eq!(r, vec![(0, 0, None), (1, 0, None)], "alter answered");
        let took = wait_moved(&cluster, &topic, &[(0, &[2, 3]), (1, &[1])]);
        eprintln!("both partitions moved {took:?} after the request");
        wait_deleted(&cluster, 1, &topic, 0);
        wait_deleted(&cluster, 2, &topic, 1);
        wait_deleted(&cluster, 3, &topic, 1);

        // Back again, under the same writes: partition 1 grows to [3, 1, 2].
        let r = alter(
            cluster.node(1).bootstrap(),
            &topic,
            &[(1, Some(&[3, 1, 2]))],
            true,
        );
        assert_eq!(r, vec![(1, 0, None)], "alter answered");
        let took = wait_moved(&cluster, &topic, &[(0, &[2, 3]), (1, &[3, 1, 2])]);
        eprintln!("partition 1 grew to three replicas {took:?} after the request");
        stop.store(true, Ordering::Relaxed);
        let sent = writer.join().expect("writer");
        let acked = check_read_back(&bootstrap, &topic, PARTITIONS, &log);
        eprintln!("{acked} of {sent} records acknowledged and read back");
        assert_eq!(acked, sent, "every record acknowledged");
    });
}

#[test]
fn a_move_that_cannot_finish_is_listed_and_cancelled() {
    run_bounded("reassign-cancel", Duration::from_secs(240), || {
        let cluster = Cluster::start(3);
        let bootstrap = cluster.bootstrap();
        let at = cluster.node(2).bootstrap().to_string();
        let topic = unique_name("cancelled");
        create_assigned(&at, &topic, &[&[2, 3], &[2, 3]]);
        wait_topic_ready(&bootstrap, &topic, PARTITIONS);
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 1_000);
        p.flush(Duration::from_secs(60)).expect("flush");

        // Broker 1 is paused: it cannot catch up, so the move to [1, 2] stays in progress.
        cluster.node(1).signal(libc::SIGSTOP);
        let r = alter(&at, &topic, &[(0, Some(&[1, 2]))], true);
        assert_eq!(r, vec![(0, 0, None)], "alter answered");
        std::thread::sleep(Duration::from_secs(2));
        let listed = ongoing(&at, None);
        let mine: Vec<_> = listed.iter().filter(|(t, _)| *t == topic).collect();
        assert_eq!(mine.len(), 1, "one move listed: {listed:?}");
        let m = &mine[0].1;
        assert_eq!(m.partition_index, 0);
        assert_eq!(ids(&m.replicas), vec![1, 2, 3], "{m:?}");
        assert_eq!(ids(&m.adding_replicas), vec![1], "{m:?}");
        assert_eq!(ids(&m.removing_replicas), vec![3], "{m:?}");
        // Writes still commit on the old voters meanwhile.
        send_keyed(&p, &topic, 1_000, 1_000);
        p.flush(Duration::from_secs(60)).expect("flush");

        let r = alter(&at, &topic, &[(0, None)], true);
        assert_eq!(r, vec![(0, 0, None)], "cancel answered");
        cluster.node(1).signal(libc::SIGCONT);
        wait_moved(&cluster, &topic, &[(0, &[2, 3]), (1, &[2, 3])]);
        wait_deleted(&cluster, 1, &topic, 0);
        send_keyed(&p, &topic, 2_000, 1_000);
        p.flush(Duration::from_secs(60)).expect("flush");
        assert_eq!(check_read_back(&bootstrap, &topic, PARTITIONS, &log), 3_000);

        // Nothing in progress now: a cancel has nothing to cancel.
        let r = alter(&at, &topic, &[(0, None)], true);
        assert_eq!(r[0].1, 85, "NO_REASSIGNMENT_IN_PROGRESS: {r:?}");
    });
}

#[test]
fn bad_reassignments_get_kafkas_error_codes() {
    run_bounded("reassign-bad", Duration::from_secs(120), || {
        let cluster = Cluster::start(3);
        let at = cluster.node(1).bootstrap().to_string();
        let topic = unique_name("bad-moves");
        create_assigned(&at, &topic, &[&[1, 2], &[2, 3]]);
        wait_topic_ready(&cluster.bootstrap(), &topic, PARTITIONS);
        let codes = |moves: &[(i32, Option<&[i32]>)], allow| -> Vec<i16> {
            alter(&at, &topic, moves, allow)
                .into_iter()
                .map(|(_, code, _)| code)
                .collect()
        };
        // INVALID_REPLICA_ASSIGNMENT: no replicas, a broker twice, an unknown broker.
        assert_eq!(codes(&[(0, Some(&[]))], true), vec![39]);
        assert_eq!(codes(&[(0, Some(&[2, 2]))], true), vec![39]);
        assert_eq!(codes(&[(0, Some(&[1, 9]))], true), vec![39]);
        // UNKNOWN_TOPIC_OR_PARTITION.
        assert_eq!(codes(&[(5, Some(&[1, 2]))], true), vec![3]);
        // INVALID_REPLICATION_FACTOR when v1 forbids changing it.
        assert_eq!(codes(&[(0, Some(&[1, 2, 3]))], false), vec![38]);
        // NO_REASSIGNMENT_IN_PROGRESS.
        assert_eq!(codes(&[(1, None)], true), vec![85]);
        // The same replicas: nothing to do, nothing listed. Reordered: done at once, and
        // Metadata lists them in the new order.
        assert_eq!(
            codes(&[(0, Some(&[1, 2])), (1, Some(&[3, 2]))], false),
            vec![0, 0]
        );
        assert!(ongoing(&at, Some(&topic)).is_empty());
        assert_eq!(replicas_of(&at, &topic, 1), vec![3, 2]);
        // One bad partition fails alone.
        assert_eq!(
            codes(&[(0, Some(&[9])), (1, Some(&[3, 2]))], true),
            vec![39, 0]
        );
        for b in &cluster.brokers {
            b.assert_alive();
        }
    });
}

#[test]
fn a_move_survives_the_kill_of_its_leader_and_the_replica_left_out_deletes_it_at_restart() {
    run_bounded("reassign-kill", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let joiner = cluster.spawn_joiner(4);
        joiner.wait_ready();
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in cluster.brokers.iter().chain([&joiner]) {
            common::cluster::wait_listed(b, 4, deadline);
        }
        let bootstrap = format!("{},{}", cluster.bootstrap(), joiner.bootstrap());
        let at = cluster.node(2).bootstrap().to_string();
        let topic = unique_name("kill-moved");
        create_assigned(&at, &topic, &[&[1, 2, 3], &[2, 3, 1]]);
        wait_topic_ready(&bootstrap, &topic, PARTITIONS);
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.leader(&topic, 0) != Some(1) {
            assert!(
                Instant::now() < deadline,
                "{topic}/0 is not led by broker 1"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 2_000);
        p.flush(Duration::from_secs(60)).expect("flush");

        // Broker 4, the replica being added, is paused, so the move waits for it; meanwhile
        // its leader (1, which the move leaves out) is killed.
        joiner.signal(libc::SIGSTOP);
        let r = alter(&at, &topic, &[(0, Some(&[2, 3, 4]))], true);
        assert_eq!(r, vec![(0, 0, None)], "alter answered");
        let listed = ongoing(&at, Some(&topic));
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(ids(&listed[0].1.adding_replicas), vec![4]);
        assert_eq!(ids(&listed[0].1.removing_replicas), vec![1]);
        cluster.node(1).kill9();
        send_keyed(&p, &topic, 2_000, 2_000);
        p.flush(Duration::from_secs(120)).expect("flush");

        // The new leader carries the move on once broker 4 runs again.
        joiner.signal(libc::SIGCONT);
        let live: Vec<&Broker> = cluster.brokers[1..].iter().chain([&joiner]).collect();
        let started = Instant::now();
        for b in &live {
            loop {
                let moved = ongoing(b.bootstrap(), Some(&topic)).is_empty()
                    && replicas_of(b.bootstrap(), &topic, 0) == [2, 3, 4];
                if moved {
                    break;
                }
                assert!(
                    started.elapsed() < MOVE_TIMEOUT,
                    "{topic}/0 not moved on {}",
                    b.bootstrap()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("moved {:?} after broker 4 resumed", started.elapsed());
        send_keyed(&p, &topic, 4_000, 1_000);
        p.flush(Duration::from_secs(120)).expect("flush");

        // Broker 1 comes back to find itself outside the partition: it deletes its copy and
        // keeps partition 1, which did not move.
        cluster.node(1).restart();
        wait_deleted(&cluster, 1, &topic, 0);
        assert!(cluster
            .node(1)
            .data_dir()
            .join(format!("{topic}-1"))
            .exists());
        assert_eq!(check_read_back(&bootstrap, &topic, PARTITIONS, &log), 5_000);
    });
}

/// Sends UnregisterBroker for `id` to `at`: (error code, message).
fn unregister(at: &str, id: i32) -> (i16, String) {
    use kafka_protocol::messages::UnregisterBrokerRequest;
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("read timeout");
    let r = send_request(
        &mut s,
        &UnregisterBrokerRequest::default().with_broker_id(BrokerId(id)),
        0,
    );
    let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    (r.error_code, message)
}

#[test]
fn decommission_moves_every_replica_off_a_joined_broker_which_then_leaves() {
    run_bounded("decommission", Duration::from_secs(300), || {
        let cluster = Cluster::start(3);
        let joiner = cluster.spawn_joiner(4);
        joiner.wait_ready();
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in cluster.brokers.iter().chain([&joiner]) {
            common::cluster::wait_listed(b, 4, deadline);
        }
        let bootstrap = cluster.bootstrap();
        let at = cluster.node(1).bootstrap().to_string();
        let topic = unique_name("decommissioned");
        create_assigned(&at, &topic, &[&[4, 1, 2], &[2, 3, 4]]);
        wait_topic_ready(&bootstrap, &topic, PARTITIONS);
        let (p, log) = logged_producer(&idempotent_producer_config(&bootstrap));
        send_keyed(&p, &topic, 0, 2_000);
        p.flush(Duration::from_secs(60)).expect("flush");

        // Refused: a broker holding replicas, a seed, an unknown id.
        let (code, message) = unregister(&at, 4);
        assert_eq!(code, 42, "INVALID_REQUEST: {message}");
        assert!(message.contains("still holds 2 replicas"), "{message}");
        let (code, message) = unregister(&at, 2);
        assert_eq!(code, 42, "INVALID_REQUEST: {message}");
        assert!(message.contains("seed"), "{message}");
        assert_eq!(unregister(&at, 9).0, 102, "BROKER_ID_NOT_REGISTERED");

        // Decommissioned under writes: its replicas move to the seeds, then it leaves.
        let writer = {
            let topic = topic.clone();
            std::thread::spawn(move || {
                for n in (2_000..5_000).step_by(100) {
                    send_keyed(&p, &topic, n, 100);
                    std::thread::sleep(Duration::from_millis(20));
                }
                p.flush(Duration::from_secs(120)).expect("flush");
            })
        };
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "--brokers",
                &bootstrap,
                "cluster",
                "decommission",
                "4",
                "--timeout-s",
                "120",
            ])
            .env_remove("SLUICE_BROKERS")
            .output()
            .expect("run sluice cluster decommission");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("broker 4 decommissioned; 2 partitions moved"),
            "{stdout}"
        );
        writer.join().expect("writer");
        for b in &cluster.brokers {
            common::cluster::wait_listed(b, 3, Instant::now() + Duration::from_secs(30));
            for p in 0..PARTITIONS {
                let r = replicas_of(b.bootstrap(), &topic, p);
                assert!(r.len() == 3 && !r.contains(&4), "{topic}/{p} on {r:?}");
            }
        }
        for p in 0..PARTITIONS {
            let dir = joiner.data_dir().join(format!("{topic}-{p}"));
            let deadline = Instant::now() + MOVE_TIMEOUT;
            while dir.exists() {
                assert!(Instant::now() < deadline, "{} still there", dir.display());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert_eq!(check_read_back(&bootstrap, &topic, PARTITIONS, &log), 5_000);

        // Restarted on its old data, the broker is refused and exits.
        joiner.kill9();
        joiner.respawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = joiner.exit_status() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "a decommissioned broker still runs"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success(), "{status}");
        let tail = joiner.log_tail(20);
        assert!(tail.contains("was decommissioned"), "{tail}");

        // Started empty, the same id joins again as a new broker, holding nothing.
        let again = cluster.spawn_joiner(4);
        again.wait_ready();
        let deadline = Instant::now() + Duration::from_secs(30);
        for b in cluster.brokers.iter().chain([&again]) {
            common::cluster::wait_listed(b, 4, deadline);
        }
        for p in 0..PARTITIONS {
            assert!(!replicas_of(again.bootstrap(), &topic, p).contains(&4));
        }
    });
}
