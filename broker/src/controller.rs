//! The controller: cluster metadata as Raft group 0, on shard 0 of every broker.
//!
//! The controller's log is a partition log like any other (`Partition`, so the same
//! storage, Raft and RPC paths) whose batches hold `MetaRecord`s. Its voters are the seed
//! brokers. Every broker applies the committed log, in order, to its `MetadataImage`
//! (`Applier`); a publisher task hands each new image to every shard, which opens, closes
//! or deletes its replicas to match. The group saves its commit point, so a restarted
//! broker rebuilds its image from its own log before any quorum answers.
//!
//! A change is planned on any broker against its image and committed on the controller
//! leader only if the leader's image is still at the version it was planned against
//! (optimistic concurrency): a broker that is not the leader forwards the planned records
//! over the RPC, and a plan made against an outdated image is made again. Planning stays
//! where the request is; only records travel.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Semaphore;
use serde::{Deserialize, Serialize};
use sluice_protocol::ResponseError;
use sluice_raft::{ApplyObserver, RaftRequest, RaftResponse};
use sluice_storage::LogConfig;
use tracing::{error, info, warn};

use crate::metadata::{decode_change, encode_change, MetaRecord, MetadataImage};
use crate::partition::{Durability, Partition, RecordRules, ReplicaSpec};
use crate::shard::Shard;

mod liveness;

/// Directory of the controller's log inside the data dir.
pub const CONTROLLER_DIR: &str = "__controller";
/// The controller's Raft group id (partitions' ids are never 0).
pub const CONTROLLER_GROUP: u64 = 0;
/// Plans of one change made before it gives up (the image kept moving, or no leader).
const CHANGE_ATTEMPTS: u32 = 100;
/// Pause before planning again when no controller leader is known.
const CHANGE_BACKOFF: Duration = Duration::from_millis(100);
/// How long a commit (local or forwarded) may take before the change is retried.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker waits for its image to reach the version a leader reported.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Pause between attempts to reach a seed that does not answer yet.
const SEED_RETRY: Duration = Duration::from_millis(500);
/// Pause between a joining broker's rounds of asking the seeds to admit it.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Longest a leader waits for the replica it hands leadership to to take over.
const ELECT_WAIT_MAX: Duration = Duration::from_secs(30);
/// Time an election request may take on the wire beyond the wait itself.
const ELECT_RPC_SLACK: Duration = Duration::from_secs(2);

