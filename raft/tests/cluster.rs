//! Three replicas of one partition group, each with its own `PartitionLog` directory, on one
//! glommio executor, linked by an in-process transport whose links a test can cut. Every
//! message crosses the transport serialized, as the inter-broker RPC will carry it. Checks
//! what replication must guarantee: committed batches at the same offsets, byte for byte, on
//! every replica; a new leader after the leader dies; an isolated leader commits nothing;
//! and a restarted or healed replica converges on the leader's log. openraft's own timer is
//! off, so every heartbeat and election here comes from the brokers' `Ticker`s.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::batch;
use openraft::AsyncRuntime;
use sluice_raft::{
    advance_log_start, group_config, Batch, GlommioRuntime, Group, LogStore, Network,
    PartitionRaftNode, PrefixPoint, RaftRequest, RaftResponse, StateMachine, Ticker, Transport,
};
use sluice_storage::{LogConfig, Offset, PartitionLog};

const ELECTION_MIN: Duration = Duration::from_millis(200);
/// Generous bound for anything that takes a few election rounds on a loaded CI machine.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Net {
    nodes: BTreeMap<u64, Rc<Group>>,
    /// Links that drop every message, both ways.
    cut: BTreeSet<(u64, u64)>,
}

/// The transport of the replica `from`.
#[derive(Clone)]
struct Link {
    from: u64,
    net: Rc<RefCell<Net>>,
}

impl Transport for Link {
    async fn call(
        &self,
        to: u64,
        request: RaftRequest,
        _: Duration,
    ) -> Result<RaftResponse, String> {
        let group = {
            let net = self.net.borrow();
            if net.cut.contains(&(self.from, to)) {
                return Err(format!("link {} -> {to} is cut", self.from));
            }
            net.nodes
                .get(&to)
                .cloned()
                .ok_or(format!("broker {to} is down"))?
        };
        let wire = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let request = serde_json::from_slice(&wire).map_err(|e| e.to_string())?;
        let response = group.serve(request).await;
        // A reply on a link cut meanwhile is lost too.
        if self.net.borrow().cut.contains(&(to, self.from)) {
            return Err(format!("link {to} -> {} is cut", self.from));
        }
        let wire = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
        serde_json::from_slice(&wire).map_err(|e| e.to_string())
    }
}

struct Replica {
    raft: PartitionRaftNode,
    /// Owns the group; its ticker (one per broker, as one per shard) holds it weakly.
    group: Rc<Group>,
    _ticker: Rc<Ticker>,
    log: Rc<PartitionLog>,
    high_watermark: Rc<Cell<Offset>>,
    prefix: PrefixPoint,
}

struct Cluster {
    root: PathBuf,
    net: Rc<RefCell<Net>>,
    replicas: BTreeMap<u64, Replica>,
}

impl Cluster {
    /// Replicas 1, 2 and 3 started and initialized as one group.
    async fn started(root: PathBuf) -> Cluster {
        let mut c = Cluster {
            root,
            net: Rc::default(),
            replicas: BTreeMap::new(),
        };
        for id in [1, 2, 3] {
            c.start(id).await;
        }
        c.replicas[&1]
            .raft
            .initialize(BTreeSet::from([1, 2, 3]))
            .await
            .unwrap();
        c
    }

    fn dir(root: &Path, id: u64) -> PathBuf {
        root.join(format!("n{id}"))
    }

    async fn start(&mut self, id: u64) {
        let dir = Self::dir(&self.root, id);
        std::fs::create_dir_all(&dir).unwrap();
        let log = Rc::new(
            PartitionLog::open(&dir, LogConfig::default())
                .await
                .unwrap(),
        );
        let store = LogStore::open(&dir, log.clone()).await.unwrap();
        let sm = StateMachine::open(&dir, log.clone()).await.unwrap();
        let high_watermark = sm.high_watermark();
        let prefix = sm.prefix_point();
        let config = Arc::new(group_config(ELECTION_MIN).unwrap());
        let network = Network::new(Link {
            from: id,
            net: self.net.clone(),
        });
        let raft = PartitionRaftNode::new(id, config, network, store, sm)
            .await
            .unwrap();
        let group = Group::new(raft.clone(), ELECTION_MIN);
        let ticker = Ticker::new(ELECTION_MIN);
        ticker.register(&group);
        ticker.spawn();
        self.net.borrow_mut().nodes.insert(id, group.clone());
        self.replicas.insert(
            id,
            Replica {
                raft,
                group,
                _ticker: ticker,
                log,
                high_watermark,
                prefix,
            },
        );
    }

