//! Acknowledged writes survive a broker crash (kill -9) and a graceful stop (SIGTERM):
//! an idempotent acks=all rdkafka producer sends N messages, the broker is stopped from
//! another thread after about N/2 acknowledgements and restarted on the same data dir while
//! the producer keeps going; afterwards every acknowledged message is in the log exactly
//! once at its acknowledged offset, offsets are contiguous, and nothing is duplicated.
//!
//! Needs a broker the harness starts (fails when `SLUICE_BOOTSTRAP` points elsewhere); see `common/mod.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

const TEST_LIMIT: Duration = Duration::from_secs(100);
const N: usize = 20_000;
const PARTS: i32 = 3;
/// At most this many messages sent but not yet acknowledged or failed.
const WINDOW: u64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Kill9,
    Sigterm,
}

fn payload(i: usize) -> Vec<u8> {
    let mut v = format!("durable-{i:06}-").into_bytes();
    v.resize(100, b'0' + (i % 10) as u8);
    v
}

fn id_of(payload: &[u8]) -> usize {
    let s = std::str::from_utf8(&payload[8..14]).expect("payload id");
    s.parse().expect("payload id")
}

#[test]
fn kill9_mid_produce_keeps_every_acked_message() {
    run_bounded("kill9", TEST_LIMIT, || crash_and_check(Stop::Kill9));
}

#[test]
fn sigterm_mid_produce_keeps_every_acked_message() {
    run_bounded("sigterm", TEST_LIMIT, || crash_and_check(Stop::Sigterm));
}

