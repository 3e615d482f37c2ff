//! Key-based compaction: the latest value of every key survives, superseded records go,
//! offsets never move, and a crash or a lost index at any point leaves a readable log.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{keyed_batch, read_all, run, small_config};
use sluice_storage::{parse_header, CompactionOptions, LogConfig, Offset, PartitionLog, Term};

const NOW_MS: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

fn latest(records: &[(u64, String, Option<String>)]) -> BTreeMap<String, (u64, Option<String>)> {
    records
        .iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

fn opts() -> CompactionOptions {
    CompactionOptions {
        now_ms: NOW_MS,
        delete_retention_ms: DAY_MS,
        max_key_map_bytes: 1 << 20,
    }
}

fn no_codec(_: i16, _: &[u8]) -> Result<Vec<u8>, String> {
    Err("no codecs in this test".into())
}

/// `rounds` updates of `keys` keys, one record per batch, spread over many small segments.
async fn fill(log: &PartitionLog, keys: usize, rounds: usize) {
    for round in 0..rounds {
        for k in 0..keys {
            let key = format!("key-{k}");
            let value = format!("value-{round}-{k}");
            let b = keyed_batch(&[(&key, Some(&value))], NOW_MS as i64, -1, -1);
            log.append(&b, Term(1)).await.expect("append");
        }
        log.flush().await.expect("flush");
    }
}

async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).await.expect("open")
}

#[test]
fn keeps_the_latest_value_of_every_key_and_survives_reopen() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        fill(&log, 10, 40).await;
        let before = read_all(&log).await;
        let want = latest(&before);
        let size_before = log.size_bytes();
        let end = log.end();
        assert!(log.segment_count() > 5, "test needs several segments");
        assert_eq!(log.dirty_ratio(), 1.0);

        let stats = log.compact(&opts(), &no_codec).await.expect("compact");
        assert!(stats.segments_rewritten > 0, "{stats:?}");
        assert!(stats.records_removed > 0);
        assert_eq!(log.dirty_ratio(), 0.0);
        let after = read_all(&log).await;
        assert_eq!(latest(&after), want, "latest value per key");
        assert!(
            after.len() < before.len() / 2,
            "{} of {}",
            after.len(),
            before.len()
        );
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "offsets ascend");
        for r in &after {
            assert!(before.contains(r), "record {r:?} was not written");
        }
        assert_eq!(log.end(), end, "the end does not move");
        assert!(log.size_bytes() < size_before / 2);

        // Appends and a second pass after the first.
        fill(&log, 10, 5).await;
        log.compact(&opts(), &no_codec)
            .await
            .expect("compact again");
        let mut again = read_all(&log).await;
        log.close().await.expect("close");

        // Reopen with the indexes, then with every index deleted (a crash right after the
        // rename): the scan accepts the Raft index gaps compaction left.
        for drop_indexes in [false, true] {
            if drop_indexes {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.extension()
                        .is_some_and(|x| x == "index" || x == "timeindex")
                    {
                        std::fs::remove_file(p).unwrap();
                    }
                }
            }
            let log = open(&dir, small_config()).await;
            let reread = read_all(&log).await;
            assert_eq!(reread, again, "drop_indexes={drop_indexes}");
            // Appending still continues the log.
            let b = keyed_batch(&[("key-0", Some("last"))], NOW_MS as i64, -1, -1);
            let a = log.append(&b, Term(1)).await.unwrap();
            assert_eq!(Offset(a.base_offset.0 + 1), log.end().next_offset);
            log.flush().await.unwrap();
            again.push((a.base_offset.0, "key-0".into(), Some("last".into())));
            drop(log);
        }
    });
}

#[test]
fn tombstones_go_after_delete_retention_and_never_resurrect_a_key() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        fill(&log, 4, 10).await;
        // Delete key-1 (old tombstone) and key-2 (recent tombstone).
        let old = keyed_batch(&[("key-1", None)], (NOW_MS - 2 * DAY_MS) as i64, -1, -1);
        let recent = keyed_batch(&[("key-2", None)], NOW_MS as i64, -1, -1);
        log.append(&old, Term(1)).await.unwrap();
        log.append(&recent, Term(1)).await.unwrap();
        fill(&log, 1, 30).await; // push both into sealed segments
        log.compact(&opts(), &no_codec).await.expect("compact");
        let keys = latest(&read_all(&log).await);
        assert!(
            !keys.contains_key("key-1"),
            "old tombstone and key-1 are gone"
        );
        assert_eq!(
            keys.get("key-2").map(|v| v.1.clone()),
            Some(None),
            "recent tombstone stays"
        );
        assert!(keys.get("key-3").is_some_and(|v| v.1.is_some()));
        let all = read_all(&log).await;
        assert_eq!(all.iter().filter(|r| r.1 == "key-2").count(), 1, "{all:?}");
    });
}