/// Messages between brokers' controllers, inside `RaftRequest::Broker`.
#[derive(Debug, Serialize, Deserialize)]
pub enum BrokerMessage {
    /// Commit `records` if the controller's image is at `expected`.
    Commit {
        expected: u64,
        records: Vec<MetaRecord>,
    },
    /// Partitions the sender leads (ready for writes) in these terms: how brokers that do
    /// not hold a replica, or whose follower has not heard from the leader yet, learn
    /// whom Metadata names.
    Leaders(Vec<LeaderNotice>),
    /// A broker not among the seeds asks to join: the controller leader adds `node` to
    /// the controller group as a learner, reaching it at `rpc`. A broker that is not the
    /// leader passes it on to the leader once (`forwarded`).
    Join {
        node: u64,
        rpc: String,
        forwarded: bool,
        /// The broker started with an empty data dir (no controller log of its own).
        #[serde(default)]
        fresh: bool,
    },
    /// Broker `node` is alive (to the controller leader, every
    /// `broker.heartbeat.interval.ms`).
    Heartbeat { node: i32 },
    /// ElectLeaders on the broker leading a partition: hand its leadership to replica `to`,
    /// waiting at most `wait_ms` for it to take over.
    Elect {
        topic: uuid::Uuid,
        partition: i32,
        to: u64,
        wait_ms: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaderNotice {
    pub topic: uuid::Uuid,
    pub partition: i32,
    pub leader: u64,
    pub term: u64,
    /// The voters out of the leader's ISR in this term.
    #[serde(default)]
    pub out_of_sync: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum BrokerReply {
    /// A `Leaders` message was taken.
    Noted,
    Committed {
        version: u64,
    },
    /// The image moved on; plan again once at least at `version`.
    Stale {
        version: u64,
    },
    NotLeader,
    Failed(String),
    /// Never to be retried: the request contradicts the cluster (a node id taken).
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    #[error("{0}")]
    Rejected(E),
    /// No controller leader committed it in time (no quorum, elections).
    #[error("metadata change not committed: {0}")]
    Unavailable(String),
}

/// Applies committed changes to the image on shard 0 and rings the publisher.
struct Applier {
    image: RefCell<MetadataImage>,
    doorbell: flume::Sender<()>,
}

impl ApplyObserver for Applier {
    fn applied(&self, batch: &[u8], base_offset: u64) {
        let count = sluice_storage::parse_header(batch).map_or(0, |h| h.offset_count());
        let mut image = self.image.borrow_mut();
        match decode_change(batch) {
            Ok(records) => records.iter().for_each(|r| image.apply(r)),
            // The same bytes are skipped the same way on every broker, so images stay alike.
            Err(e) => {
                error!(offset = base_offset, error = %e, "undecodable metadata change skipped")
            }
        }
        image.version = base_offset + count;
        let _ = self.doorbell.try_send(());
    }

    fn reset(&self, next_offset: u64) {
        // Only retention and DeleteRecords cut a log, and neither applies to this one.
        error!(
            next_offset,
            "the controller log was cut; the metadata image is kept as it was"
        );
    }
}

/// The version every shard has applied, and who waits for one.
#[derive(Default)]
struct Published {
    version: Cell<u64>,
    /// At most one waiter per request in flight.
    waiters: RefCell<Vec<(u64, flume::Sender<()>)>>,
}

impl Published {
    fn set(&self, version: u64) {
        self.version.set(version);
        self.waiters.borrow_mut().retain(|(v, tx)| {
            let waiting = *v > version;
            if !waiting {
                let _ = tx.try_send(());
            }
            waiting
        });
    }

    async fn wait(&self, version: u64) {
        if self.version.get() >= version {
            return;
        }
        let (tx, rx) = flume::bounded(1);
        self.waiters.borrow_mut().push((version, tx));
        let _ = rx.recv_async().await;
    }
}

pub struct Controller {
    partition: RefCell<Option<Rc<Partition>>>,
    applier: Rc<Applier>,
    published: Rc<Published>,
    /// Serializes commits on the leader, so the version check and the commit are one step.
    commit_lock: Semaphore,
    /// This broker's block of producer ids: the next to hand out and the block's end.
    producer_ids: Cell<(i64, i64)>,
    producer_id_lock: Semaphore,
    liveness: liveness::Liveness,
}

/// Waits for `f` at most `t`.
async fn within<T>(t: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(t).await;
        None
    })
    .await
}

impl Controller {
    /// Opens the controller's log with `voters` (node ids) as the group's initial voters,
    /// and starts publishing images to every shard of `shard`'s broker (shard 0).
    pub async fn open(shard: &Rc<Shard>, voters: Vec<u64>) -> Result<Rc<Self>, String> {
        let (doorbell, rung) = flume::bounded(1);
        let applier = Rc::new(Applier {
            image: RefCell::new(MetadataImage::default()),
            doorbell,
        });
        let spec = ReplicaSpec {
            node: shard.config.node_id as u64,
            voters,
            election_min: sluice_raft::ELECTION_TIMEOUT_MIN,
            replica_lag: shard.config.replica_lag(),
            transport: shard.raft_peers().transport(CONTROLLER_GROUP),
            ticker: shard.ticker(),
            replayed: Some(applier.clone()),
        };
        let config = LogConfig {
            retention_ms: None,
            ..LogConfig::default()
        };
        let dir = shard.config.data_dir.join(CONTROLLER_DIR);
        let partition = Partition::open(
            &dir,
            CONTROLLER_DIR.to_string(),
            0,
            config,
            RecordRules::default(),
            spec,
        )
        .await
        .map_err(|e| e.to_string())?;
        sluice_storage::sync_file_system(&shard.config.data_dir)
            .await
            .map_err(|e| e.to_string())?;
        let weak = Rc::downgrade(shard);
        partition.on_leadership_change(Box::new(move |l| {
            if let Some(s) = weak.upgrade() {
                glommio::spawn_local(async move {
                    s.announce_controller(l.leader).await;
                    if let (true, Some(c)) = (l.ready, s.controller()) {
                        c.drop_decommissioned(&s.metadata()).await;
                    }
                })
                .detach();
            }
        }));
        shard
            .announce_controller(partition.leadership().leader)
            .await;
        let published = Rc::new(Published::default());
        let controller = Rc::new(Controller {
            partition: RefCell::new(Some(partition)),
            applier: applier.clone(),
            published: published.clone(),
            commit_lock: Semaphore::new(1),
            producer_ids: Cell::new((0, 0)),
            producer_id_lock: Semaphore::new(1),
            liveness: Default::default(),
        });
        let s = shard.clone();
        glommio::spawn_local(async move {
            while rung.recv_async().await.is_ok() {
                let image = Arc::new(applier.image.borrow().clone());
                s.set_peer_addresses(&image).await;
                s.broadcast_image(image.clone()).await;
                published.set(image.version);
                if let Some(c) = s.controller() {
                    c.drop_decommissioned(&image).await;
                }
            }
        })
        .detach();
        Ok(controller)
    }