fn crash_and_check(stop: Stop) {
    assert!(
        std::env::var_os("SLUICE_BOOTSTRAP").is_none(),
        "{stop:?} must kill and restart the broker: unset SLUICE_BOOTSTRAP so the harness starts one"
    );
    // Both shard layouts are covered: one shard for kill -9, two for SIGTERM.
    let broker = Broker::start_cores(match stop {
        Stop::Kill9 => 1,
        Stop::Sigterm => 2,
    });
    let bs = broker.bootstrap().to_string();
    let topic = unique_name(&format!("durable-{stop:?}").to_lowercase());
    create_topic(&bs, &topic, PARTS, &[]);

    let mut cfg = idempotent_producer_config(&bs);
    cfg.set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    let (producer, log) = logged_producer(&cfg);

    let stopped = AtomicBool::new(false);
    let mut restarted_at: Option<Instant> = None;
    let mut exit_status = None;
    let deadline = Instant::now() + Duration::from_secs(75);
    std::thread::scope(|scope| {
        // The stopper: waits for N/2 acknowledgements, then stops the broker.
        let stopper = scope.spawn(|| {
            while log.acked() < (N / 2) as u64 {
                if Instant::now() > deadline || log.failed() > 0 {
                    stopped.store(true, Ordering::SeqCst);
                    panic!(
                        "only {} acks ({} failed) before the stop; first failure: {:?}",
                        log.acked(),
                        log.failed(),
                        log.snapshot().iter().find(|d| d.result.is_err())
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let acked_at_stop = log.acked();
            let status = match stop {
                Stop::Kill9 => {
                    broker.kill9();
                    None
                }
                Stop::Sigterm => broker.sigterm_and_wait(),
            };
            stopped.store(true, Ordering::SeqCst);
            eprintln!("{stop:?} after {acked_at_stop} acks (exit status {status:?})");
            status
        });

        // The producer (this thread, which owns the broker and so restarts it).
        for i in 0..N {
            loop {
                if stopped.load(Ordering::SeqCst) && restarted_at.is_none() {
                    if stopper.is_finished() && log.acked() < (N / 2) as u64 {
                        break; // the stopper gave up; its panic is reported below
                    }
                    broker.restart();
                    restarted_at = Some(Instant::now());
                }
                // i messages sent so far.
                if (i as u64).saturating_sub(log.settled()) < WINDOW {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "producer stalled at {i} ({} acked)",
                    log.acked()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let p = payload(i);
            let key = format!("k{}", i % 31);
            let rec = BaseRecord::with_opaque_to(&topic, i)
                .key(key.as_bytes())
                .payload(&p[..]);
            send_retrying(&producer, rec, deadline);
        }
        // Everything is queued; make sure the stop and restart happened.
        while restarted_at.is_none() {
            assert!(
                Instant::now() < deadline,
                "the broker was never stopped ({} acked)",
                log.acked()
            );
            if stopped.load(Ordering::SeqCst) {
                if stopper.is_finished() && log.acked() < (N / 2) as u64 {
                    break;
                }
                broker.restart();
                restarted_at = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match stopper.join() {
            Ok(st) => exit_status = st,
            Err(p) => std::panic::resume_unwind(p),
        }
    });
    let restarted_at = restarted_at.expect("restarted");
    if let (Stop::Sigterm, Some(st)) = (stop, exit_status) {
        assert!(st.success(), "graceful stop exits cleanly, got {st}");
    }
    producer
        .flush(Duration::from_secs(70))
        .expect("flush after restart");

    // What the producer was told.
    let reports = log.snapshot();
    assert_eq!(reports.len(), N, "a delivery report for every message");
    let mut acked: Vec<(usize, i32, i64)> = Vec::new();
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut acked_after_restart = 0;
    for r in &reports {
        match &r.result {
            Ok(off) => {
                acked.push((r.id, r.partition, *off));
                if r.at > restarted_at {
                    acked_after_restart += 1;
                }
            }
            Err(e) => *failures.entry(format!("{e:?}")).or_default() += 1,
        }
    }
    eprintln!(
        "{stop:?}: {} acked ({acked_after_restart} after the restart), failures {failures:?}",
        acked.len()
    );
    assert!(acked.len() >= N / 2, "at least the acks before the stop");

    // What the log holds.
    let read = read_to_end(&bs, &topic, PARTS, Duration::from_secs(30));
    let mut stored: HashMap<(i32, i64), usize> = HashMap::new();
    let mut where_stored: HashMap<usize, (i32, i64)> = HashMap::new();
    for p in 0..PARTS {
        let msgs = &read[&p];
        let (low, high) = watermarks(&bs, &topic, p);
        assert_eq!(
            (low, high),
            (0, msgs.len() as i64),
            "partition {p} watermarks"
        );
        for (n, m) in msgs.iter().enumerate() {
            assert_eq!(
                m.offset(),
                n as i64,
                "partition {p}: offsets contiguous from 0"
            );
            let id = id_of(m.payload().expect("payload"));
            assert_eq!(
                m.payload(),
                Some(&payload(id)[..]),
                "{p}/{}: payload intact",
                m.offset()
            );
            if let Some(prev) = where_stored.insert(id, (p, m.offset())) {
                panic!(
                    "message {id} stored twice: at {prev:?} and {p}/{}",
                    m.offset()
                );
            }
            stored.insert((p, m.offset()), id);
        }
    }
    for (id, p, off) in &acked {
        match stored.get(&(*p, *off)) {
            Some(got) if got == id => {}
            Some(got) => {
                panic!("acked message {id} at {p}/{off}, but the log has message {got} there")
            }
            None => panic!(
                "acked message {id} at {p}/{off} is missing (stored elsewhere: {:?})",
                where_stored.get(id)
            ),
        }
    }
    let unacked_stored = stored.len() - acked.len();
    eprintln!(
        "{stop:?}: {} stored, {unacked_stored} of them never acknowledged",
        stored.len()
    );

    // The producer carried on across the restart: with a 60 s message timeout every message
    // is acknowledged in the end (Kafka manages this; a broker that forgets producer state
    // or refuses the retried batches does not).
    assert!(
        failures.is_empty(),
        "{} messages never acknowledged across the restart: {failures:?}",
        N - acked.len()
    );

    // The restarted broker appends where the log ends.
    let (p2, log2) = logged_producer(&idempotent_producer_config(&bs));
    let after = Instant::now() + Duration::from_secs(30);
    for p in 0..PARTS {
        send_retrying(
            &p2,
            BaseRecord::with_opaque_to(&topic, p as usize)
                .partition(p)
                .payload(&b"tail"[..]),
            after,
        );
    }
    p2.flush(Duration::from_secs(30)).expect("flush tail");
    for d in log2.snapshot() {
        let off = d
            .result
            .clone()
            .unwrap_or_else(|e| panic!("tail produce to {}: {e:?}", d.partition));
        assert_eq!(
            off,
            read[&d.partition].len() as i64,
            "partition {}: next offset",
            d.partition
        );
    }
    broker.assert_alive();
}

/// The fault suite's slow disk (`/faults/sync-delay-ms/N`, only with `SLUICE_TEST_FAULTS=1`):
/// every fdatasync waits first, so an acks=all produce takes at least the delay, and what
/// it acknowledged is read back once the disk is fast again.
#[test]
fn a_slow_disk_delays_acks_all_and_loses_nothing() {
    const DELAY_MS: u64 = 300;
    run_bounded("slow_disk", TEST_LIMIT, || {
        let plain = Broker::start();
        let (status, _) = admin_get(plain.admin_port(), "/faults/sync-delay-ms/1").unwrap();
        assert!(
            status.contains("404"),
            "the hook is off by default: {status}"
        );
        drop(plain);

        let broker = Broker::start_with(BrokerOpts {
            cores: 1,
            env: vec![("SLUICE_TEST_FAULTS".into(), "1".into())],
            ..BrokerOpts::default()
        });
        let bootstrap = broker.bootstrap().to_string();
        let topic = unique_name("slow-disk");
        create_topic(&bootstrap, &topic, 1, &[]);
        let admin = broker.admin_port();
        let (status, _) = admin_get(admin, "/faults/sync-delay-ms/999999").unwrap();
        assert!(status.contains("400"), "a delay past the bound: {status}");
        let (status, _) = admin_get(admin, &format!("/faults/sync-delay-ms/{DELAY_MS}")).unwrap();
        assert!(status.contains("200"), "{status}");

        let mut s = connect(broker.addr(), Duration::from_secs(10)).expect("connect");
        let mut offsets = Vec::new();
        for _ in 0..3 {
            let batch = encode_batch(&records(5, 16));
            let started = Instant::now();
            let r = send_request(&mut s, &produce_request(&topic, vec![(0, batch)]), 9);
            let took = started.elapsed();
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "{r:?}");
            assert!(
                took >= Duration::from_millis(DELAY_MS),
                "acks=all answered in {took:?}, before the delayed fdatasync"
            );
            offsets.push(p.base_offset);
        }
        let (status, _) = admin_get(admin, "/faults/sync-delay-ms/0").unwrap();
        assert!(status.contains("200"), "{status}");
        assert_eq!(offsets, vec![0, 5, 10]);
        let read = read_until(&bootstrap, &topic, 1, Duration::from_secs(30), |r| {
            r.values().map(Vec::len).sum::<usize>() >= 15
        });
        let got: Vec<i64> = read[&0].iter().map(|m| m.offset()).collect();
        assert_eq!(got, (0..15).collect::<Vec<_>>());
    });
}