#[test]
fn a_producers_last_batch_stays_as_an_empty_batch() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        // Producer 7's only batch is superseded by producer 8's later writes.
        let b = keyed_batch(&[("k", Some("from-7"))], NOW_MS as i64, 7, 0);
        let p7 = log.append(&b, Term(1)).await.unwrap().base_offset;
        for i in 0..300 {
            let b = keyed_batch(&[("k", Some("from-8"))], NOW_MS as i64, 8, i);
            log.append(&b, Term(1)).await.unwrap();
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() > 2);
        log.compact(&opts(), &no_codec).await.expect("compact");
        let batches = log.read(p7, 1, log.end().next_offset).await.unwrap();
        let h = parse_header(&batches[0]).unwrap();
        assert_eq!((h.base_offset as u64, h.producer_id), (p7.0, 7));
        assert_eq!(h.records_count, 0, "emptied, not dropped");
        assert_eq!(h.base_sequence, 0);
        // Producer 8's superseded batches in sealed segments were dropped (each keeps its
        // last batch; the active segment is never compacted).
        let all = read_all(&log).await;
        let ks: Vec<_> = all.iter().filter(|r| r.1 == "k").collect();
        assert!(ks.len() < 100, "{} of 301 left", ks.len());
        assert_eq!(ks.last().unwrap().2.as_deref(), Some("from-8"));
    });
}

#[test]
fn a_stray_cleaned_file_from_a_crash_is_removed_at_open() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        fill(&log, 3, 20).await;
        let before = read_all(&log).await;
        log.close().await.unwrap();
        let stray = dir.join(format!("{:020}.cleaned", 0));
        std::fs::write(&stray, vec![0xAB; 5000]).unwrap();
        let log = open(&dir, small_config()).await;
        assert!(!stray.exists());
        assert_eq!(read_all(&log).await, before);
    });
}

#[test]
fn reads_during_compaction_see_every_latest_value() {
    run(|dir| async move {
        let config = LogConfig {
            cache_bytes: 0,
            ..small_config()
        };
        let log = std::rc::Rc::new(open(&dir, config).await);
        fill(&log, 8, 30).await;
        let want = latest(&read_all(&log).await);
        let l2 = log.clone();
        let compaction =
            glommio::spawn_local(
                async move { l2.compact(&opts(), &no_codec).await.expect("compact") },
            );
        for _ in 0..20 {
            assert_eq!(latest(&read_all(&log).await), want);
            glommio::yield_if_needed().await;
        }
        compaction.await;
        assert_eq!(latest(&read_all(&log).await), want);
    });
}

#[test]
fn small_compacted_segments_merge_and_a_crash_mid_merge_recovers() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        fill(&log, 5, 150).await;
        let sealed_before = log.segment_count() - 1;
        assert!(sealed_before > 5);
        // Keep a copy of the second segment: after the merge it is what a crash between the
        // rename and the delete would leave behind.
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let second = logs[1].clone();
        let second_copy = std::fs::read(&second).unwrap();

        log.compact(&opts(), &no_codec).await.expect("first pass");
        log.compact(&opts(), &no_codec)
            .await
            .expect("second pass merges");
        let records = read_all(&log).await;
        assert!(
            log.segment_count() - 1 < sealed_before / 3,
            "{} sealed segments left of {sealed_before}",
            log.segment_count() - 1
        );
        assert!(!second.exists(), "merged away");
        log.close().await.unwrap();

        std::fs::write(&second, &second_copy).unwrap();
        let log = open(&dir, small_config()).await;
        assert!(!second.exists(), "the leftover is removed at open");
        assert_eq!(read_all(&log).await, records);
        let b = keyed_batch(&[("key-1", Some("after"))], NOW_MS as i64, -1, -1);
        let a = log.append(&b, Term(1)).await.unwrap();
        assert_eq!(Offset(a.base_offset.0 + 1), log.end().next_offset);
    });
}

#[test]
fn raft_reads_stay_dense_across_compaction() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        // A term starts with an internal entry, as a Raft leader's blank entry.
        log.append_internal(&[1], Term(1)).await.unwrap();
        fill(&log, 4, 20).await;
        log.append_internal(&[1], Term(2)).await.unwrap();
        let b = keyed_batch(&[("key-0", Some("t2"))], NOW_MS as i64, -1, -1);
        log.append(&b, Term(2)).await.unwrap();
        log.flush().await.unwrap();
        let (start, end) = (log.start().raft_index, log.end().next_raft_index);
        let before = log.entries(start, end, usize::MAX).await.unwrap();
        let stats = log.compact(&opts(), &no_codec).await.expect("compact");
        assert!(stats.records_removed > 0, "{stats:?}");

        // Every index reads back, from any start: a removed entry as an empty internal
        // entry of the term of the entry before it.
        for from in [start.0, start.0 + 1, start.0 + 7, end.0 - 3] {
            let after = log
                .entries(sluice_storage::RaftIndex(from), end, usize::MAX)
                .await
                .unwrap();
            let want: Vec<_> = before.iter().filter(|e| e.raft_index.0 >= from).collect();
            assert_eq!(after.len(), want.len(), "from {from}");
            for (a, b) in after.iter().zip(want) {
                assert_eq!(
                    (a.raft_index, a.term),
                    (b.raft_index, b.term),
                    "from {from}"
                );
                if a.payload.is_empty() {
                    assert_eq!(a.kind, sluice_storage::EntryKind::Internal);
                } else {
                    assert_eq!(a, b, "kept entries are unchanged");
                }
            }
        }
        assert!(
            log.entries(start, end, usize::MAX)
                .await
                .unwrap()
                .iter()
                .any(|e| e.payload.is_empty()),
            "compaction removed some entries"
        );
    });
}
