//! One test per operation of `PartitionLog`, each checking behaviour through the public API.

mod common;

use common::*;
use sluice_storage::*;

#[test]
fn append_assigns_offsets_raft_indexes_and_epoch() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        let a = log.append(&batch(3, 10, b"abc"), Term(5)).await.unwrap();
        assert_eq!(
            (a.base_offset, a.last_offset, a.raft_index),
            (Offset(0), Offset(2), RaftIndex(0))
        );
        let b = log.append(&batch(2, 11, b"de"), Term(5)).await.unwrap();
        assert_eq!(
            (b.base_offset, b.last_offset, b.raft_index),
            (Offset(3), Offset(4), RaftIndex(1))
        );
        assert_eq!(log.end().next_offset, Offset(5));
        let got = log.read(Offset(0), 1 << 20, Offset(5)).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(base_offset(&got[1]), 3);
        assert_eq!(epoch(&got[1]), 5);
        // The stored batch still validates: base offset and epoch are outside the CRC.
        validate_batch(&got[1], 1 << 20).unwrap();
        assert_eq!(client_part(&got[1]), client_part(&batch(2, 11, b"de")));
    });
}

#[test]
fn bad_batches_are_typed_errors_and_write_nothing() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                max_batch_bytes: 200,
                ..small_config()
            },
        )
        .await;
        let good = batch(2, 1, b"xy");
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        let mut bad_len = good.clone();
        bad_len.push(0);
        let mut bad_delta = good.clone();
        bad_delta[23..27].copy_from_slice(&7i32.to_be_bytes());
        fix_crc(&mut bad_delta);
        type Check = fn(&BatchError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (good[..30].to_vec(), |e| {
                matches!(e, BatchError::TooShort(30))
            }),
            (bad_crc, |e| matches!(e, BatchError::BadCrc { .. })),
            (bad_magic, |e| matches!(e, BatchError::BadMagic(1))),
            (bad_len, |e| matches!(e, BatchError::LengthMismatch { .. })),
            (bad_delta, |e| {
                matches!(e, BatchError::BadLastOffsetDelta { .. })
            }),
            (batch(0, 1, b""), |e| matches!(e, BatchError::NoRecords(0))),
            (batch(1, 1, &[7u8; 300]), |e| {
                matches!(e, BatchError::TooLarge { .. })
            }),
        ];
        for (b, want) in cases {
            match log.append(&b, Term(1)).await {
                Err(StorageError::InvalidBatch(e)) => assert!(want(&e), "unexpected {e:?}"),
                other => panic!("expected a batch error, got {other:?}"),
            }
        }
        assert_eq!(log.end(), LogEnd::default());
        assert_eq!(log.size_bytes(), 0);
    });
}

#[test]
fn flush_advances_durable_watermark_with_group_commit() {
    run(|dir| async move {
        let log = std::rc::Rc::new(open(&dir, small_config()).await);
        for i in 0..10 {
            log.append(&batch(1, i, b"v"), Term(1)).await.unwrap();
        }
        assert_eq!(log.durable_end().next_offset, Offset(0));
        // Many concurrent flushes share fdatasyncs and all see the data durable.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                glommio::spawn_local(async move { log.flush().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.next_offset >= Offset(10));
        }
        assert_eq!(log.durable_end().next_offset, Offset(10));
    });
}

