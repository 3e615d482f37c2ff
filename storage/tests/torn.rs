//! Torn and corrupt files: reopen recovers to the last valid batch, never returns corrupt
//! bytes, and appending continues.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::*;
use sluice_storage::*;

const BATCHES: u64 = 60;

fn body(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 100 + (i as usize * 37) % 700]
}

/// Writes `BATCHES` one-record batches, flushes, and drops the log without a clean close.
async fn fill(dir: &Path) -> Vec<u64> {
    let log = open(dir, small_config()).await;
    let mut ends = Vec::new();
    for i in 0..BATCHES {
        log.append(&batch(1, i as i64, &body(i)), Term(1))
            .await
            .unwrap();
        log.flush().await.unwrap();
        ends.push(log.size_bytes());
    }
    ends
}

fn segments(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Reopens and checks the log holds exactly batches `0..expect` with the right bytes, each
/// passing CRC validation, then that appending continues at `expect`.
async fn check_recovered(dir: &Path, expect: u64) {
    let log = open(dir, small_config()).await;
    assert_eq!(log.end().next_offset, Offset(expect), "recovered end");
    let got = log
        .read(Offset(0), usize::MAX, Offset(expect))
        .await
        .unwrap();
    assert_eq!(got.len() as u64, expect);
    for (i, b) in got.iter().enumerate() {
        validate_batch(b, 1 << 20).expect("stored batch validates");
        assert_eq!(base_offset(b), i as u64);
        assert_eq!(
            client_part(b),
            client_part(&batch(1, i as i64, &body(i as u64)))
        );
    }
    let a = log.append(&batch(1, 0, b"after"), Term(2)).await.unwrap();
    assert_eq!(a.base_offset, Offset(expect));
    log.flush().await.unwrap();
    drop(log);
    let log = open(dir, small_config()).await;
    assert_eq!(log.end().next_offset, Offset(expect + 1));
}

fn last_segment_len(dir: &Path) -> (PathBuf, u64) {
    let p = segments(dir, "log").pop().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    (p, len)
}

#[test]
fn cut_mid_batch() {
    run(|dir| async move {
        let ends = fill(&dir).await;
        let (p, _) = last_segment_len(&dir);
        let content = segment_content(&p);
        let last_frame = ends[BATCHES as usize - 1] - ends[BATCHES as usize - 2];
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(content - last_frame / 2).unwrap();
        check_recovered(&dir, BATCHES - 1).await;
    });
}

/// Bytes of frames in a segment file (up to the zero padding).
fn segment_content(p: &Path) -> u64 {
    let b = std::fs::read(p).unwrap();
    let mut pos = 0usize;
    while pos + 32 <= b.len() && b[pos..pos + 4] == 0x46434c53u32.to_le_bytes() {
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += 32 + len;
    }
    pos as u64
}

#[test]
fn flipped_byte_in_tail() {
    run(|dir| async move {
        fill(&dir).await;
        let (p, _) = last_segment_len(&dir);
        let content = segment_content(&p);
        let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(content - 5)).unwrap();
        f.write_all(&[0xAA]).unwrap();
        check_recovered(&dir, BATCHES - 1).await;
    });
}

#[test]
fn zeroed_tail_block() {
    run(|dir| async move {
        fill(&dir).await;
        let (p, _) = last_segment_len(&dir);
        let content = segment_content(&p);
        let block = (content - 1) & !4095;
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(block)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        // Everything whose frame starts in or crosses into the zeroed block is gone.
        let log_expect = count_frames_before(&p, block);
        let sealed = sealed_batches(&dir);
        check_recovered(&dir, sealed + log_expect).await;
    });
}

fn count_frames_before(p: &Path, limit: u64) -> u64 {
    let b = std::fs::read(p).unwrap();
    let mut pos = 0usize;
    let mut n = 0;
    while pos + 32 <= b.len() && b[pos..pos + 4] == 0x46434c53u32.to_le_bytes() {
        let len = 32 + u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if (pos + len) as u64 > limit {
            break;
        }
        pos += len;
        n += 1;
    }
    n
}

fn sealed_batches(dir: &Path) -> u64 {
    let segs = segments(dir, "log");
    segs.iter()
        .rev()
        .skip(1)
        .map(|p| count_frames_before(p, u64::MAX))
        .sum()
}

#[test]
fn deleted_and_garbled_indexes_are_rebuilt() {
    run(|dir| async move {
        fill(&dir).await;
        let idx = segments(&dir, "index");
        let time = segments(&dir, "timeindex");
        assert!(idx.len() >= 2, "several sealed segments");
        std::fs::remove_file(&idx[0]).unwrap();
        std::fs::remove_file(&time[1]).unwrap();
        let mut g = std::fs::read(&idx[1]).unwrap();
        g[40] ^= 0x5a;
        std::fs::write(&idx[1], g).unwrap();
        std::fs::write(&idx[idx.len() - 1], b"garbage").unwrap();
        check_recovered(&dir, BATCHES).await;
        // Rebuilt indexes are written back and trusted next time.
        assert_eq!(
            segments(&dir, "index").len(),
            segments(&dir, "log").len() - 1
        );
    });
}

#[test]
fn garbage_after_a_clean_end_is_cut() {
    run(|dir| async move {
        fill(&dir).await;
        let (p, len) = last_segment_len(&dir);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&vec![0x46u8; 10_000]).unwrap();
        drop(f);
        assert!(std::fs::metadata(&p).unwrap().len() > len);
        check_recovered(&dir, BATCHES).await;
    });
}