    fn partition(&self) -> Option<Rc<Partition>> {
        self.partition.borrow().clone()
    }

    /// The image as applied on this broker (maybe ahead of what the shards have).
    pub fn image(&self) -> MetadataImage {
        self.applier.image.borrow().clone()
    }

    /// The controller group's voters (the seed brokers), as this broker knows them.
    pub fn voters(&self) -> Vec<u64> {
        self.partition().map_or_else(Vec::new, |p| p.voters())
    }

    /// On the leader: takes decommissioned brokers out of the controller group, where they
    /// are learners (only brokers beyond the seeds can be decommissioned). Runs at every
    /// new image and whenever this broker starts leading, so a leader change between the
    /// commit and the removal leaves no member behind.
    pub async fn drop_decommissioned(&self, image: &MetadataImage) {
        let Some(p) = self.partition() else {
            return;
        };
        if !p.leadership().ready {
            return;
        }
        for &id in &image.decommissioned {
            match p.remove_learner(id as u64).await {
                Ok(true) => info!(node = id, "decommissioned broker left the controller group"),
                Ok(false) => {}
                Err(e) => {
                    warn!(node = id, error = %e, "a decommissioned broker is still a learner of the controller")
                }
            }
        }
    }

    /// Who leads the controller group, as this broker sees it.
    pub fn leader(&self) -> Option<u64> {
        self.partition().and_then(|p| p.leadership().leader)
    }

    /// Waits until this broker applied everything it knows committed and every shard has
    /// the image, at most `t`.
    pub async fn catch_up(&self, t: Duration) -> bool {
        let Some(p) = self.partition() else {
            return false;
        };
        let caught = p.wait_caught_up(t).await;
        let version = self.applier.image.borrow().version;
        let _ = self.applier.doorbell.try_send(());
        within(t, self.published.wait(version)).await.is_some() && caught
    }

    /// Plans `plan` against the image and commits the records it returns through the
    /// controller leader, planning again when the image moved; every shard of this broker
    /// has the resulting image when it returns.
    pub async fn change<E, P>(&self, shard: &Rc<Shard>, plan: P) -> Result<(), ChangeError<E>>
    where
        P: Fn(&MetadataImage) -> Result<Vec<MetaRecord>, E>,
    {
        let mut last = String::from("no attempt");
        for _ in 0..CHANGE_ATTEMPTS {
            let image = self.image();
            let records = plan(&image).map_err(ChangeError::Rejected)?;
            if records.is_empty() {
                self.published.wait(image.version).await;
                return Ok(());
            }
            let reply = match self.leader() {
                Some(l) if l == shard.config.node_id as u64 => {
                    self.commit_here(image.version, records).await
                }
                Some(l) => forward(shard, l, image.version, records).await,
                None => BrokerReply::NotLeader,
            };
            match reply {
                BrokerReply::Committed { version } => {
                    // Applied here once this broker's replica learns of the commit.
                    if within(CATCH_UP_WAIT, self.published.wait(version))
                        .await
                        .is_none()
                    {
                        warn!(
                            version,
                            "committed metadata change not applied here in time"
                        );
                    }
                    return Ok(());
                }
                BrokerReply::Stale { version } => {
                    let _ = within(CATCH_UP_WAIT, self.published.wait(version)).await;
                    last = format!("image moved on to version {version}");
                }
                BrokerReply::NotLeader => {
                    glommio::timer::sleep(CHANGE_BACKOFF).await;
                    last = "no controller leader".into();
                }
                BrokerReply::Failed(e) => {
                    glommio::timer::sleep(CHANGE_BACKOFF).await;
                    last = e;
                }
                BrokerReply::Refused(e) => return Err(ChangeError::Unavailable(e)),
                BrokerReply::Noted => last = "the controller answered a commit oddly".into(),
            }
        }
        Err(ChangeError::Unavailable(last))
    }