#[test]
fn read_returns_whole_batches_bounded_by_max_bytes_and_upper_bound() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..20 {
            log.append(&batch(5, i, &[i as u8; 400]), Term(1))
                .await
                .unwrap();
        }
        // From the middle of a batch: that batch comes back whole.
        let r = log.read(Offset(7), 1, Offset(100)).await.unwrap();
        assert_eq!(r.len(), 1, "at least one batch even over max_bytes");
        assert_eq!(base_offset(&r[0]), 5);
        // max_bytes bounds the count.
        let r = log.read(Offset(0), 3 * 461, Offset(100)).await.unwrap();
        assert_eq!(r.len(), 3);
        // Nothing at or beyond the upper bound.
        let r = log.read(Offset(0), 1 << 20, Offset(12)).await.unwrap();
        assert_eq!(
            r.iter().map(|b| base_offset(b)).collect::<Vec<_>>(),
            vec![0, 5]
        );
        assert!(log
            .read(Offset(100), 1 << 20, Offset(100))
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            log.read(Offset(101), 1 << 20, Offset(200)).await,
            Err(StorageError::OffsetOutOfRange(..))
        ));
        // Cold reads after flush and cache eviction return the same bytes.
        let hot = log.read(Offset(0), 1 << 20, Offset(100)).await.unwrap();
        log.flush().await.unwrap();
        let cold = log.read(Offset(0), 1 << 20, Offset(100)).await.unwrap();
        assert_eq!(hot, cold);
        assert_eq!(cold.len(), 20);
        assert!(log.segment_count() > 1, "8 KiB segments rolled");
    });
}

#[test]
fn internal_entries_take_a_raft_index_but_no_offset_and_stay_hidden() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        log.append(&batch(2, 1, b"a"), Term(1)).await.unwrap();
        let i = log.append_internal(b"membership", Term(2)).await.unwrap();
        assert_eq!(i, RaftIndex(1));
        let b = log.append(&batch(1, 2, b"b"), Term(2)).await.unwrap();
        assert_eq!((b.base_offset, b.raft_index), (Offset(2), RaftIndex(2)));
        let kafka = log.read(Offset(0), 1 << 20, Offset(3)).await.unwrap();
        assert_eq!(
            kafka.iter().map(|b| base_offset(b)).collect::<Vec<_>>(),
            vec![0, 2]
        );
        let raft = log
            .entries(RaftIndex(0), RaftIndex(3), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            raft.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EntryKind::Data, EntryKind::Internal, EntryKind::Data]
        );
        assert_eq!(&raft[1].payload[..], b"membership");
        assert_eq!(log.term_at(RaftIndex(0)).await.unwrap(), Some(Term(1)));
        assert_eq!(log.term_at(RaftIndex(1)).await.unwrap(), Some(Term(2)));
        assert_eq!(log.term_at(RaftIndex(3)).await.unwrap(), None);
        log.flush().await.unwrap();
        drop(log);
        let log = open(&dir, small_config()).await;
        assert_eq!(log.end().next_raft_index, RaftIndex(3));
        assert_eq!(log.end().last_term, Term(2));
        let raft = log.entries(RaftIndex(1), RaftIndex(2), 1).await.unwrap();
        assert_eq!(&raft[0].payload[..], b"membership");
    });
}

#[test]
fn offset_for_timestamp_finds_first_batch_at_or_after() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..50i64 {
            log.append(&batch(2, 1000 + i * 10, &[0u8; 80]), Term(1))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some(Offset(0)));
        assert_eq!(
            log.offset_for_timestamp(1000).await.unwrap(),
            Some(Offset(0))
        );
        assert_eq!(
            log.offset_for_timestamp(1001).await.unwrap(),
            Some(Offset(2))
        );
        assert_eq!(
            log.offset_for_timestamp(1250).await.unwrap(),
            Some(Offset(50))
        );
        assert_eq!(
            log.offset_for_timestamp(1490).await.unwrap(),
            Some(Offset(98))
        );
        assert_eq!(log.offset_for_timestamp(1491).await.unwrap(), None);
        log.advance_start(Offset(51)).await.unwrap();
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some(Offset(51)));
    });
}

#[test]
fn truncate_suffix_is_durable_and_appending_continues() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..40 {
            log.append(&batch(3, i, &[1u8; 600]), Term(1))
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 2);
        log.truncate_suffix(RaftIndex(5)).await.unwrap();
        assert_eq!(log.end().next_offset, Offset(15));
        assert_eq!(log.end().next_raft_index, RaftIndex(5));
        assert_eq!(log.durable_end().next_raft_index, RaftIndex(5));
        assert!(log.segment_count() < segments);
        let b = log.append(&batch(1, 99, b"new"), Term(2)).await.unwrap();
        assert_eq!((b.base_offset, b.raft_index), (Offset(15), RaftIndex(5)));
        log.flush().await.unwrap();
        drop(log);
        let log = open(&dir, small_config()).await;
        assert_eq!(log.end().next_offset, Offset(16));
        assert_eq!(log.term_at(RaftIndex(5)).await.unwrap(), Some(Term(2)));
        assert_eq!(log.term_at(RaftIndex(4)).await.unwrap(), Some(Term(1)));
        let all = log.read(Offset(0), 1 << 20, Offset(16)).await.unwrap();
        assert_eq!(all.len(), 6);
    });
}

