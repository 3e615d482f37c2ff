//! A shard: one pinned glommio executor that owns a subset of partitions and serves the
//! connections it accepts. Shards share nothing; they talk by sending jobs (closures that
//! run on the receiving shard) over bounded cross-shard queues.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use sluice_protocol::{ResponseError, VersionTable};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{Config, PARTITION_OPEN_CONCURRENCY};
use crate::controller::{ChangeError, Controller, LeaderNotice, CONTROLLER_GROUP};

/// How often shard 0 sends peers the leaderships its broker's replicas gained.
const LEADER_NOTICE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// How often it sends all of them again, for peers that restarted.
const LEADER_RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
use crate::metadata::{MetaRecord, MetadataImage, Topic};
use crate::partition::{Durability, Partition, ReplicaSpec};
use sluice_raft::rpc::Peers;
use sluice_raft::{Leadership, Ticker};

mod reassign;

/// Work sent to another shard: runs there and reports back through its own channel.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The owner shard of a partition: a pure function of topic id and partition, so every
/// shard routes the same way without asking anyone.
/// Counts of the local replicas that cannot serve yet, for `/ready`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Readiness {
    /// Assigned here, not open yet.
    pub unopened: usize,
    /// Their log could not be opened.
    pub offline: usize,
    /// Open, and no leader is known to them.
    pub leaderless: usize,
}

impl Readiness {
    pub fn add(&mut self, o: Readiness) {
        self.unopened += o.unopened;
        self.offline += o.offline;
        self.leaderless += o.leaderless;
    }

    pub fn ready(&self) -> bool {
        self.unopened == 0 && self.offline == 0 && self.leaderless == 0
    }
}

pub fn shard_for(topic_id: &Uuid, partition: i32, shards: usize) -> usize {
    let mut h = crc32c::crc32c(topic_id.as_bytes());
    h = crc32c::crc32c_append(h, &partition.to_be_bytes());
    h as usize % shards
}

/// The Raft group id of a partition: unique per (topic id, partition) with overwhelming
/// likelihood (topic ids are random), the same on every broker. Group 0 is reserved.
pub fn group_id(topic_id: &Uuid, partition: i32) -> u64 {
    let hi = u64::from_be_bytes(topic_id.as_bytes()[..8].try_into().expect("16-byte uuid"));
    hi.wrapping_add(partition as u32 as u64).max(1)
}

/// The voters a leader of this term reported out of the ISR.
type OutOfSync = (u64, Vec<u64>);

