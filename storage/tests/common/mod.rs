//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;

use glommio::LocalExecutorBuilder;
use sluice_storage::{LogConfig, PartitionLog};

/// Runs `f` on a fresh glommio executor with a fresh directory.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p0");
    LocalExecutorBuilder::default()
        .spawn(move || f(path))
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
