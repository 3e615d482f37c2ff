//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;

use glommio::LocalExecutorBuilder;
use sluice_storage::{parse_header, LogConfig, Offset, PartitionLog, BATCH_HEADER_BYTES};

/// Runs `f` on a fresh glommio executor with a fresh directory.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            f(path).await;
            // Close what the file cache holds while the reactor still runs (each test
            // thread is short-lived; crash tests run dozens in one process).
            sluice_storage::close_idle_files();
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        })
        .expect("spawn executor")
        .join()
        .expect("executor panicked");
    drop(dir);
}

/// Builds a valid uncompressed RecordBatch v2 with `n` records, timestamps `ts`, and an
/// opaque record area `body` (storage never parses records).
pub fn batch(n: i32, ts: i64, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 61];
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    b.extend_from_slice(body);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    fix_crc(&mut b);
    b
}

pub fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The client-owned part of a batch: everything except base offset and leader epoch.
pub fn client_part(b: &[u8]) -> (&[u8], &[u8]) {
    (&b[8..12], &b[16..])
}

pub fn base_offset(b: &[u8]) -> u64 {
    i64::from_be_bytes(b[0..8].try_into().unwrap()) as u64
}

pub fn epoch(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[12..16].try_into().unwrap())
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        cache_bytes: 4 * 1024,
        max_unflushed_bytes: 64 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).await.expect("open log")
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An uncompressed batch of keyed records (`None` value = tombstone) from producer `pid`.
pub fn keyed_batch(records: &[(&str, Option<&str>)], ts: i64, pid: i64, seq: i32) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = Vec::new();
        r.push(0); // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64);
        varint(&mut r, k.len() as i64);
        r.extend_from_slice(k.as_bytes());
        match v {
            Some(v) => {
                varint(&mut r, v.len() as i64);
                r.extend_from_slice(v.as_bytes());
            }
            None => varint(&mut r, -1),
        }
        varint(&mut r, 0); // headers
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = batch(records.len() as i32, ts, &body);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    fix_crc(&mut b);
    b
}

fn read_varint(b: &[u8], at: &mut usize) -> i64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return (v >> 1) as i64 ^ -((v & 1) as i64);
        }
        shift += 7;
    }
}

/// Every record as (offset, key, value), in log order, checking each batch's CRC.
pub async fn read_all(log: &PartitionLog) -> Vec<(u64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut from = log.start().offset;
    let end = log.end().next_offset;
    while from < end {
        let batches = log.read(from, 1 << 20, end).await.expect("read");
        assert!(!batches.is_empty(), "no batch at {from:?} below {end:?}");
        for b in &batches {
            let h = parse_header(b).expect("header");
            let crc = u32::from_be_bytes(b[17..21].try_into().unwrap());
            assert_eq!(
                crc,
                crc32c::crc32c(&b[21..]),
                "batch CRC at {}",
                h.base_offset
            );
            let mut at = BATCH_HEADER_BYTES;
            for _ in 0..h.records_count {
                let len = read_varint(b, &mut at) as usize;
                let end = at + len;
                at += 1;
                read_varint(b, &mut at);
                let delta = read_varint(b, &mut at);
                let kl = read_varint(b, &mut at) as usize;
                let k = String::from_utf8(b[at..at + kl].to_vec()).unwrap();
                at += kl;
                let vl = read_varint(b, &mut at);
                let v =
                    (vl >= 0).then(|| String::from_utf8(b[at..at + vl as usize].to_vec()).unwrap());
                out.push((h.base_offset as u64 + delta as u64, k, v));
                at = end;
            }
            from = Offset(h.base_offset as u64 + h.last_offset_delta as u64 + 1);
        }
    }
    out
}

/// xorshift64: the crash tests' reproducible random kill times.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Upper bound on one crash child's life, so a hung child can't hang a test.
pub const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// When a crash child is SIGKILLed.
#[derive(Clone, Copy, Debug)]
pub enum KillAt {
    /// This long after it was spawned: it may die while it opens (recovers) the log.
    AfterSpawn(std::time::Duration),
    /// This long after its `START n` line, once the log is open: on a loaded machine process
    /// start alone can outlast any fixed delay, and a child that dies before it writes tests
    /// nothing.
    AfterOpen(std::time::Duration),
}

/// Re-executes this test binary running only `child_test` with `env=dir`, SIGKILLs it as
/// `kill` says, and returns the last `START n` and `ACK n` it printed.
pub fn run_and_kill_child(
    child_test: &str,
    env: &str,
    dir: &Path,
    kill: KillAt,
) -> (Option<u64>, Option<u64>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t0 = std::time::Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut started, mut last_ack) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("ACK ") {
                last_ack = v.trim().parse::<u64>().ok();
            } else if let Some((_, v)) = line.split_once("START ") {
                // The harness prints `test <name> ... ` without a newline before it.
                started = v.trim().parse::<u64>().ok();
                let _ = opened_tx.send(());
            }
        }
        (started, last_ack)
    });
    match kill {
        KillAt::AfterSpawn(after) => std::thread::sleep(after),
        KillAt::AfterOpen(after) => {
            // A child that never opens its log is killed at half the deadline.
            let _ = opened.recv_timeout(CHILD_DEADLINE / 2);
            std::thread::sleep(after);
        }
    }
    // SIGKILL: no destructor, no flush, exactly like a power cut for this process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(t0.elapsed() < CHILD_DEADLINE);
    reader.join().unwrap()
}
