//! Three brokers on one executor, each with its own RPC listener on loopback and its own
//! partition directories, replicating several groups over real TCP through the batched RPC:
//! replication and failover across a broker that goes away and comes back at a new address,
//! frames between two brokers that do not grow with the number of groups, and malformed
//! input that closes a connection without disturbing the cluster.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::batch;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use openraft::AsyncRuntime;
use openraft_rt::WatchReceiver;
use sluice_raft::rpc::{Peers, Router, Server};
use sluice_raft::runtime::net::TcpStream;
use sluice_raft::{
    group_config, Batch, GlommioRuntime, Group, LogStore, Network, PartitionRaftNode, RaftRequest,
    RaftResponse, StateMachine, Ticker,
};
use sluice_storage::{LogConfig, Offset, PartitionLog};

const ELECTION_MIN: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(20);
const BROKERS: [u64; 3] = [1, 2, 3];

#[derive(Default)]
struct Groups(RefCell<HashMap<u64, Rc<Group>>>);

impl Router for Groups {
    async fn route(&self, group: u64, request: RaftRequest) -> RaftResponse {
        let g = self.0.borrow().get(&group).cloned();
        match g {
            Some(g) => g.serve(request).await,
            None => RaftResponse::Failed(format!("no replica of group {group} here")),
        }
    }
}

struct Replica {
    log: Rc<PartitionLog>,
    hw: Rc<std::cell::Cell<Offset>>,
}

struct Broker {
    server: Server,
    peers: Rc<Peers>,
    groups: Rc<Groups>,
    replicas: HashMap<u64, Replica>,
    _ticker: Rc<Ticker>,
}

struct Cluster {
    root: PathBuf,
    groups: u64,
    brokers: HashMap<u64, Broker>,
}

impl Cluster {
    async fn start(&mut self, id: u64) {
        let groups = Rc::new(Groups::default());
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), id, groups.clone()).unwrap();
        let peers = Peers::new(id);
        let ticker = Ticker::new(ELECTION_MIN);
        ticker.spawn();
        let mut replicas = HashMap::new();
        for g in 1..=self.groups {
            let dir = self.root.join(format!("b{id}/g{g}"));
            std::fs::create_dir_all(&dir).unwrap();
            let log = Rc::new(
                PartitionLog::open(&dir, LogConfig::default())
                    .await
                    .unwrap(),
            );
            let store = LogStore::open(&dir, log.clone()).await.unwrap();
            let sm = StateMachine::open(&dir, log.clone()).await.unwrap();
            let hw = sm.high_watermark();
            let config = Arc::new(group_config(ELECTION_MIN).unwrap());
            let raft =
                PartitionRaftNode::new(id, config, Network::new(peers.transport(g)), store, sm)
                    .await
                    .unwrap();
            let group = Group::new(raft, ELECTION_MIN);
            ticker.register(&group);
            groups.0.borrow_mut().insert(g, group);
            replicas.insert(g, Replica { log, hw });
        }
        let addr = server.local_addr();
        for (other, b) in &self.brokers {
            b.peers.set_address(id, addr);
            peers.set_address(*other, b.server.local_addr());
        }
        self.brokers.insert(
            id,
            Broker {
                server,
                peers,
                groups,
                replicas,
                _ticker: ticker,
            },
        );
    }

    async fn kill(&mut self, id: u64) {
        let b = self.brokers.remove(&id).unwrap();
        let groups: Vec<Rc<Group>> = b.groups.0.borrow_mut().drain().map(|(_, g)| g).collect();
        drop(b.server);
        for g in groups {
            g.raft().shutdown().await.unwrap();
        }
    }

    fn raft(&self, broker: u64, group: u64) -> PartitionRaftNode {
        self.brokers[&broker].groups.0.borrow()[&group]
            .raft()
            .clone()
    }

    /// The live broker that leads `group`, once its own first entry is applied. Asked of
    /// each replica itself: a restarted replica's view of the leader comes from its stored
    /// vote and can be stale.
    async fn leader(&self, group: u64) -> u64 {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            for &id in self.brokers.keys() {
                let raft = self.raft(id, group);
                let m = raft.metrics();
                let m = m.borrow_watched();
                let ready = m.state == openraft::ServerState::Leader
                    && m.last_applied
                        .is_some_and(|a| a.leader_id.term == m.current_term);
                if ready {
                    return id;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader for group {group}"
            );
            GlommioRuntime::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn converge(&self, group: u64, leader: u64) -> Vec<Bytes> {
        // The leader's log, not its metrics, which are published lazily.
        let end = self.brokers[&leader].replicas[&group].log.end();
        let last = end.next_raft_index.0.checked_sub(1);
        let mut all = Vec::new();
        for (&id, b) in &self.brokers {
            self.raft(id, group)
                .wait(Some(WAIT))
                .applied_index_at_least(last, "caught up")
                .await
                .unwrap();
            let r = &b.replicas[&group];
            all.push(
                r.log
                    .read(Offset(0), usize::MAX >> 1, r.hw.get())
                    .await
                    .unwrap(),
            );
        }
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "replicas of group {group} differ"
        );
        all.pop().unwrap()
    }
}

async fn cluster(root: PathBuf, groups: u64) -> Cluster {
    let mut c = Cluster {
        root,
        groups,
        brokers: HashMap::new(),
    };
    for id in BROKERS {
        c.start(id).await;
    }
    for g in 1..=groups {
        c.raft(1, g)
            .initialize(BTreeSet::from(BROKERS))
            .await
            .unwrap();
    }
    c
}

