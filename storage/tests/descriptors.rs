//! Descriptors do not grow with segments or partitions: under a soft `RLIMIT_NOFILE` far
//! below the number of segment files and logs, many logs with many sealed segments are
//! written, read back whole, closed, reopened and read again. Its own test binary, because it
//! lowers the limit of the whole process.

mod common;

use common::*;
use sluice_storage::*;

/// The process's soft descriptor limit for this test.
const NOFILE: u64 = 128;
/// Segment files the executor thread may keep open.
const OPEN_FILES: usize = 16;
const LOGS: usize = 150;
const BATCHES_PER_LOG: u64 = 40;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .count()
}

fn body(log: usize, i: u64) -> Vec<u8> {
    (0..600)
        .map(|j| (log * 7 + i as usize * 13 + j) as u8)
        .collect()
}

/// Reads every batch of log `i` back and compares it with what was written.
async fn check(log: &PartitionLog, i: usize) {
    let end = log.end().next_offset;
    let mut n = 0;
    while Offset(n) < end {
        let batches = log.read(Offset(n), 1 << 20, end).await.expect("read");
        for b in &batches {
            assert_eq!(base_offset(b), n, "log {i}: offset");
            assert_eq!(&b[61..], &body(i, n)[..], "log {i}: batch {n} bytes");
            n += 1;
        }
    }
    assert_eq!(n, BATCHES_PER_LOG, "log {i}: every batch back");
}

#[test]
fn descriptors_stay_bounded_with_many_segments_and_logs() {
    let limit = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: setrlimit with a valid struct; it only lowers this process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    run(|root| async move {
        set_open_files_max(OPEN_FILES);
        let config = LogConfig {
            // A few batches a segment: ~6,000 segment files over all logs.
            segment_bytes: 2 * 1024,
            ..small_config()
        };
        let dir = |i: usize| root.join(format!("log-{i}"));
        let mut logs = Vec::new();
        let mut peak = 0;
        for i in 0..LOGS {
            let log = open(&dir(i), config.clone()).await;
            for b in 0..BATCHES_PER_LOG {
                log.append(&batch(1, b as i64, &body(i, b)), Term(1))
                    .await
                    .expect("append");
            }
            log.flush().await.expect("flush");
            peak = peak.max(open_descriptors());
            logs.push(log);
        }
        let segments: usize = logs.iter().map(|l| l.segment_count()).sum();
        assert!(
            segments > 10 * NOFILE as usize,
            "only {segments} segments; the test must exceed the descriptor limit"
        );
        for (i, log) in logs.iter().enumerate() {
            check(log, i).await;
            peak = peak.max(open_descriptors());
        }
        for log in logs.drain(..) {
            log.close().await.expect("close");
        }
        for i in 0..LOGS {
            let log = open(&dir(i), config.clone()).await;
            check(&log, i).await;
            peak = peak.max(open_descriptors());
            logs.push(log);
        }
        let (cached, _) = open_files_stats();
        assert!(cached <= OPEN_FILES, "{cached} files cached");
        assert!(
            peak < NOFILE as usize,
            "{peak} descriptors open at the peak"
        );
        println!(
            "{LOGS} logs, {segments} segments, at most {peak} descriptors open (limit {NOFILE})"
        );
    });
}