    /// Retention on one replica: its log start moves to `offset` through Raft.
    async fn cut(&self, id: u64, offset: u64) -> sluice_storage::LogStart {
        let r = &self.replicas[&id];
        advance_log_start(
            &r.raft,
            &r.log,
            &r.prefix,
            Offset(offset),
            r.high_watermark.get(),
        )
        .await
        .unwrap()
    }

    /// kill -9 as far as Raft can tell: the replica stops answering and its state is
    /// dropped without a close; only what it flushed is in its directory.
    async fn kill(&mut self, id: u64) {
        self.net.borrow_mut().nodes.remove(&id);
        let r = self.replicas.remove(&id).unwrap();
        r.raft.shutdown().await.unwrap();
    }

    fn isolate(&self, id: u64, isolated: bool) {
        let mut net = self.net.borrow_mut();
        for other in [1, 2, 3].into_iter().filter(|&o| o != id) {
            for link in [(id, other), (other, id)] {
                if isolated {
                    net.cut.insert(link);
                } else {
                    net.cut.remove(&link);
                }
            }
        }
    }

    /// Waits until one of `among` leads, with its own first entry applied, and returns it.
    /// Asked of each replica itself: a restarted replica's view of the leader comes from its
    /// stored vote and can be stale.
    async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            for id in among {
                let m = self.replicas[id].raft.metrics();
                let m = m.borrow_watched();
                if m.state == openraft::ServerState::Leader
                    && m.last_applied
                        .is_some_and(|a| a.leader_id.term == m.current_term)
                {
                    return *id;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader among {among:?}"
            );
            GlommioRuntime::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn write(&self, leader: u64, n: i32, tag: &str) -> (u64, u64) {
        let r = self.replicas[&leader]
            .raft
            .client_write(Batch(batch(n, tag.as_bytes())))
            .await
            .unwrap();
        (r.data.base_offset, r.data.last_offset)
    }

    /// Every batch a replica has applied (below its high watermark) from its log start.
    async fn applied_batches(&self, id: u64) -> Vec<Bytes> {
        let r = &self.replicas[&id];
        r.log
            .read(
                r.log.start().offset,
                usize::MAX >> 1,
                r.high_watermark.get(),
            )
            .await
            .unwrap()
    }

    async fn converge(&self, ids: &[u64], leader: u64) {
        let last = self.replicas[&leader]
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index;
        for id in ids {
            self.replicas[id]
                .raft
                .wait(Some(WAIT))
                .applied_index_at_least(last, "replica caught up")
                .await
                .unwrap();
        }
        let want = self.applied_batches(leader).await;
        for id in ids {
            assert_eq!(
                self.applied_batches(*id).await,
                want,
                "replica {id} differs from the leader"
            );
        }
    }
}

use openraft_rt::WatchReceiver;

#[test]
fn three_replicas_replicate_fail_over_refuse_in_a_minority_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let mut c = Cluster::started(root).await;
        let leader = c.leader(&[1, 2, 3]).await;

        // Committed batches get dense offsets, the same on every replica.
        let mut next = 0;
        for i in 0..20 {
            let (base, last) = c.write(leader, 3, &format!("a{i}")).await;
            assert_eq!((base, last), (next, next + 2));
            next += 3;
        }
        c.converge(&[1, 2, 3], leader).await;

        // The leader dies: the others elect one of themselves and go on at the next offset.
        c.kill(leader).await;
        let live: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
        let second = c.leader(&live).await;
        for i in 0..10 {
            let (base, _) = c.write(second, 2, &format!("b{i}")).await;
            assert_eq!(base, next);
            next += 2;
        }
        // The old leader restarts from its directory and catches up.
        c.start(leader).await;
        c.converge(&[1, 2, 3], second).await;

