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

#[test]
fn sigkill_never_loses_acknowledged_batches() {
    let iterations: usize = std::env::var("SLUICE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ std::process::id() as u64;
    let mut acked = 0u64;
    let mut rounds_with_acks = 0;
    for round in 0..iterations {
        let kill_after = Duration::from_millis(20 + xorshift(&mut seed) % 300);
        let (started, last_ack) = run_and_kill_child("crash_child", CHILD_ENV, &dir, kill_after);
        if let Some(s) = started {
            assert!(
                s >= acked,
                "round {round}: child restarted at {s} below acked {acked}"
            );
        }
        if let Some(a) = last_ack {
            acked = acked.max(a);
            rounds_with_acks += 1;
        }
        verify(&dir, acked, round);
    }
    // A child that dies before writing anything would make every check pass vacuously.
    assert!(
        rounds_with_acks * 2 >= iterations,
        "only {rounds_with_acks} of {iterations} children acknowledged anything"
    );
    eprintln!("{iterations} SIGKILLs survived; {acked} batches acknowledged");
}

/// Reopens the log in this process and checks the acknowledged prefix byte for byte.
fn verify(dir: &Path, acked: u64, round: usize) {
    let dir = dir.to_path_buf();
    run(move |_| async move {
        let log = open(&dir, config()).await;
        let end = log.end().next_offset.0;
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
}