#[test]
fn advance_start_hides_and_deletes_below() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..40 {
            log.append(&batch(2, i, &[1u8; 600]), Term(1))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        let before = log.segment_count();
        let s = log.advance_start(Offset(41)).await.unwrap();
        assert_eq!(s.offset, Offset(41));
        assert_eq!(s.raft_index, RaftIndex(20), "the batch holding 41 stays");
        assert!(log.segment_count() < before);
        assert!(matches!(
            log.read(Offset(40), 10, Offset(80)).await,
            Err(StorageError::OffsetOutOfRange(..))
        ));
        let r = log.read(Offset(41), 1, Offset(80)).await.unwrap();
        assert_eq!(base_offset(&r[0]), 40);
        // Never backwards; survives reopen.
        assert_eq!(
            log.advance_start(Offset(3)).await.unwrap().offset,
            Offset(41)
        );
        drop(log);
        let log = open(&dir, small_config()).await;
        assert_eq!(log.start().offset, Offset(41));
        let p = log.purge_to(RaftIndex(24)).await.unwrap();
        assert_eq!((p.offset, p.raft_index), (Offset(50), RaftIndex(25)));
    });
}

#[test]
fn retention_by_bytes_and_time_deletes_whole_sealed_segments() {
    run(|dir| async move {
        let cfg = LogConfig {
            retention_bytes: Some(16 * 1024),
            ..small_config()
        };
        let log = open(&dir, cfg).await;
        for i in 0..200 {
            log.append(&batch(1, i, &[2u8; 200]), Term(1))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        let total = log.size_bytes();
        let deleted = log.apply_retention(1_000).await.unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() >= 16 * 1024 - 8 * 1024 && log.size_bytes() < total);
        let start = log.start().offset;
        assert!(start > Offset(0));
        assert_eq!(log.read(start, 1, Offset(200)).await.unwrap().len(), 1);
        // Time: everything older than 100 ms before "now" = 10_000 goes, but never the active.
        log.set_config(LogConfig {
            retention_ms: Some(100),
            ..small_config()
        });
        log.apply_retention(10_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.end().next_offset, Offset(200));
    });
}

#[test]
fn segment_ms_rolls_on_age() {
    run(|dir| async move {
        let log = open(
            &dir,
            LogConfig {
                segment_ms: 1,
                ..small_config()
            },
        )
        .await;
        log.append(&batch(1, 1, b"a"), Term(1)).await.unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        log.append(&batch(1, 2, b"b"), Term(1)).await.unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(dir.join("00000000000000000001.log").exists());
        assert!(dir.join("00000000000000000000.index").exists());
        assert!(dir.join("00000000000000000000.timeindex").exists());
    });
}

#[test]
fn reopen_after_clean_close_uses_checkpoints() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..100 {
            log.append(&batch(1, i, &[3u8; 150]), Term(3))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        let log = open(&dir, small_config()).await;
        assert_eq!(log.end().next_offset, Offset(100));
        assert_eq!(log.end().last_term, Term(3));
        let all = log.read(Offset(0), 1 << 30, Offset(100)).await.unwrap();
        assert_eq!(all.len(), 100);
        for (i, b) in all.iter().enumerate() {
            assert_eq!(base_offset(b), i as u64);
        }
    });
}

