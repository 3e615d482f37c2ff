//! What the Raft log store and state machine keep across a crash (the store is dropped
//! without closing, as kill -9 leaves it): entries at the leader's indexes and terms, data
//! entries at dense Kafka offsets, the vote, truncations and purges, and snapshots.

mod common;

use std::rc::Rc;

use common::batch;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{EntryOf, VoteOf};
use openraft::{AsyncRuntime, EntryPayload, Membership};
use openraft_rt::Oneshot;
use sluice_raft::types::log_id;
use sluice_raft::{
    Batch, GlommioRuntime, LogStore, PartitionRaft, PartitionSnapshot, StateMachine,
};
use sluice_storage::{LogConfig, Offset, PartitionLog};

type Entry = EntryOf<PartitionRaft>;

fn base_offset(b: &[u8]) -> u64 {
    i64::from_be_bytes(b[0..8].try_into().unwrap()) as u64
}

async fn open(dir: &std::path::Path) -> (Rc<PartitionLog>, LogStore, StateMachine) {
    let log = Rc::new(PartitionLog::open(dir, LogConfig::default()).await.unwrap());
    let store = LogStore::open(dir, log.clone()).await.unwrap();
    let sm = StateMachine::open(dir, log.clone()).await.unwrap();
    (log, store, sm)
}

/// Appends and waits for the flush callback; the entries must then be durable.
async fn append(log: &PartitionLog, store: &mut LogStore, entries: Vec<Entry>) {
    let last = entries.last().unwrap().log_id.index;
    let (tx, rx) = <GlommioRuntime as AsyncRuntime>::Oneshot::channel();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
    assert!(
        log.durable_end().next_raft_index.0 > last,
        "flushed before durable"
    );
}

fn kinds(entries: &[Entry]) -> Vec<(u64, u64, &'static str)> {
    entries
        .iter()
        .map(|e| {
            let k = match &e.payload {
                EntryPayload::Blank => "blank",
                EntryPayload::Normal(_) => "data",
                EntryPayload::Membership(_) => "membership",
            };
            (e.log_id.leader_id.term, e.log_id.index, k)
        })
        .collect()
}

#[test]
fn entries_vote_truncation_and_purge_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    std::fs::create_dir_all(&dir).unwrap();
    GlommioRuntime::run(async move {
        let voters = Membership::new_with_defaults(vec![[1u64, 2, 3].into()], []);
        {
            let (log, mut store, _) = open(&dir).await;
            append(
                &log,
                &mut store,
                vec![
                    Entry::new_membership(log_id(1, 0), voters.clone()),
                    Entry::new_blank(log_id(1, 1)),
                    Entry::new_normal(log_id(1, 2), Batch(batch(3, b"records"))),
                    Entry::new_normal(log_id(2, 3), Batch(batch(2, b"records"))),
                    Entry::new_normal(log_id(2, 4), Batch(batch(4, b"records"))),
                ],
            )
            .await;
            store
                .save_vote(&VoteOf::<PartitionRaft>::new_committed(2, 3))
                .await
                .unwrap();
            store.purge(log_id(1, 0)).await.unwrap();
        }
        {
            let (_, mut store, _) = open(&dir).await;
            let st = store.get_log_state().await.unwrap();
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 0)));
            assert_eq!(st.last_log_id, Some(log_id(2, 4)));
            let mut r = store.get_log_reader().await;
            assert_eq!(
                r.read_vote().await.unwrap(),
                Some(VoteOf::<PartitionRaft>::new_committed(2, 3))
            );
            let got = r.try_get_log_entries(0..10).await.unwrap();
            assert_eq!(
                kinds(&got),
                vec![
                    (1, 1, "blank"),
                    (1, 2, "data"),
                    (2, 3, "data"),
                    (2, 4, "data")
                ]
            );
            // Internal entries take no offsets: the data batches sit at 0, 3 and 5.
            let offsets: Vec<u64> = got
                .iter()
                .filter_map(|e| match &e.payload {
                    EntryPayload::Normal(Batch(b)) => Some(base_offset(b)),
                    _ => None,
                })
                .collect();
            assert_eq!(offsets, vec![0, 3, 5]);
            store.truncate_after(Some(log_id(1, 2))).await.unwrap();
        }
        {
            let (log, mut store, _) = open(&dir).await;
            assert_eq!(
                store.get_log_state().await.unwrap().last_log_id,
                Some(log_id(1, 2))
            );
            assert_eq!(
                log.end().next_offset,
                Offset(3),
                "truncation cut the offsets too"
            );
            // A new leader's entry reuses the truncated index and the next offset.
            append(
                &log,
                &mut store,
                vec![Entry::new_normal(log_id(3, 3), Batch(batch(1, b"records")))],
            )
            .await;
            // A purge past the end (a snapshot ahead of this log) leaves it empty there.
            store.purge(log_id(4, 9)).await.unwrap();
        }
        {
            let (log, mut store, _) = open(&dir).await;
            let st = store.get_log_state().await.unwrap();
            assert_eq!(
                (st.last_purged_log_id, st.last_log_id),
                (Some(log_id(4, 9)), Some(log_id(4, 9)))
            );
            let mut r = store.get_log_reader().await;
            assert!(r.try_get_log_entries(0..20).await.unwrap().is_empty());
            append(
                &log,
                &mut store,
                vec![Entry::new_normal(
                    log_id(4, 10),
                    Batch(batch(2, b"records")),
                )],
            )
            .await;
            let got = r.try_get_log_entries(0..20).await.unwrap();
            assert_eq!(kinds(&got), vec![(4, 10, "data")]);
            assert_eq!(
                log.end().next_offset,
                Offset(6),
                "offsets continue after the purge"
            );
        }
    });
}