#[test]
fn groups_replicate_over_tcp_and_survive_a_broker_that_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let groups = 4;
        let mut c = cluster(root, groups).await;
        for g in 1..=groups {
            let leader = c.leader(g).await;
            for i in 0..5 {
                let r = c
                    .raft(leader, g)
                    .client_write(Batch(batch(2, format!("g{g}-{i}").as_bytes())))
                    .await
                    .unwrap();
                assert_eq!(r.data.base_offset, 2 * i);
            }
            assert_eq!(c.converge(g, leader).await.len(), 5);
        }
        // Broker 1 goes away; every group still has a majority and goes on.
        c.kill(1).await;
        for g in 1..=groups {
            let leader = c.leader(g).await;
            let r = c
                .raft(leader, g)
                .client_write(Batch(batch(1, b"after")))
                .await
                .unwrap();
            assert_eq!(r.data.base_offset, 10);
        }
        // It comes back on another port; the others learn the address and it catches up.
        c.start(1).await;
        for g in 1..=groups {
            let leader = c.leader(g).await;
            let all = c.converge(g, leader).await;
            assert_eq!(all.len(), 6);
            assert!(all[5].ends_with(b"after"));
        }
        for id in BROKERS {
            c.kill(id).await;
        }
    });
}

#[test]
fn idle_frames_between_brokers_do_not_grow_with_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let groups = 40;
        let mut c = cluster(root, groups).await;
        for g in 1..=groups {
            c.leader(g).await;
        }
        let led_by_1 = (1..=groups)
            .filter(|&g| c.raft(1, g).metrics().borrow_watched().current_leader == Some(1))
            .count() as u64;
        let window = Duration::from_secs(2);
        let before = c.brokers[&1].peers.frames_sent();
        GlommioRuntime::sleep(window).await;
        let frames = c.brokers[&1].peers.frames_sent() - before;
        // Each of broker 1's leaders heartbeats both followers at most every tenth of the
        // election timeout (idle ones every third of those ticks); unbatched that would be
        // up to one frame per heartbeat.
        let heartbeats =
            led_by_1 * 2 * (window.as_millis() as u64 / (ELECTION_MIN.as_millis() as u64 / 10));
        println!("broker 1 leads {led_by_1} of {groups} groups: {frames} frames for about {heartbeats} heartbeats in {window:?}");
        assert!(
            led_by_1 >= groups / 2,
            "broker 1 initialized every group and should lead most"
        );
        assert!(
            frames * 8 < heartbeats,
            "{frames} frames for {heartbeats} heartbeats: not batched"
        );
        for id in BROKERS {
            c.kill(id).await;
        }
    });
}

/// Sends raw bytes to a server and reports whether it then closed the connection.
async fn closes_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    closes_within(addr, bytes, Duration::from_secs(5)).await
}

async fn closes_within(addr: SocketAddr, bytes: &[u8], wait: Duration) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if s.write_all(bytes).await.is_err() {
        return true;
    }
    let mut buf = [0u8; 256];
    // The hello answer may come first; the close must follow.
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    GlommioRuntime::timeout(wait, read).await.unwrap_or(false)
}

#[test]
fn malformed_rpc_input_closes_the_connection_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    GlommioRuntime::run(async move {
        let c = cluster(root, 1).await;
        let leader = c.leader(1).await;
        let target = c.brokers[&2].server.local_addr();
        let mut hello = Vec::new();
        sluice_raft::rpc::wire::encode(
            &sluice_raft::rpc::wire::Frame::Hello { node_id: 99 },
            &mut hello,
        )
        .unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("oversized length", u32::MAX.to_be_bytes().to_vec()),
            ("length below the header", 1u32.to_be_bytes().to_vec()),
            ("bad magic", [&8u32.to_be_bytes()[..], b"XXXXXXXX"].concat()),
            (
                "garbage body after hello",
                [
                    &hello[..],
                    &12u32.to_be_bytes()[..],
                    &[0x53, 0x4c, 1, 2],
                    &[0xff; 8],
                ]
                .concat(),
            ),
            ("responses sent to a server", {
                let mut b = hello.clone();
                sluice_raft::rpc::wire::encode(
                    &sluice_raft::rpc::wire::Frame::Responses(vec![]),
                    &mut b,
                )
                .unwrap();
                b
            }),
            (
                "wrong version",
                [&4u32.to_be_bytes()[..], &[0x53, 0x4c, 9, 1]].concat(),
            ),
        ];
        for (what, bytes) in cases {
            assert!(
                closes_after(target, &bytes).await,
                "{what}: connection left open"
            );
        }
        // A peer that announces a large frame and stalls is dropped after the frame
        // timeout, holding only what it sent.
        let stalled = [&hello[..], &(60u32 << 20).to_be_bytes()[..], &[0x53, 0x4c]].concat();
        let wait = sluice_raft::rpc::RPC_FRAME_TIMEOUT + Duration::from_secs(5);
        assert!(
            closes_within(target, &stalled, wait).await,
            "stalled frame left open"
        );
        // The cluster never noticed.
        let r = c
            .raft(leader, 1)
            .client_write(Batch(batch(3, b"still")))
            .await
            .unwrap();
        assert_eq!(r.data.base_offset, 0);
        assert_eq!(c.converge(1, leader).await.len(), 1);
    });
}