#[test]
fn hard_state_survives_reopen_and_keeps_last_value() {
    run(|dir| async move {
        glommio::io::Directory::create(&dir).await.unwrap();
        let (mut hs, v) = HardState::open(&dir).await.unwrap();
        assert_eq!(v, None);
        hs.save(b"term=1").await.unwrap();
        hs.save(b"term=2,voted=3").await.unwrap();
        drop(hs);
        let (_, v) = HardState::open(&dir).await.unwrap();
        assert_eq!(v.as_deref(), Some(&b"term=2,voted=3"[..]));
        // A torn newer slot falls back to the older value.
        let path = dir.join(HardState::FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff; // seq 2 lives in slot 0, the first 4 KiB
        std::fs::write(&path, &bytes).unwrap();
        let (_, v) = HardState::open(&dir).await.unwrap();
        assert_eq!(v.as_deref(), Some(&b"term=1"[..]));
    });
}

#[test]
fn concurrent_append_and_flush_share_fdatasyncs() {
    run(|dir| async move {
        let log = std::rc::Rc::new(open(&dir, small_config()).await);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let a = log.append(&batch(1, i, b"v"), Term(1)).await.unwrap();
                    let durable = log.flush().await.unwrap();
                    assert!(durable.next_offset > a.base_offset);
                    durable.next_offset
                })
            })
            .collect();
        let mut ends = Vec::new();
        for t in tasks {
            ends.push(t.await);
        }
        ends.sort();
        ends.dedup();
        // Each distinct durable end is one fdatasync: 32 producers must not cost 32 syncs.
        assert!(
            ends.len() <= 4,
            "{} fdatasyncs for 32 concurrent flushes: {ends:?}",
            ends.len()
        );
    });
}

#[test]
fn state_snapshots_keep_the_newest_two_and_never_outlive_their_entries() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for i in 0..6 {
            log.append(&batch(1, i, b"s"), Term(1)).await.unwrap();
        }
        log.flush().await.unwrap();
        for at in [2, 4, 6] {
            log.save_snapshot(Offset(at), format!("state@{at}").as_bytes())
                .await
                .unwrap();
        }
        // An older or equal offset than the newest is not saved again.
        log.save_snapshot(Offset(5), b"stale").await.unwrap();
        let saved = |dir: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".snapshot"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            saved(&dir),
            vec![
                "00000000000000000004.snapshot",
                "00000000000000000006.snapshot"
            ]
        );
        assert_eq!(
            log.load_snapshot().await,
            Some((Offset(6), b"state@6".to_vec()))
        );
        // Truncation drops snapshots that describe entries it removed.
        log.truncate_suffix(RaftIndex(5)).await.unwrap();
        assert_eq!(
            log.load_snapshot().await,
            Some((Offset(4), b"state@4".to_vec()))
        );
        // Appended but unflushed when the "crash" (a drop without close) came: a snapshot
        // taken at the unflushed end is deleted at open.
        for i in 0..3 {
            log.append(&batch(1, 10 + i, b"u"), Term(1)).await.unwrap();
        }
        log.save_snapshot(log.end().next_offset, b"ahead")
            .await
            .unwrap();
        let end = log.durable_end().next_offset;
        drop(log);
        let log = open(&dir, small_config()).await;
        assert_eq!(log.end().next_offset, end, "unflushed entries are gone");
        assert_eq!(
            log.load_snapshot().await,
            Some((Offset(4), b"state@4".to_vec()))
        );
        // A damaged newest snapshot falls back to the one before it.
        log.append(&batch(1, 20, b"v"), Term(1)).await.unwrap();
        log.flush().await.unwrap();
        log.save_snapshot(Offset(6), b"state@6 again")
            .await
            .unwrap();
        let path = dir.join("00000000000000000006.snapshot");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[13] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(
            log.load_snapshot().await,
            Some((Offset(4), b"state@4".to_vec()))
        );
    });
}