    /// On the leader: commits `records` if the image is at `expected`.
    pub async fn commit_here(&self, expected: u64, records: Vec<MetaRecord>) -> BrokerReply {
        let Ok(_permit) = self.commit_lock.acquire_permit(1).await else {
            return BrokerReply::Failed("controller closed".into());
        };
        let Some(p) = self.partition() else {
            return BrokerReply::Failed("controller closed".into());
        };
        if p.check_leader().is_err() {
            return BrokerReply::NotLeader;
        }
        let version = self.applier.image.borrow().version;
        if version != expected {
            return BrokerReply::Stale { version };
        }
        let batch = encode_change(&records);
        match within(COMMIT_TIMEOUT, p.produce_own(batch, Durability::Quorum)).await {
            Some(Ok(_)) => BrokerReply::Committed {
                version: self.applier.image.borrow().version,
            },
            Some(Err(ResponseError::NotLeaderOrFollower)) => BrokerReply::NotLeader,
            Some(Err(e)) => BrokerReply::Failed(format!("controller write failed: {e:?}")),
            None => BrokerReply::Failed(format!("no quorum committed within {COMMIT_TIMEOUT:?}")),
        }
    }

    /// Answers a peer's `RaftRequest::Broker` (on shard 0).
    pub async fn serve(&self, shard: &Rc<Shard>, bytes: &[u8]) -> RaftResponse {
        let reply = match serde_json::from_slice::<BrokerMessage>(bytes) {
            Ok(BrokerMessage::Commit { expected, records }) => {
                self.commit_here(expected, records).await
            }
            Ok(BrokerMessage::Leaders(notices)) => {
                shard.note_leaders(notices).await;
                BrokerReply::Noted
            }
            Ok(BrokerMessage::Join {
                node,
                rpc,
                forwarded,
                fresh,
            }) => self.admit(shard, node, rpc, forwarded, fresh).await,
            Ok(BrokerMessage::Elect {
                topic,
                partition,
                to,
                wait_ms,
            }) => elect_here(shard, topic, partition, to, wait_ms).await,
            Ok(BrokerMessage::Heartbeat { node }) => self.heard_from(shard, node).await,
            Err(e) => {
                warn!(error = %e, "undecodable broker message");
                BrokerReply::Failed(format!("undecodable broker message: {e}"))
            }
        };
        RaftResponse::Broker(serde_json::to_vec(&reply).expect("replies serialize"))
    }

    /// On the leader: adds a joining broker to the controller group as a learner, after
    /// checking that its node id is its own. Elsewhere: passes the request on to the leader.
    async fn admit(
        &self,
        shard: &Rc<Shard>,
        node: u64,
        rpc: String,
        forwarded: bool,
        fresh: bool,
    ) -> BrokerReply {
        let Some(p) = self.partition() else {
            return BrokerReply::Failed("controller closed".into());
        };
        match self.leader() {
            Some(l) if l == shard.config.node_id as u64 => {}
            Some(l) if !forwarded => {
                let msg = BrokerMessage::Join {
                    node,
                    rpc,
                    forwarded: true,
                    fresh,
                };
                return call_controller(shard, l, &msg).await;
            }
            _ => return BrokerReply::NotLeader,
        }
        let (decommissioned, registered_rpc) = {
            let image = self.applier.image.borrow();
            (
                image.decommissioned.contains(&(node as i32)),
                image.brokers.get(&(node as i32)).map(|b| b.rpc.clone()),
            )
        };
        // A decommissioned broker's old data (its stale controller log) never comes back;
        // started empty, it joins as a new broker.
        if decommissioned && !fresh {
            return BrokerReply::Refused(format!(
                "node id {node} was decommissioned: to join again, start it with an empty \
                 data dir"
            ));
        }
        if p.voters().contains(&node) {
            return BrokerReply::Refused(format!(
                "node id {node} is a voter of the controller (a seed broker): give the \
                 joining broker a node.id of its own"
            ));
        }
        if let Some(registered) = registered_rpc.filter(|r| *r != rpc) {
            return BrokerReply::Refused(format!(
                "node id {node} is registered with RPC address {registered}, not {rpc}: \
                 give the joining broker a node.id of its own"
            ));
        }
        if decommissioned {
            // Readmitted before it becomes a learner, so the removal of decommissioned
            // learners leaves it be.
            let id = node as i32;
            let readmit = move |img: &MetadataImage| {
                let records = if img.decommissioned.contains(&id) {
                    vec![MetaRecord::BrokerReadmitted { id }]
                } else {
                    Vec::new()
                };
                Ok::<_, std::convert::Infallible>(records)
            };
            if let Err(e) = self.change(shard, readmit).await {
                return BrokerReply::Failed(format!("cannot readmit node id {node}: {e}"));
            }
            info!(
                node,
                "a decommissioned node id is admitted again, for an empty broker"
            );
        }
        let addr = match resolve(&rpc).await {
            Ok(a) => a,
            Err(e) => return BrokerReply::Failed(format!("cannot resolve {rpc}: {e}")),
        };
        shard.set_addresses(vec![(node, addr)]).await;
        match p.add_learner(node).await {
            Ok(()) => {
                info!(node, %rpc, "broker joins the controller group as a learner");
                BrokerReply::Noted
            }
            Err(_) => BrokerReply::NotLeader,
        }
    }

