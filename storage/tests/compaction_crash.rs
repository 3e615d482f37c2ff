//! Crash test for compaction: a child process appends keyed batches on small segments and
//! compacts after every few flushes; the parent SIGKILLs it at random moments (during
//! rewrites, renames and merges too), reopens, and checks that every acknowledged key still
//! has its latest acknowledged value, nothing reads back that was not written, offsets only
//! ascend, and appending continues where the log ended.
//!
//! `SLUICE_CRASH_ITERATIONS` (default 60) sets the number of kills; this test makes half as
//! many.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use sluice_storage::*;

const CHILD_ENV: &str = "SLUICE_COMPACTION_CRASH_CHILD_DIR";
const KEYS: u64 = 13;
const TS: i64 = 1_800_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        cache_bytes: 16 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The batch at offset `i`: key `k{i % KEYS}`, value `v{i}`.
fn batch_for(i: u64) -> Vec<u8> {
    let (k, v) = (format!("k{}", i % KEYS), format!("v{i}"));
    keyed_batch(&[(&k, Some(&v))], TS, -1, -1)
}

fn no_codec(_: i16, _: &[u8]) -> Result<Vec<u8>, String> {
    Err("uncompressed only".into())
}

/// The child half: runs only when the parent re-executes this test binary.
#[test]
fn compaction_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run(move |_| async move {
        let log = open(Path::new(&dir), config()).await;
        let mut i = log.end().next_offset.0;
        println!("START {i}");
        let opts = CompactionOptions {
            now_ms: TS as u64,
            delete_retention_ms: 0,
            max_key_map_bytes: 1 << 20,
        };
        for round in 0u64.. {
            for _ in 0..1 + round % 5 {
                let a = log.append(&batch_for(i), Term(1)).await.unwrap();
                assert_eq!(a.base_offset.0, i);
                i += 1;
            }
            let durable = log.flush().await.unwrap();
            println!("ACK {}", durable.next_offset.0);
            if round % 4 == 0 {
                log.compact(&opts, &no_codec).await.unwrap();
            }
        }
    });
}

#[test]
fn sigkill_during_compaction_keeps_every_latest_value() {
    let iterations: usize = std::env::var("SLUICE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        / 2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ std::process::id() as u64;
    let mut acked = 0u64;
    let (mut opened_rounds, mut opened_rounds_with_acks) = (0, 0);
    for round in 0..iterations {
        // Even rounds may die while the child recovers the log; odd ones die once it is open,
        // so they write before they die however long the process takes to start.
        let kill = if round % 2 == 0 {
            KillAt::AfterSpawn(Duration::from_millis(30 + xorshift(&mut seed) % 300))
        } else {
            KillAt::AfterOpen(Duration::from_millis(10 + xorshift(&mut seed) % 150))
        };
        let (_, last_ack) = run_and_kill_child("compaction_crash_child", CHILD_ENV, &dir, kill);
        if matches!(kill, KillAt::AfterOpen(_)) {
            opened_rounds += 1;
            opened_rounds_with_acks += usize::from(last_ack.is_some());
        }
        if let Some(a) = last_ack {
            acked = acked.max(a);
        }
        verify(&dir, acked, round);
    }
    // A child that dies before writing anything would make every check pass vacuously.
    assert!(
        opened_rounds_with_acks * 2 >= opened_rounds,
        "only {opened_rounds_with_acks} of {opened_rounds} children killed after opening \
         the log acknowledged anything"
    );
    eprintln!("{iterations} SIGKILLs during compaction survived; {acked} batches acknowledged");
}

fn verify(dir: &Path, acked: u64, round: usize) {
    let dir = dir.to_path_buf();
    run(move |_| async move {
        let log = open(&dir, config()).await;
        let end = log.end().next_offset.0;
        assert!(
            end >= acked,
            "round {round}: end {end} < acknowledged {acked}"
        );
        let records = read_all(&log).await;
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        let mut prev = None;
        for (offset, key, value) in &records {
            assert!(prev < Some(*offset), "round {round}: offsets ascend");
            prev = Some(*offset);
            assert_eq!(
                key,
                &format!("k{}", offset % KEYS),
                "round {round}: key at {offset}"
            );
            assert_eq!(value.as_deref(), Some(format!("v{offset}").as_str()));
            latest.insert(key.clone(), *offset);
        }
        // Every key's newest record below the end is still there, and it is the newest.
        for k in 0..KEYS.min(end) {
            let newest = (0..end).rev().find(|o| o % KEYS == k).expect("some offset");
            assert_eq!(
                latest.get(&format!("k{k}")),
                Some(&newest),
                "round {round}: latest of k{k} below {end}"
            );
        }
        let a = log.append(&batch_for(end), Term(1)).await.unwrap();
        assert_eq!(a.base_offset.0, end, "round {round}: appends continue");
        log.flush().await.unwrap();
    });
}