#[test]
fn append_entry_takes_the_leaders_index_and_term() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        let a = log
            .append_entry(RaftIndex(0), Term(3), EntryKind::Internal, b"m")
            .await
            .unwrap();
        assert_eq!((a.base_offset, a.raft_index), (Offset(0), RaftIndex(0)));
        let b = log
            .append_entry(RaftIndex(1), Term(3), EntryKind::Data, &batch(2, 1, b"x"))
            .await
            .unwrap();
        assert_eq!((b.base_offset, b.last_offset), (Offset(0), Offset(1)));
        // Raft truncates before it appends: an index other than the next one is refused.
        for wrong in [1, 3] {
            let r = log
                .append_entry(
                    RaftIndex(wrong),
                    Term(3),
                    EntryKind::Data,
                    &batch(1, 1, b"y"),
                )
                .await;
            assert!(matches!(r, Err(StorageError::IndexOutOfRange(..))), "{r:?}");
        }
        assert_eq!(log.end().next_raft_index, RaftIndex(2));
        assert_eq!(log.end().last_term, Term(3));
    });
}

#[test]
fn reset_restarts_the_log_past_its_end_durably() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        log.append(&batch(5, 1, b"a"), Term(1)).await.unwrap();
        log.flush().await.unwrap();
        // Not before the end: that would forget entries Raft still has.
        let early = LogStart {
            offset: Offset(2),
            raft_index: RaftIndex(9),
        };
        assert!(log.reset(early, Term(2)).await.is_err());
        let start = LogStart {
            offset: Offset(40),
            raft_index: RaftIndex(9),
        };
        log.reset(start, Term(2)).await.unwrap();
        assert_eq!(log.end().next_offset, Offset(40));
        drop(log);
        let log = open(&dir, small_config()).await;
        assert_eq!(log.start(), start);
        assert_eq!(log.end().next_raft_index, RaftIndex(9));
        let a = log.append(&batch(1, 1, b"b"), Term(2)).await.unwrap();
        assert_eq!((a.base_offset, a.raft_index), (Offset(40), RaftIndex(9)));
    });
}

#[test]
fn a_purge_of_internal_entries_survives_reopen() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        for _ in 0..4 {
            log.append_internal(b"blank", Term(1)).await.unwrap();
        }
        log.flush().await.unwrap();
        log.purge_to(RaftIndex(1)).await.unwrap();
        drop(log);
        // The start moved by Raft index only; reopening must keep it.
        let log = open(&dir, small_config()).await;
        assert_eq!(log.start().raft_index, RaftIndex(2));
    });
}

#[test]
fn epoch_end_finds_where_each_term_ended() {
    run(|dir| async move {
        let log = open(&dir, small_config()).await;
        assert_eq!(
            log.epoch_end(Term(3)).await.unwrap(),
            Some((Term(0), Offset(0)))
        );
        // Terms 1, 1, then a new leader's internal entry and batches in 4, then 6.
        log.append(&batch(3, 1, b"a"), Term(1)).await.unwrap(); // 0..=2
        log.append(&batch(2, 1, b"b"), Term(1)).await.unwrap(); // 3..=4
        log.append_internal(b"blank", Term(4)).await.unwrap();
        log.append(&batch(4, 1, b"c"), Term(4)).await.unwrap(); // 5..=8
        log.append_internal(b"blank", Term(6)).await.unwrap();
        log.append(&batch(1, 1, b"d"), Term(6)).await.unwrap(); // 9
        log.flush().await.unwrap();
        let cases = [
            (0, None),
            (1, Some((1, 5))),
            (3, Some((1, 5))),
            (4, Some((4, 9))),
            (5, Some((4, 9))),
            (6, Some((6, 10))),
            (9, Some((6, 10))),
        ];
        for (epoch, want) in cases {
            let got = log.epoch_end(Term(epoch)).await.unwrap();
            assert_eq!(
                got,
                want.map(|(t, o)| (Term(t), Offset(o))),
                "epoch {epoch}"
            );
        }
        // A truncated term is gone: term 4 now runs to the end.
        log.truncate_suffix(RaftIndex(4)).await.unwrap();
        assert_eq!(
            log.epoch_end(Term(5)).await.unwrap(),
            Some((Term(4), Offset(9)))
        );
        assert_eq!(
            log.epoch_end(Term(1)).await.unwrap(),
            Some((Term(1), Offset(5)))
        );
    });
}