#[test]
fn applying_moves_the_high_watermark_and_a_snapshot_restarts_a_lagging_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (leader_dir, follower_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&leader_dir).unwrap();
    std::fs::create_dir_all(&follower_dir).unwrap();
    GlommioRuntime::run(async move {
        let (log, mut store, mut sm) = open(&leader_dir).await;
        let entries = vec![
            Entry::new_blank(log_id(1, 0)),
            Entry::new_normal(log_id(1, 1), Batch(batch(3, b"records"))),
            Entry::new_normal(log_id(1, 2), Batch(batch(4, b"records"))),
        ];
        append(&log, &mut store, entries.clone()).await;
        let hw = sm.high_watermark();
        let items = entries.into_iter().map(|e| Ok((e, None)));
        sm.apply(futures_util::stream::iter(items)).await.unwrap();
        assert_eq!(hw.get(), Offset(7));
        let mut snap = sm.get_snapshot_builder().await;
        let built = openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut snap)
            .await
            .unwrap();
        assert_eq!(built.snapshot, PartitionSnapshot { next_offset: 7 });

        // A follower with an empty log installs it and continues at the leader's offsets.
        let (flog, mut fstore, mut fsm) = open(&follower_dir).await;
        fsm.install_snapshot(&built.meta, built.snapshot)
            .await
            .unwrap();
        fstore.purge(log_id(1, 2)).await.unwrap();
        append(
            &flog,
            &mut fstore,
            vec![Entry::new_normal(log_id(1, 3), Batch(batch(1, b"records")))],
        )
        .await;
        assert_eq!(flog.end().next_offset, Offset(8));
        assert_eq!(fsm.high_watermark().get(), Offset(7));
        drop((flog, fstore, fsm));
        let (_, _, mut fsm) = open(&follower_dir).await;
        let (applied, membership) = fsm.applied_state().await.unwrap();
        assert_eq!(
            applied,
            Some(log_id(1, 2)),
            "the snapshot record survives a restart"
        );
        assert_eq!(membership, built.meta.last_membership);
        assert_eq!(fsm.high_watermark().get(), Offset(7));
    });
}

#[test]
fn a_restart_resumes_applying_from_the_recorded_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    std::fs::create_dir_all(&dir).unwrap();
    GlommioRuntime::run(async move {
        let entries = vec![
            Entry::new_blank(log_id(1, 0)),
            Entry::new_normal(log_id(1, 1), Batch(batch(3, b"records"))),
            Entry::new_normal(log_id(1, 2), Batch(batch(2, b"records"))),
        ];
        {
            let (log, mut store, sm) = open(&dir).await;
            let mut sm = sm.with_checkpoint_bytes(1);
            append(&log, &mut store, entries.clone()).await;
            let items = entries.into_iter().map(|e| Ok((e, None)));
            sm.apply(futures_util::stream::iter(items)).await.unwrap();
        }
        // Without the record a restart would start from nothing applied and read the whole
        // log again.
        let (_, _, mut sm) = open(&dir).await;
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 2)));
        assert_eq!(sm.high_watermark().get(), Offset(5));
    });
}