/// A partition's leader, epoch and replicas as this broker knows them.
pub struct PartitionView {
    pub leader: Option<i32>,
    /// The leader epoch (Raft term); -1 when unknown.
    pub epoch: i32,
    pub replicas: Vec<i32>,
    /// Replicas that are not known to be out of the group's quorum.
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error("{0}")]
    Rejected(E),
    /// The controller did not commit it (no quorum, no leader in time).
    #[error("metadata change not committed: {0}")]
    Unavailable(String),
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<Config>,
    pub versions: Rc<VersionTable>,
    /// `queued.max.request.bytes`: permits are request bytes read but not yet answered.
    pub inflight_bytes: Rc<Semaphore>,
    peers: Vec<flume::Sender<Job>>,
    partitions: RefCell<HashMap<(Uuid, i32), Rc<Partition>>>,
    /// Partitions of this broker whose log could not be opened (out of descriptors or
    /// memory, a bad directory), on every shard: their owner answers KAFKA_STORAGE_ERROR,
    /// Metadata reports them offline, and the next metadata change retries them.
    offline: RefCell<HashSet<(Uuid, i32)>>,
    metadata: RefCell<Arc<MetadataImage>>,
    /// Shard 0 only: this broker's replica of the controller group.
    controller: RefCell<Option<Rc<Controller>>>,
    /// The controller group's leader as shard 0 last reported it, on every shard.
    controller_leader: Cell<Option<u64>>,
    pub shutting_down: Cell<bool>,
    /// Consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: crate::groups::Coordinator,
    pub metrics: crate::telemetry::ShardMetrics,
    /// Drives the Raft timers of every partition replica on this shard.
    ticker: Rc<Ticker>,
    /// This shard's connections to peer brokers, shared by all its groups.
    raft_peers: Rc<Peers>,
    /// Each partition's leadership as its owner shard last reported it, on every shard
    /// (Metadata answers from here without asking the owner).
    leaders: RefCell<HashMap<(Uuid, i32), Leadership>>,
    /// (leader, term) of partitions as their leaders announced them, on every shard: for
    /// partitions with no replica here, and followers that have not heard from a new
    /// leader yet.
    announced: RefCell<HashMap<(Uuid, i32), (u64, u64)>>,
    /// The voters out of each partition's ISR, by the term of the leader that reported them
    /// (here or in a notice), on every shard.
    out_of_sync: RefCell<HashMap<(Uuid, i32), OutOfSync>>,
    /// Shard 0: leaderships of this broker's replicas to tell the peers about.
    outbox: RefCell<Vec<LeaderNotice>>,
    /// Each partition's Raft group id, from the metadata image, for routing RPC messages.
    group_ids: RefCell<HashMap<u64, (Uuid, i32)>>,
    /// Shard 0, with `rpc.listen`: the inter-broker RPC endpoint.
    rpc_server: RefCell<Option<sluice_raft::rpc::Server>>,
    /// Partitions this shard leads whose reassignment a task of its own drives.
    moving: RefCell<HashSet<(Uuid, i32)>>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        peers: Vec<flume::Sender<Job>>,
        versions: Rc<VersionTable>,
    ) -> Rc<Self> {
        let budget = config.queued_max_request_bytes as u64;
        Rc::new(Shard {
            id,
            count: peers.len(),
            versions,
            inflight_bytes: Rc::new(Semaphore::new(budget)),
            peers,
            partitions: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashSet::new()),
            metadata: RefCell::new(Arc::new(MetadataImage::default())),
            controller: RefCell::new(None),
            controller_leader: Cell::new(None),
            shutting_down: Cell::new(false),
            groups: crate::groups::Coordinator::default(),
            metrics: crate::telemetry::ShardMetrics::new(id),
            ticker: {
                let t = Ticker::new(sluice_raft::ELECTION_TIMEOUT_MIN);
                t.spawn();
                t
            },
            raft_peers: Peers::new(config.node_id as u64),
            leaders: RefCell::new(HashMap::new()),
            announced: RefCell::new(HashMap::new()),
            out_of_sync: RefCell::new(HashMap::new()),
            outbox: RefCell::new(Vec::new()),
            group_ids: RefCell::new(HashMap::new()),
            rpc_server: RefCell::new(None),
            moving: RefCell::new(HashSet::new()),
            config,
        })
    }

    /// A partition's leadership as its owner last reported it (`None` before it opened).
    pub fn leadership(&self, topic_id: &Uuid, partition: i32) -> Option<Leadership> {
        let key = (*topic_id, partition);
        let local = self.leaders.borrow().get(&key).copied();
        let Some((leader, term)) = self.announced.borrow().get(&key).copied() else {
            return local;
        };
        let announced = Leadership {
            leader: Some(leader),
            term,
            ready: false,
            isr_changes: 0,
        };
        match local {
            // The newest term wins; a replica that knows no leader in the announced term
            // has not heard from it yet.
            Some(l) if l.term > term || (l.term == term && l.leader.is_some()) => Some(l),
            _ => Some(announced),
        }
    }

    /// Records leaderships peers announced, on every shard.
    pub async fn note_leaders(self: &Rc<Self>, notices: Vec<LeaderNotice>) {
        for target in 0..self.count {
            let notices = notices.clone();
            self.run_on(target, move |s| async move {
                let mut a = s.announced.borrow_mut();
                for n in notices {
                    let e = a
                        .entry((n.topic, n.partition))
                        .or_insert((n.leader, n.term));
                    if n.term >= e.1 {
                        *e = (n.leader, n.term);
                    }
                    s.note_out_of_sync((n.topic, n.partition), n.term, n.out_of_sync);
                }
            })
            .await;
        }
    }

    /// Shard 0: every `LEADER_NOTICE_INTERVAL` sends the peers what this broker's replicas
    /// started leading, and every `LEADER_RESYNC_INTERVAL` all it leads (a restarted peer
    /// learns it so), each as one message per peer.
    pub fn start_leader_notices(self: &Rc<Self>) {
        let s = self.clone();
        glommio::spawn_local(async move {
            let mut last_resync = std::time::Instant::now();
            while !s.shutting_down.get() {
                glommio::timer::sleep(LEADER_NOTICE_INTERVAL).await;
                let mut notices = std::mem::take(&mut *s.outbox.borrow_mut());
                if last_resync.elapsed() >= LEADER_RESYNC_INTERVAL {
                    last_resync = std::time::Instant::now();
                    for target in 0..s.count {
                        notices.extend(s.run_on(target, |t| async move { t.led_here() }).await);
                    }
                }
                if notices.is_empty() {
                    continue;
                }
                let msg = serde_json::to_vec(&crate::controller::BrokerMessage::Leaders(notices))
                    .expect("broker messages serialize");
                for (peer, _) in s.raft_peers.known() {
                    let (peers, msg) = (s.raft_peers.clone(), msg.clone());
                    glommio::spawn_local(async move {
                        let sent = peers
                            .call(
                                peer,
                                CONTROLLER_GROUP,
                                sluice_raft::RaftRequest::Broker(msg),
                                LEADER_NOTICE_INTERVAL * 10,
                            )
                            .await;
                        if let Err(e) = sent {
                            debug!(peer, error = %e, "leader notice not delivered");
                        }
                    })
                    .detach();
                }
            }
        })
        .detach();
    }

    /// Partitions this shard's replicas lead, ready for writes.
    fn led_here(&self) -> Vec<LeaderNotice> {
        let me = self.config.node_id as u64;
        self.leaders
            .borrow()
            .iter()
            .filter(|(_, l)| l.ready && l.leader == Some(me))
            .map(|(&(topic, partition), l)| LeaderNotice {
                topic,
                partition,
                leader: me,
                term: l.term,
                out_of_sync: self.out_of_sync_in(&(topic, partition), l.term),
            })
            .collect()
    }

    /// Records the out-of-sync voters a leader of `term` reported, unless a later term's are
    /// known.
    fn note_out_of_sync(&self, key: (Uuid, i32), term: u64, lagging: Vec<u64>) {
        let mut all = self.out_of_sync.borrow_mut();
        match all.get(&key) {
            Some((t, _)) if *t > term => {}
            _ => {
                all.insert(key, (term, lagging));
            }
        }
    }

    /// The voters out of the ISR as the leader of `term` reported them.
    fn out_of_sync_in(&self, key: &(Uuid, i32), term: u64) -> Vec<u64> {
        match self.out_of_sync.borrow().get(key) {
            Some((t, lagging)) if *t == term => lagging.clone(),
            _ => Vec::new(),
        }
    }

    /// The node id Metadata names as controller: the controller group's leader, or this
    /// broker while none is known (every broker forwards admin changes to the leader).
    pub fn controller_id(&self) -> i32 {
        self.controller_leader
            .get()
            .map_or(self.config.node_id, |l| l as i32)
    }

    /// Tells every shard who leads the controller group.
    pub async fn announce_controller(self: &Rc<Self>, leader: Option<u64>) {
        for target in 0..self.count {
            self.run_on(
                target,
                move |s| async move { s.controller_leader.set(leader) },
            )
            .await;
        }
    }

    /// The registered brokers (this one alone before it registered).
    pub fn brokers(&self, image: &MetadataImage) -> Vec<crate::metadata::BrokerInfo> {
        if image.brokers.is_empty() {
            return vec![self.config.broker_info()];
        }
        image.brokers.values().cloned().collect()
    }

    /// A partition as Metadata and DescribeTopicPartitions report it.
    pub fn partition_view(&self, topic: &Topic, partition: i32) -> PartitionView {
        let replicas = topic.replicas(partition).to_vec();
        let leadership = self.leadership(&topic.id, partition);
        let offline: Vec<i32> = if self.is_offline(&topic.id, partition) {
            vec![self.config.node_id]
        } else {
            Vec::new()
        };
        // The ISR as the current term's leader reported it, without replicas offline here,
        // and without replicas still being added by a reassignment (Kafka's adding replicas
        // join the ISR once caught up; these become voters only then).
        let mut lagging = leadership.map_or_else(Vec::new, |l| {
            self.out_of_sync_in(&(topic.id, partition), l.term)
        });
        if let Some(r) = topic.reassignments.get(&partition) {
            lagging.extend(r.adding.iter().map(|&a| a as u64));
        }
        PartitionView {
            leader: leadership.and_then(|l| l.leader).map(|l| l as i32),
            epoch: leadership.map_or(-1, |l| l.term.min(i32::MAX as u64) as i32),
            isr: replicas
                .iter()
                .copied()
                .filter(|r| !offline.contains(r) && !lagging.contains(&(*r as u64)))
                .collect(),
            replicas,
            offline,
        }
    }

    /// Tells every shard about a partition's leadership (`None`: it closed here).
    async fn announce_leadership(self: &Rc<Self>, key: (Uuid, i32), l: Option<Leadership>) {
        for target in 0..self.count {
            self.run_on(target, move |s| async move {
                let mut leaders = s.leaders.borrow_mut();
                match l {
                    Some(l) => leaders.insert(key, l),
                    None => leaders.remove(&key),
                };
            })
            .await;
        }
    }

    pub fn set_controller(&self, c: Rc<Controller>) {
        *self.controller.borrow_mut() = Some(c);
    }

    /// Shard 0's controller replica (`None` on other shards and before it opened).
    pub fn controller(&self) -> Option<Rc<Controller>> {
        self.controller.borrow().clone()
    }

    pub fn raft_peers(&self) -> &Rc<Peers> {
        &self.raft_peers
    }

    pub fn ticker(&self) -> Rc<Ticker> {
        self.ticker.clone()
    }

    /// Tells every shard's `Peers` where each registered broker's RPC listener is.
    pub async fn set_peer_addresses(self: &Rc<Self>, image: &MetadataImage) {
        let me = self.config.node_id;
        let mut known = Vec::new();
        for b in image.brokers.values().filter(|b| b.id != me) {
            match crate::controller::resolve(&b.rpc).await {
                Ok(a) => known.push((b.id as u64, a)),
                Err(e) => {
                    warn!(broker = b.id, rpc = %b.rpc, error = %e, "cannot resolve a broker's RPC address")
                }
            }
        }
        self.set_addresses(known).await;
    }

    /// Records peer RPC addresses on every shard.
    pub async fn set_addresses(self: &Rc<Self>, known: Vec<(u64, std::net::SocketAddr)>) {
        for target in 0..self.count {
            let known = known.clone();
            self.run_on(target, move |s| async move {
                for (n, a) in known {
                    s.raft_peers.set_address(n, a);
                }
            })
            .await;
        }
    }

    /// Runs the jobs other shards send here until every sender is gone.
    pub async fn serve_jobs(self: Rc<Self>, rx: flume::Receiver<Job>) {
        while let Ok(job) = rx.recv_async().await {
            glommio::spawn_local(job(self.clone())).detach();
        }
    }

    /// Runs `f` on shard `target` and returns its result. Local calls skip the queue.
    pub async fn run_on<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return f(self.clone()).await;
        }
        self.metrics.cross_shard_messages.increment(1);
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move |s| {
            Box::pin(async move {
                let _ = tx.send(f(s).await);
            })
        });
        // A peer only goes away at shutdown, after draining; a request still waiting on it
        // then never completes, and this executor stops with it.
        if self.peers[target].send_async(job).await.is_err() {
            debug!(target, "shard stopped; abandoning a cross-shard call");
            return futures_lite::future::pending().await;
        }
        match rx.recv_async().await {
            Ok(r) => r,
            Err(_) => {
                debug!(target, "shard stopped before answering a cross-shard call");
                futures_lite::future::pending().await
            }
        }
    }

    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    pub fn owner_of(&self, topic_id: &Uuid, partition: i32) -> usize {
        shard_for(topic_id, partition, self.count)
    }

    pub fn local_partition(&self, topic_id: &Uuid, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(*topic_id, partition))
            .cloned()
    }

    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// What keeps this shard's replicas from serving: for each replica its image assigns
    /// here, whether it is open and whether it knows a leader.
    pub fn readiness(&self) -> Readiness {
        let image = self.metadata();
        let me = self.config.node_id;
        let mut r = Readiness::default();
        for t in image.topics.values() {
            for p in 0..t.partitions {
                if self.owner_of(&t.id, p) != self.id || !t.replicas(p).contains(&me) {
                    continue;
                }
                match self.local_partition(&t.id, p) {
                    // The leadership Metadata answers with (what the ticker last reported),
                    // not the replica's own view a tick ahead of it: a broker is ready once
                    // its clients would be told a leader.
                    Some(_) if self.leadership(&t.id, p).and_then(|l| l.leader).is_none() => {
                        r.leaderless += 1
                    }
                    Some(_) => {}
                    None if self.is_offline(&t.id, p) => r.offline += 1,
                    None => r.unopened += 1,
                }
            }
        }
        r
    }

    /// Runs `f` with the partition on its owner shard.
    pub async fn with_partition<R, F, Fut>(
        self: &Rc<Self>,
        topic_id: Uuid,
        partition: i32,
        f: F,
    ) -> Result<R, ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Partition>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let owner = self.owner_of(&topic_id, partition);
        self.run_on(owner, move |s| async move {
            match s.local_partition(&topic_id, partition) {
                Some(p) => {
                    // Ownership is a pure function of the key; a mismatch is a routing bug.
                    debug_assert_eq!(s.owner_of(&topic_id, partition), s.id);
                    Ok(f(p).await)
                }
                None if s.is_offline(&topic_id, partition) => Err(ResponseError::KafkaStorageError),
                // The partition exists, on other brokers: Kafka's answer sends the client to
                // its leader.
                None if s
                    .metadata()
                    .topic_by_id(&topic_id)
                    .is_some_and(|t| partition >= 0 && partition < t.partitions) =>
                {
                    Err(ResponseError::NotLeaderOrFollower)
                }
                None => Err(ResponseError::UnknownTopicOrPartition),
            }
        })
        .await
    }

    /// Whether this broker holds the partition but could not open its log.
    pub fn is_offline(&self, topic_id: &Uuid, partition: i32) -> bool {
        self.offline.borrow().contains(&(*topic_id, partition))
    }

    /// Tells every shard that a partition went offline (or came back).
    async fn announce_offline(self: &Rc<Self>, key: (Uuid, i32), offline: bool) {
        for target in 0..self.count {
            self.run_on(target, move |s| async move {
                let mut set = s.offline.borrow_mut();
                if offline {
                    set.insert(key);
                } else {
                    set.remove(&key);
                }
            })
            .await;
        }
    }

    /// Changes cluster metadata: `plan` runs on shard 0 against the current image and
    /// returns the records to commit (or a rejection); the controller commits them (planning
    /// again if the image moved meanwhile, so `plan` may run more than once). Once they are
    /// committed, every shard of this broker applies the new image (opening or deleting
    /// partitions) before this returns, so a created topic is writable as soon as
    /// CreateTopics answers.
    pub async fn update_metadata<E, P>(
        self: &Rc<Self>,
        plan: P,
    ) -> Result<Arc<MetadataImage>, UpdateError<E>>
    where
        E: Send + 'static,
        P: Fn(&MetadataImage) -> Result<Vec<MetaRecord>, E> + Send + 'static,
    {
        self.run_on(0, move |s| async move {
            let Some(c) = s.controller() else {
                return Err(UpdateError::Unavailable(
                    "the controller is not open".into(),
                ));
            };
            match c.change(&s, plan).await {
                Ok(()) => Ok(s.metadata()),
                Err(ChangeError::Rejected(e)) => Err(UpdateError::Rejected(e)),
                Err(ChangeError::Unavailable(m)) => Err(UpdateError::Unavailable(m)),
            }
        })
        .await
    }

    /// Hands a new image to every shard and waits until each has applied it.
    pub async fn broadcast_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        for target in 0..self.count {
            let image = image.clone();
            self.run_on(target, move |s| async move { s.apply_image(image).await })
                .await;
        }
    }

    /// A producer id unique in the cluster, from shard 0's block.
    pub async fn next_producer_id(self: &Rc<Self>) -> Result<i64, String> {
        self.run_on(0, |s| async move {
            match s.controller() {
                Some(c) => c.next_producer_id(&s).await,
                None => Err("the controller is not open".to_string()),
            }
        })
        .await
    }

    /// Makes this shard's partitions match the image: opens new ones it owns, applies
    /// config changes, and closes and deletes those whose topic is gone.
    async fn apply_image(self: Rc<Self>, image: Arc<MetadataImage>) {
        if image.version < self.metadata.borrow().version {
            return;
        }
        *self.metadata.borrow_mut() = image.clone();
        let me = self.config.node_id;
        *self.group_ids.borrow_mut() = image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (group_id(&t.id, p), (t.id, p))))
            .collect();
        // What is known of partitions that no longer exist goes with them.
        let exists =
            |(id, p): &(Uuid, i32)| image.topic_by_id(id).is_some_and(|t| *p < t.partitions);
        self.offline.borrow_mut().retain(exists);
        self.announced.borrow_mut().retain(|k, _| exists(k));
        self.out_of_sync.borrow_mut().retain(|k, _| exists(k));
        let gone: Vec<((Uuid, i32), Rc<Partition>)> = {
            let mut parts = self.partitions.borrow_mut();
            let keys: Vec<_> = parts
                .keys()
                .filter(|(id, p)| {
                    image
                        .topic_by_id(id)
                        .is_none_or(|t| *p >= t.partitions || !t.replicas(*p).contains(&me))
                })
                .copied()
                .collect();
            keys.iter()
                .filter_map(|k| parts.remove(k).map(|p| (*k, p)))
                .collect()
        };
        for (key, p) in gone {
            let dir = p.dir().to_path_buf();
            info!(topic = %p.topic, partition = p.index, "deleting a replica no longer assigned here");
            self.announce_leadership(key, None).await;
            if let Ok(p) = Rc::try_unwrap(p) {
                // Its Raft group stops before its files go.
                let _ = p.close().await;
            }
            if let Err(e) = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(&dir))
                .await
            {
                warn!(error = %e, "could not delete a deleted partition's directory");
            }
        }
        let mut opens: Vec<(Rc<Topic>, Vec<i32>)> = Vec::new();
        let mut to_open = Vec::new();
        for t in image.topics.values() {
            for p in 0..t.partitions {
                if self.owner_of(&t.id, p) != self.id || !t.replicas(p).contains(&me) {
                    continue;
                }
                match self.local_partition(&t.id, p) {
                    Some(part) => {
                        part.set_config(
                            self.config.log_config(&t.configs),
                            self.config.record_rules(&t.configs),
                        );
                        part.set_preferred_leader(preferred_leader(t, p));
                        if t.reassignments.contains_key(&p) && part.leadership().ready {
                            self.drive_reassignment((t.id, p));
                        }
                    }
                    None => to_open.push(p),
                }
            }
            if !to_open.is_empty() {
                // One copy per topic, shared by its partitions' open tasks.
                opens.push((Rc::new(t.clone()), std::mem::take(&mut to_open)));
            }
        }
        // Opens overlap their I/O (index reads, the tail block's rewrite), so a shard with
        // thousands of partitions starts in a fraction of the serial time.
        let jobs = opens
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)));
        let opened = overlapped(jobs, |(t, p)| {
            let s = self.clone();
            async move { s.open_partition(&t, p).await.map(|part| ((t.id, p), part)) }
        })
        .await;
        let opened: Vec<_> = opened.into_iter().flatten().collect();
        if opened.is_empty() {
            return;
        }
        // One sync makes what every open recovered durable, before any of it is served.
        if let Err(e) = sluice_storage::sync_file_system(&self.config.data_dir).await {
            tracing::error!(error = %e, partitions = opened.len(),
                "cannot sync the data dir; the partitions just opened stay offline");
            for (key, _) in opened {
                if !self.is_offline(&key.0, key.1) {
                    self.announce_offline(key, true).await;
                }
            }
            return;
        }
        for (key, part) in opened {
            let (topic, index) = (part.topic.clone(), part.index);
            self.partitions.borrow_mut().insert(key, part);
            if self.is_offline(&key.0, key.1) {
                info!(%topic, partition = index, "offline partition opened; serving it again");
                self.announce_offline(key, false).await;
            }
        }
    }

    /// A local replica's view of its leadership changed: every shard learns it (Metadata),
    /// and for `__consumer_offsets` the group coordinator follows the leader.
    async fn leadership_changed(
        self: &Rc<Self>,
        key: (Uuid, i32),
        part: &Rc<Partition>,
        l: Leadership,
        offsets: bool,
    ) {
        // Only the ISR changed: the group coordinator has nothing to follow.
        let isr_only = self.leaders.borrow().get(&key).is_some_and(|&p| {
            Leadership {
                isr_changes: l.isr_changes,
                ..p
            } == l
        });
        self.announce_leadership(key, Some(l)).await;
        if l.ready {
            let lagging = part.out_of_sync();
            for target in 0..self.count {
                let (term, lagging) = (l.term, lagging.clone());
                self.run_on(target, move |s| async move {
                    s.note_out_of_sync(key, term, lagging)
                })
                .await;
            }
            let notice = LeaderNotice {
                topic: key.0,
                partition: key.1,
                leader: self.config.node_id as u64,
                term: l.term,
                out_of_sync: lagging,
            };
            self.run_on(
                0,
                move |s| async move { s.outbox.borrow_mut().push(notice) },
            )
            .await;
            self.drive_reassignment(key);
        }
        if !offsets || isr_only {
            return;
        }
        let partitions = self
            .metadata()
            .topic_by_id(&key.0)
            .map_or(0, |t| t.partitions);
        if l.ready {
            self.groups.take_over(part).await;
        } else {
            self.groups.give_up(part.index, partitions);
        }
    }

    /// Opens one partition's log, or marks it offline (out of descriptors or memory, a
    /// damaged directory): the others keep serving and the next metadata change retries it.
    async fn open_partition(self: &Rc<Self>, t: &Topic, p: i32) -> Option<Rc<Partition>> {
        let dir = partition_dir(&self.config.data_dir, &t.name, p);
        let config = self.config.log_config(&t.configs);
        let rules = self.config.record_rules(&t.configs);
        let spec = ReplicaSpec {
            node: self.config.node_id as u64,
            // The preferred leader first: the group's leadership balancing moves back to it.
            // A replica being added is not among them, so it never forms a group of its own.
            voters: t.settled_replicas(p).iter().map(|&n| n as u64).collect(),
            election_min: sluice_raft::ELECTION_TIMEOUT_MIN,
            replica_lag: self.config.replica_lag(),
            transport: self.raft_peers.transport(group_id(&t.id, p)),
            ticker: self.ticker.clone(),
            replayed: None,
        };
        match Partition::open(&dir, t.name.clone(), p, config, rules, spec).await {
            Ok(part) => {
                part.set_preferred_leader(preferred_leader(t, p));
                let key = (t.id, p);
                let weak = Rc::downgrade(self);
                let offsets = t.name == crate::groups::OFFSETS_TOPIC;
                let weak_part = Rc::downgrade(&part);
                part.on_leadership_change(Box::new(move |l| {
                    if let (Some(s), Some(part)) = (weak.upgrade(), weak_part.upgrade()) {
                        glommio::spawn_local(async move {
                            s.leadership_changed(key, &part, l, offsets).await;
                        })
                        .detach();
                    }
                }));
                self.leadership_changed(key, &part, part.leadership(), offsets)
                    .await;
                Some(part)
            }
            Err(e) => {
                if !self.is_offline(&t.id, p) {
                    tracing::error!(topic = %t.name, partition = p, error = %e,
                        "cannot open partition; it is offline until it can be opened");
                    self.announce_offline((t.id, p), true).await;
                }
                None
            }
        }
    }

    /// Flushes and closes every partition (graceful shutdown).
    pub async fn close_partitions(&self) {
        let parts: Vec<_> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        // Overlapped like opens, so stopping thousands of partitions takes seconds, not minutes.
        overlapped(parts, |p| async move {
            p.snapshot_at_close().await;
            if let Ok(p) = Rc::try_unwrap(p) {
                if let Err(e) = p.close().await {
                    warn!(error = %e, "closing a partition log failed");
                }
            }
        })
        .await;
        let controller = self.controller.borrow_mut().take();
        if let Some(c) = controller {
            c.close().await;
        }
    }
}