    /// On a broker that is not a seed: asks the seeds, in turn, until the controller leader
    /// admitted this broker. Err for a refusal (its node id is taken) or a stop.
    /// `fresh`: this broker started with an empty data dir.
    pub async fn join(
        &self,
        shard: &Rc<Shard>,
        seeds: &[(u64, SocketAddr)],
        fresh: bool,
    ) -> Result<(), String> {
        let node = shard.config.node_id as u64;
        let rpc = shard
            .config
            .advertised_rpc()
            .ok_or("joining a cluster needs rpc.listen (--rpc-listen)")?;
        let mut rounds = 0u64;
        loop {
            for (seed, _) in seeds {
                let msg = BrokerMessage::Join {
                    node,
                    rpc: rpc.clone(),
                    forwarded: false,
                    fresh,
                };
                match call_controller(shard, *seed, &msg).await {
                    BrokerReply::Noted => return Ok(()),
                    BrokerReply::Refused(e) => return Err(e),
                    other => {
                        if rounds.is_multiple_of(20) {
                            info!(seed, reply = ?other, "waiting to be admitted to the cluster");
                        }
                    }
                }
            }
            if shard.shutting_down.get() {
                return Err("stopped while joining the cluster".into());
            }
            rounds += 1;
            glommio::timer::sleep(JOIN_RETRY).await;
        }
    }

    /// Answers a Raft message for the controller group.
    pub async fn serve_raft(&self, request: RaftRequest) -> RaftResponse {
        match self.partition() {
            Some(p) => p.serve_raft(request).await,
            None => RaftResponse::Failed("controller closed".into()),
        }
    }

    /// A producer id unique in the cluster: from this broker's block, a new block
    /// committed through the controller when it runs out.
    pub async fn next_producer_id(&self, shard: &Rc<Shard>) -> Result<i64, String> {
        let _permit = self
            .producer_id_lock
            .acquire_permit(1)
            .await
            .map_err(|_| "controller closed".to_string())?;
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let start = Cell::new(0);
        self.change(shard, |img| {
            start.set(img.producer_ids_reserved);
            Ok::<_, ()>(vec![MetaRecord::ProducerIds {
                next: img.producer_ids_reserved + crate::metadata::PRODUCER_ID_BLOCK,
            }])
        })
        .await
        .map_err(|e| match e {
            ChangeError::Rejected(()) => unreachable!("the plan never refuses"),
            ChangeError::Unavailable(m) => m,
        })?;
        // The plan that committed ran last, against the image the block was taken from.
        let start = start.get();
        self.producer_ids
            .set((start + 1, start + crate::metadata::PRODUCER_ID_BLOCK));
        Ok(start)
    }

