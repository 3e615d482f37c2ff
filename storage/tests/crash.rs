//! Crash test: a child process appends and reports each durably acknowledged offset; the
//! parent SIGKILLs it at random moments, reopens, and checks every acknowledged batch is there
//! byte for byte, the log is a contiguous prefix of what was written, and appending continues.
//!
//! `SLUICE_CRASH_ITERATIONS` (default 60) sets the number of kills; raise it for a soak.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sluice_storage::*;

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 4096,
        // Kills land between checkpoints of the active segment's index as well.
        recovery_checkpoint_bytes: 32 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Batch `i` holds one record; its bytes are a pure function of `i` so the parent can check
/// them without being told.
fn batch_for(i: u64) -> Vec<u8> {
    let len = 50 + (i.wrapping_mul(2654435761) % 12_000) as usize;
    let body: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    batch(1, i as i64, &body)
}

/// The child half: runs only when the parent re-executes this test binary.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    run(move |_| async move {
        let dir = Path::new(&dir);
        let log = std::rc::Rc::new(open(dir, config()).await);
        let mut i = log.end().next_offset.0;
        println!("START {i}");
        loop {
            // Several appends share each flush, like concurrent producers do.
            let group = 1 + i % 7;
            for _ in 0..group {
                let a = log.append(&batch_for(i), Term(1)).await.unwrap();
                assert_eq!(a.base_offset.0, i);
                i += 1;
            }
            let durable = log.flush().await.unwrap();
            println!("ACK {}", durable.next_offset.0);
        }
    });
}

/// A directory is retired for a fresh one once its log holds this many batches (~20 MB), so
/// each round's byte-for-byte verify stays short however fast the children write.
const BATCHES_PER_DIR: u64 = 3_000;

#[test]
fn sigkill_never_loses_acknowledged_batches() {
    let iterations: usize = std::env::var("SLUICE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let mut generation = 0;
    let mut dir = tmp.path().join("p0");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ std::process::id() as u64;
    let (mut acked, mut total_acked) = (0u64, 0u64);
    let (mut opened_rounds, mut opened_rounds_with_acks) = (0, 0);
    for round in 0..iterations {
        // Even rounds may die while the child recovers the log; odd ones die once it is open,
        // so they write before they die however long the process takes to start.
        let kill = if round % 2 == 0 {
            KillAt::AfterSpawn(Duration::from_millis(20 + xorshift(&mut seed) % 300))
        } else {
            KillAt::AfterOpen(Duration::from_millis(10 + xorshift(&mut seed) % 150))
        };
        let (started, last_ack) = run_and_kill_child("crash_child", CHILD_ENV, &dir, kill);
        if let Some(s) = started {
            assert!(
                s >= acked,
                "round {round}: child restarted at {s} below acked {acked}"
            );
        }
        if matches!(kill, KillAt::AfterOpen(_)) {
            opened_rounds += 1;
            opened_rounds_with_acks += usize::from(last_ack.is_some());
        }
        if let Some(a) = last_ack {
            total_acked += a.saturating_sub(acked);
            acked = acked.max(a);
        }
        let end = verify(&dir, acked, round);
        if end >= BATCHES_PER_DIR {
            generation += 1;
            dir = tmp.path().join(format!("p{generation}"));
            acked = 0;
        }
    }
    // A child that dies before writing anything would make every check pass vacuously.
    assert!(
        opened_rounds_with_acks * 2 >= opened_rounds,
        "only {opened_rounds_with_acks} of {opened_rounds} children killed after opening \
         the log acknowledged anything"
    );
    eprintln!(
        "{iterations} SIGKILLs survived; {total_acked} batches acknowledged in {} logs",
        generation + 1
    );
}

/// Reopens the log in this process, checks the acknowledged prefix byte for byte and returns
/// the recovered end.
fn verify(dir: &Path, acked: u64, round: usize) -> u64 {
    let dir = dir.to_path_buf();
    let recovered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out = recovered.clone();
    run(move |_| async move {
        let log = open(&dir, config()).await;
        let end = log.end().next_offset.0;
        out.store(end, std::sync::atomic::Ordering::Relaxed);
        assert!(
            end >= acked,
            "round {round}: recovered end {end} < acknowledged {acked}"
        );
        let got = log.read(Offset(0), usize::MAX, Offset(end)).await.unwrap();
        assert_eq!(got.len() as u64, end, "round {round}: contiguous prefix");
        for (i, b) in got.iter().enumerate() {
            assert_eq!(base_offset(b), i as u64);
            assert_eq!(
                client_part(b),
                client_part(&batch_for(i as u64)),
                "round {round}: batch {i}"
            );
        }
    });
    recovered.load(std::sync::atomic::Ordering::Relaxed)
}