/// The replica a partition's leadership balancing moves back to: its first, unless it is
/// being moved (then none, until the move ends: the leader may be on its way out).
fn preferred_leader(t: &Topic, p: i32) -> Option<u64> {
    if t.reassignments.contains_key(&p) {
        return None;
    }
    t.replicas(p).first().map(|&n| n as u64)
}

/// Runs `f` on every item as tasks of this shard, at most `PARTITION_OPEN_CONCURRENCY` at a
/// time, and returns their results in order.
async fn overlapped<I, R, F, Fut>(items: I, f: F) -> Vec<R>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future<Output = R> + 'static,
    R: 'static,
{
    let slots = Rc::new(Semaphore::new(PARTITION_OPEN_CONCURRENCY as u64));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let (slots, work) = (slots.clone(), f(item));
            glommio::spawn_local(async move {
                let _slot = slots.acquire_permit(1).await;
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Routes an RPC message that arrived on shard 0 to the shard owning its group.
struct ShardRouter(std::rc::Weak<Shard>);

impl sluice_raft::rpc::Router for ShardRouter {
    async fn route(
        &self,
        group: u64,
        request: sluice_raft::RaftRequest,
    ) -> sluice_raft::RaftResponse {
        let Some(s) = self.0.upgrade() else {
            return sluice_raft::RaftResponse::Failed("broker is stopping".into());
        };
        // Controller traffic is served on shard 0, where the RPC server runs.
        if group == CONTROLLER_GROUP {
            let Some(c) = s.controller() else {
                return sluice_raft::RaftResponse::Failed("the controller is not open yet".into());
            };
            return match request {
                sluice_raft::RaftRequest::Broker(bytes) => c.serve(&s, &bytes).await,
                other => c.serve_raft(other).await,
            };
        }
        let Some((topic_id, partition)) = s.group_ids.borrow().get(&group).copied() else {
            return sluice_raft::RaftResponse::Failed(format!("no group {group} here"));
        };
        let routed = s
            .with_partition(topic_id, partition, move |p| async move {
                p.serve_raft(request).await
            })
            .await;
        routed.unwrap_or_else(|e| {
            sluice_raft::RaftResponse::Failed(format!("group {group} not open here: {e:?}"))
        })
    }
}

impl Shard {
    /// Listens for peer brokers' Raft messages on `addr` (shard 0) and routes each to the
    /// shard owning its group. Returns the bound address.
    pub fn start_rpc(
        self: &Rc<Self>,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<std::net::SocketAddr> {
        let router = Rc::new(ShardRouter(Rc::downgrade(self)));
        let server = sluice_raft::rpc::Server::bind(addr, self.config.node_id as u64, router)?;
        let bound = server.local_addr();
        *self.rpc_server.borrow_mut() = Some(server);
        Ok(bound)
    }
}

impl Shard {
    /// Applies `retention.ms` / `retention.bytes` to this shard's partitions every
    /// `log.retention.check.interval.ms`, on a low-share task queue so it never competes
    /// with produce and fetch.
    pub fn start_retention(self: &Rc<Self>) {
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::Static(50),
            glommio::Latency::NotImportant,
            "retention",
        );
        let s = self.clone();
        let every =
            std::time::Duration::from_millis(s.config.log_retention_check_interval_ms.max(1));
        let spawned = glommio::spawn_local_into(
            async move {
                while !s.shutting_down.get() {
                    glommio::timer::sleep(every).await;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    for p in s.local_partitions() {
                        match p.apply_retention(now).await {
                            Ok(0) => {}
                            Ok(n) => {
                                info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments")
                            }
                            Err(e) => {
                                warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                            }
                        }
                        glommio::yield_if_needed().await;
                    }
                }
            },
            tq,
        );
        match spawned {
            Ok(t) => {
                t.detach();
            }
            Err(e) => warn!(error = %e, "cannot start the retention task"),
        }
    }
}

impl Shard {
    pub fn group_limits(&self) -> crate::groups::Limits {
        crate::groups::Limits {
            initial_rebalance_delay: std::time::Duration::from_millis(
                self.config.group_initial_rebalance_delay_ms,
            ),
            group_max_size: self.config.group_max_size,
        }
    }

    /// Runs `f` on the shard coordinating `group`, with that group's `__consumer_offsets`
    /// partition.
    pub async fn with_group<R, F, Fut>(
        self: &Rc<Self>,
        group: &str,
        f: F,
    ) -> Result<R, ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>, Rc<Partition>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let image = self.metadata();
        let t = image
            .topic(crate::groups::OFFSETS_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let partition = crate::groups::partition_for(group, t.partitions);
        let id = t.id;
        let owner = self.owner_of(&id, partition);
        self.run_on(owner, move |s| async move {
            // The coordinator is the partition's leader, once it has loaded the groups.
            match s.local_partition(&id, partition) {
                Some(p) => {
                    s.groups.serves(partition)?;
                    p.check_leader()
                        .map_err(|_| ResponseError::NotCoordinator)?;
                    Ok(f(s.clone(), p).await)
                }
                None => Err(ResponseError::NotCoordinator),
            }
        })
        .await
    }

    /// Session timeouts, due rebalances and offset expiry, every `SWEEP_INTERVAL`.
    pub fn start_group_sweeper(self: &Rc<Self>) {
        let s = self.clone();
        glommio::spawn_local(async move {
            let retention = std::time::Duration::from_secs(
                s.config.offsets_retention_minutes.saturating_mul(60),
            );
            while !s.shutting_down.get() {
                glommio::timer::sleep(crate::groups::SWEEP_INTERVAL).await;
                let expired = s.groups.sweep(&s.group_limits(), retention);
                for (group, keys) in expired {
                    let records: Vec<_> = keys.into_iter().map(|(t, p)| (t, p, None)).collect();
                    let batch = crate::groups::offset_records(&group, &records);
                    let r = s
                        .with_group(&group.clone(), move |_, p| async move {
                            p.produce_own(batch, Durability::Quorum).await
                        })
                        .await;
                    if !matches!(r, Ok(Ok(_))) {
                        warn!(%group, "could not write expired-offset tombstones");
                    }
                }
            }
        })
        .detach();
    }
}