    /// Stops the controller's group and closes its log.
    pub async fn close(&self) {
        let p = self.partition.borrow_mut().take();
        if let Some(p) = p.and_then(|p| Rc::try_unwrap(p).ok()) {
            if let Err(e) = p.close().await {
                warn!(error = %e, "closing the controller log failed");
            }
        }
    }
}

async fn forward(
    shard: &Rc<Shard>,
    leader: u64,
    expected: u64,
    records: Vec<MetaRecord>,
) -> BrokerReply {
    call_controller(shard, leader, &BrokerMessage::Commit { expected, records }).await
}

/// On the broker leading a partition: hands its leadership to replica `to`. A refusal that
/// asking again would not change (the target is not a voter or not answering) is `Refused`.
async fn elect_here(
    shard: &Rc<Shard>,
    topic: uuid::Uuid,
    partition: i32,
    to: u64,
    wait_ms: u64,
) -> BrokerReply {
    use sluice_raft::TransferError;
    let wait = Duration::from_millis(wait_ms).min(ELECT_WAIT_MAX);
    let moved = shard
        .with_partition(topic, partition, move |p| async move {
            p.transfer_leadership(to, wait).await
        })
        .await;
    match moved {
        Ok(Ok(())) => BrokerReply::Noted,
        Ok(Err(TransferError::NotLeader)) | Err(ResponseError::NotLeaderOrFollower) => {
            BrokerReply::NotLeader
        }
        Ok(Err(e @ (TransferError::NotVoter(_) | TransferError::Unreachable(..)))) => {
            BrokerReply::Refused(e.to_string())
        }
        Ok(Err(e)) => BrokerReply::Failed(e.to_string()),
        Err(e) => BrokerReply::Failed(format!("{e:?}")),
    }
}

/// Asks broker `leader` to hand a partition's leadership to replica `to` (ElectLeaders).
pub async fn request_election(
    shard: &Rc<Shard>,
    leader: u64,
    topic: uuid::Uuid,
    partition: i32,
    to: u64,
    wait: Duration,
) -> BrokerReply {
    let wait = wait.min(ELECT_WAIT_MAX);
    let msg = BrokerMessage::Elect {
        topic,
        partition,
        to,
        wait_ms: wait.as_millis() as u64,
    };
    call_controller_within(shard, leader, &msg, wait + ELECT_RPC_SLACK).await
}

/// Sends `msg` to the controller on broker `to` and returns its reply.
async fn call_controller(shard: &Rc<Shard>, to: u64, msg: &BrokerMessage) -> BrokerReply {
    call_controller_within(shard, to, msg, COMMIT_TIMEOUT).await
}

async fn call_controller_within(
    shard: &Rc<Shard>,
    to: u64,
    msg: &BrokerMessage,
    timeout: Duration,
) -> BrokerReply {
    let msg = serde_json::to_vec(msg).expect("broker messages serialize");
    let answer = shard
        .raft_peers()
        .call(to, CONTROLLER_GROUP, RaftRequest::Broker(msg), timeout)
        .await;
    match answer {
        Ok(RaftResponse::Broker(b)) => serde_json::from_slice(&b)
            .unwrap_or_else(|e| BrokerReply::Failed(format!("undecodable controller reply: {e}"))),
        Ok(other) => BrokerReply::Failed(format!("unexpected controller reply: {other:?}")),
        Err(e) => BrokerReply::Failed(e),
    }
}

/// Resolves `HOST:PORT` off the executor thread (it may ask DNS).
pub async fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    let a = addr.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{a} resolves to no address")))
        })
        .await
}

/// The node ids of the seeds (the controller's voters), learned by handshake with each.
/// A seed waits for every other seed to answer (they form the controller group together);
/// a broker that is not a seed (`joining`) for any one of them. Without seeds this broker
/// is the only voter.
pub async fn discover_seeds(
    shard: &Rc<Shard>,
    joining: bool,
) -> Result<Vec<(u64, SocketAddr)>, String> {
    let me = shard.config.node_id as u64;
    let own = shard.config.advertised_rpc();
    let mut found: Vec<(u64, SocketAddr)> = Vec::new();
    let mut waiting: Vec<&String> = shard
        .config
        .seeds
        .iter()
        .filter(|s| Some(*s) != own.as_ref())
        .collect();
    let mut attempts = 0u64;
    let done = |waiting: &[&String], found: &[(u64, SocketAddr)]| {
        waiting.is_empty() || (joining && !found.is_empty())
    };
    while !done(&waiting, &found) {
        if attempts > 0 {
            if shard.shutting_down.get() {
                return Err("stopped while waiting for seeds".into());
            }
            glommio::timer::sleep(SEED_RETRY).await;
        }
        attempts += 1;
        let mut still = Vec::new();
        for seed in waiting {
            let outcome = match resolve(seed).await {
                Ok(addr) => shard.raft_peers().discover(addr).await.map(|id| (id, addr)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok((id, addr)) => {
                    if id == me || found.iter().any(|(n, _)| *n == id) {
                        return Err(format!(
                            "seed {seed} answers as node {id}, which another seed (or this \
                             broker) is: every broker needs its own node.id"
                        ));
                    }
                    info!(%seed, node = id, "seed broker found");
                    found.push((id, addr));
                }
                Err(e) => {
                    if attempts % 20 == 1 {
                        info!(%seed, error = %e, "waiting for seed broker");
                    }
                    still.push(seed);
                }
            }
        }
        waiting = still;
    }
    Ok(found)
}