        // An isolated leader cannot commit: its write never completes, and the majority
        // elects a new leader that does.
        c.isolate(second, true);
        let stranded = {
            let raft = c.replicas[&second].raft.clone();
            GlommioRuntime::spawn(async move { raft.client_write(Batch(batch(1, b"lost"))).await })
        };
        let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != second).collect();
        let third = c.leader(&majority).await;
        let (base, _) = c.write(third, 4, "c").await;
        assert_eq!(
            base, next,
            "the majority continues where the committed log ends"
        );
        next += 4;
        GlommioRuntime::sleep(ELECTION_MIN).await;
        assert!(
            !c.applied_batches(second)
                .await
                .iter()
                .any(|b| b.ends_with(b"lost")),
            "a minority applied a write"
        );
        // Healed, the old leader drops its uncommitted entry and takes the majority's log.
        c.isolate(second, false);
        c.converge(&[1, 2, 3], third).await;
        assert!(
            stranded.await.unwrap().is_err(),
            "the stranded write reports failure"
        );
        let all = c.applied_batches(third).await;
        assert_eq!(all.len(), 31);
        assert!(!all.iter().any(|b| b.ends_with(b"lost")));
        assert_eq!(c.replicas[&third].log.end().next_offset, Offset(next));
        for id in [1, 2, 3] {
            c.kill(id).await;
        }
    });
}

#[test]
fn a_follower_behind_the_log_start_catches_up_through_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let mut c = Cluster::started(root).await;
        let leader = c.leader(&[1, 2, 3]).await;
        for i in 0..10 {
            c.write(leader, 2, &format!("a{i}")).await;
        }
        c.converge(&[1, 2, 3], leader).await;
        let lagging = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
        let other = [1, 2, 3]
            .into_iter()
            .find(|&i| i != leader && i != lagging)
            .unwrap();
        c.kill(lagging).await;
        for i in 10..20 {
            c.write(leader, 2, &format!("b{i}")).await;
        }
        c.converge(&[leader, other], leader).await;
        // Retention on the two live replicas past everything the lagging one has. 31 is
        // inside the batch at 30..=31: entries end before it, the Kafka start is 31.
        for id in [leader, other] {
            let start = c.cut(id, 31).await;
            assert_eq!(start.offset, Offset(31));
            assert_eq!(
                c.applied_batches(id).await.len(),
                5,
                "batches from 30 on are kept"
            );
        }
        // The lagging replica comes back: the leader has no entries for it, only the
        // snapshot, and its log restarts where the leader's continues.
        c.start(lagging).await;
        c.converge(&[1, 2, 3], leader).await;
        let r = &c.replicas[&lagging];
        assert_eq!(
            r.log.start().offset,
            Offset(30),
            "restarted at the leader's first batch"
        );
        assert_eq!(r.high_watermark.get(), Offset(40));
        assert!(c.applied_batches(lagging).await[0].ends_with(b"b15"));
        // Writes go on at the next offset, and the cut survives a restart of the leader.
        let (base, _) = c.write(leader, 1, "c").await;
        assert_eq!(base, 40);
        c.kill(leader).await;
        c.start(leader).await;
        let now = c.leader(&[1, 2, 3]).await;
        c.converge(&[1, 2, 3], now).await;
        assert_eq!(c.replicas[&leader].high_watermark.get(), Offset(41));
        assert_eq!(c.applied_batches(leader).await.len(), 6);
        for id in [1, 2, 3] {
            c.kill(id).await;
        }
    });
}

#[test]
fn leadership_returns_to_the_preferred_replica_after_it_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let mut c = Cluster::started(root).await;
        for id in [1, 2, 3] {
            c.replicas[&id].group.set_preferred_leader(Some(1));
        }
        assert_eq!(c.leader(&[1, 2, 3]).await, 1);
        c.write(1, 1, "a").await;
        c.kill(1).await;
        let interim = c.leader(&[2, 3]).await;
        c.write(interim, 1, "b").await;
        c.start(1).await;
        c.replicas[&1].group.set_preferred_leader(Some(1));
        // It leads again once it has caught up and the interim leader has led for
        // LEADER_BALANCE_ELECTION_TIMEOUTS election timeouts.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let now = c.leader(&[1, 2, 3]).await;
            if now == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "leadership stayed on {now}"
            );
            GlommioRuntime::sleep(ELECTION_MIN).await;
        }
        let (base, _) = c.write(1, 1, "c").await;
        assert_eq!(base, 2, "nothing lost in the hand-over");
        c.converge(&[1, 2, 3], 1).await;
        for id in [1, 2, 3] {
            c.kill(id).await;
        }
    });
}
