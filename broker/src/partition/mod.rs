//! One partition replica on its owner shard: the storage log, the Raft group that
//! replicates it, and what Kafka layers on them — leadership checks, the high watermark
//! (what Raft has applied), idempotent-producer state and wake-ups for parked fetches.

mod producers;
mod rules;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;
use sluice_protocol::kafka_protocol::records::{Record, RecordBatchDecoder};
use sluice_protocol::ResponseError;
use sluice_raft::{
    advance_log_start, group_config, AppliedBatch, ApplyObserver, Group, Leadership, LogStore,
    Network, PartitionRaftNode, PrefixPoint, ProposeError, StateMachine, Ticker, Transport,
};
use sluice_storage::{
    BatchHeader, CompactionOptions, CompactionStats, Decompress, LogConfig, Offset, PartitionLog,
    StorageError,
};
use tracing::{info, warn};

use self::producers::{Applied, ProposedBatch};
pub use self::rules::RecordRules;
use self::rules::{check_records, split_batches, with_log_append_time};

/// Largest read while rebuilding producer state at open.
const REBUILD_CHUNK_BYTES: usize = 8 << 20;
/// How long opening a partition whose only voter is this broker waits for it to lead, so a
/// one-node broker serves its partitions as soon as it says it is ready.
const SOLE_VOTER_ELECTION_WAIT: Duration = Duration::from_secs(10);
/// How often a retry waiting for its in-flight original checks whether the term ended.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(50);

/// What a produce of one partition's records came to.
#[derive(Clone, Copy, Debug)]
pub struct ProduceOutcome {
    /// Offset of the first record (for a duplicate, where it was first stored).
    pub base_offset: Offset,
    /// The broker's timestamp with LogAppendTime; -1 otherwise (Kafka's wire value).
    pub log_append_time_ms: i64,
    pub log_start: Offset,
    /// Bytes and records appended by this produce (duplicates are not appended again).
    pub appended_bytes: u64,
    pub appended_records: u64,
}

/// Why a produce of one partition failed: the code, and for record-level validation the
/// offending records (index in the batch, reason) and a summary, as Kafka reports them.
#[derive(Debug)]
pub struct Refusal {
    pub error: ResponseError,
    pub record_errors: Vec<(i32, String)>,
    pub message: Option<String>,
    /// The log start, which Kafka reports with record-level errors.
    pub log_start: Option<Offset>,
}

impl From<ResponseError> for Refusal {
    fn from(error: ResponseError) -> Self {
        Refusal {
            error,
            record_errors: Vec::new(),
            message: None,
            log_start: None,
        }
    }
}

/// A partition's offsets as readers see them.
#[derive(Clone, Copy, Debug)]
pub struct Watermarks {
    pub log_start: Offset,
    pub high_watermark: Offset,
}

/// How durable a produce must be before it is answered: Kafka's `acks`, translated once in
/// the produce handler. On one node "quorum" is the local fdatasync; with replication it
/// becomes the Raft commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// acks=0: no answer is sent; durability follows in the background.
    None,
    /// acks=1: answered once the leader appended.
    Leader,
    /// acks=all (-1): answered once a quorum has it durably.
    Quorum,
}

impl Durability {
    /// Kafka's `acks`; anything else is INVALID_REQUIRED_ACKS.
    pub fn from_acks(acks: i16) -> Option<Self> {
        match acks {
            0 => Some(Durability::None),
            1 => Some(Durability::Leader),
            -1 => Some(Durability::Quorum),
            _ => None,
        }
    }
}

/// `Proposals::term` of an overlay that holds nothing valid: the next append starts afresh.
/// Raft leaders' terms start at 1.
const NO_TERM: u64 = 0;

/// What a leader has proposed in its current term and not yet seen applied.
struct Proposals {
    term: u64,
    /// The offset the next proposed batch gets: the log assigns dense offsets in Raft order,
    /// and only this leader appends in its term.
    next_offset: u64,
    /// Idempotent batches among them, for sequence checks of later ones.
    batches: VecDeque<ProposedBatch>,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Only `Partition` touches the log, and writes to it go through Raft.
    log: Rc<PartitionLog>,
    group: Rc<Group>,
    raft: PartitionRaftNode,
    /// What Raft has applied: offsets below it are committed (the high watermark).
    hw: Rc<Cell<Offset>>,
    prefix: PrefixPoint,
    applied: Rc<Applied>,
    proposals: RefCell<Proposals>,
    /// Serializes sequence checks with proposals so pipelined idempotent batches can't race.
    append_lock: Semaphore,
    rules: Cell<RecordRules>,
    /// Set at scrape time; resolved once here so a scrape does no registry lookups.
    gauges: crate::telemetry::PartitionGauges,
}

/// Where and how a partition replica runs.
pub struct ReplicaSpec<T: Transport> {
    /// This broker's node id, its Raft id in every group.
    pub node: u64,
    /// The voters when the group is created (this broker alone for a one-node cluster). A
    /// replica not among them waits to be added by the leader.
    pub voters: Vec<u64>,
    pub election_min: Duration,
    /// `replica.lag.time.max.ms`, for the ISR the leader reports.
    pub replica_lag: Duration,
    pub transport: T,
    pub ticker: Rc<Ticker>,
    /// State the embedder rebuilds from the whole log on every open (the controller's
    /// metadata image): it sees every applied batch, the group saves its commit point, and
    /// no applied position is recorded, so a restart applies everything committed again
    /// before any quorum answers.
    pub replayed: Option<Rc<dyn ApplyObserver>>,
}

/// The producer state and an embedder's replayed state, fed the same batches.
struct BothObservers(Rc<Applied>, Rc<dyn ApplyObserver>);

impl ApplyObserver for BothObservers {
    fn applied(&self, batch: &[u8], base_offset: u64) {
        self.0.applied(batch, base_offset);
        self.1.applied(batch, base_offset);
    }

    fn reset(&self, next_offset: u64) {
        self.0.reset(next_offset);
        self.1.reset(next_offset);
    }
}

/// One record of the broker's own: key and value, either may be absent.
pub type OwnRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The broker's own records as one uncompressed RecordBatch v2, for `produce_own`: group
/// state, offsets, the controller's changes.
pub fn own_batch(items: Vec<OwnRecord>) -> Bytes {
    use sluice_protocol::kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records: Vec<Record> = items
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant keeps every record in one batch.
            sequence: i as i32 - 1,
            timestamp: ts,
            key: k.map(Bytes::from),
            value: v.map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("records of the broker's own encode");
    buf.freeze()
}

fn storage_error_code(e: &StorageError) -> ResponseError {
    use sluice_storage::BatchError;
    match e {
        StorageError::InvalidBatch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        StorageError::InvalidBatch(BatchError::BadCrc { .. }) => ResponseError::CorruptMessage,
        StorageError::InvalidBatch(BatchError::BadMagic(_)) => {
            ResponseError::UnsupportedForMessageFormat
        }
        StorageError::InvalidBatch(_) => ResponseError::CorruptMessage,
        StorageError::OffsetOutOfRange(..) => ResponseError::OffsetOutOfRange,
        _ => ResponseError::KafkaStorageError,
    }
}

fn propose_error(topic: &str, index: i32, e: ProposeError) -> Refusal {
    match e {
        ProposeError::NotLeader(_) => ResponseError::NotLeaderOrFollower.into(),
        ProposeError::Stopped(reason) => {
            warn!(%topic, partition = index, %reason, "write refused: Raft group stopped");
            ResponseError::NotLeaderOrFollower.into()
        }
    }
}

impl Partition {
    pub async fn open<T: Transport>(
        dir: &std::path::Path,
        topic: String,
        index: i32,
        config: LogConfig,
        rules: RecordRules,
        spec: ReplicaSpec<T>,
    ) -> Result<Rc<Self>, StorageError> {
        let io = |e: std::io::Error| StorageError::Io {
            what: "open the Raft state",
            path: dir.to_path_buf(),
            source: e,
        };
        // The shard syncs the file system once for every partition it opens, before serving.
        let log = Rc::new(PartitionLog::open_unsynced(dir, config).await?);
        let mut store = LogStore::open(dir, log.clone()).await.map_err(io)?;
        let mut sm = StateMachine::open(dir, log.clone()).await.map_err(io)?;
        if spec.replayed.is_some() {
            store = store.with_saved_committed();
            sm = sm.with_checkpoint_bytes(u64::MAX);
        }
        let hw = sm.high_watermark();
        let prefix = sm.prefix_point();
        let applied = Applied::rebuild(
            topic.clone(),
            index,
            log.clone(),
            hw.get(),
            REBUILD_CHUNK_BYTES,
        )
        .await?;
        let observer: Rc<dyn ApplyObserver> = match spec.replayed {
            Some(r) => Rc::new(BothObservers(applied.clone(), r)),
            None => applied.clone(),
        };
        let sm = sm.with_observer(observer);
        let raft_config =
            group_config(spec.election_min).map_err(|e| io(std::io::Error::other(e)))?;
        let raft = PartitionRaftNode::new(
            spec.node,
            Arc::new(raft_config),
            Network::new(spec.transport),
            store,
            sm,
        )
        .await
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        // A replica outside the voters (a broker joining the controller group as a learner)
        // takes the membership from the leader's log instead.
        if fresh && spec.voters.contains(&spec.node) {
            let voters: std::collections::BTreeSet<u64> = spec.voters.iter().copied().collect();
            if let Err(e) = raft.initialize(voters).await {
                // Another voter may have initialized the group first; it is formed either way.
                tracing::debug!(%topic, partition = index, error = %e, "group already initialized");
            }
        }
        let group = Group::new(raft.clone(), spec.election_min);
        group.set_preferred_leader(spec.voters.first().copied());
        group.set_replica_lag(spec.replica_lag);
        spec.ticker.register(&group);
        group.elect_if_alone().await;
        if fresh && spec.voters.len() > 1 && spec.voters.first() == Some(&spec.node) {
            // A new group's preferred replica stands at once, so it leads from the start
            // (as Kafka elects the preferred replica at creation) instead of whichever
            // replica's election timeout ends first, with a handover ten timeouts later.
            group.elect_now().await;
        }
        if spec.voters == [spec.node] && !group.wait_ready(SOLE_VOTER_ELECTION_WAIT).await {
            warn!(%topic, partition = index, "sole replica did not become leader in time");
        }
        let gauges = crate::telemetry::PartitionGauges::new(&topic, index);
        Ok(Rc::new(Partition {
            topic,
            index,
            log,
            group,
            raft,
            hw,
            prefix,
            applied,
            proposals: RefCell::new(Proposals {
                term: 0,
                next_offset: 0,
                batches: VecDeque::new(),
            }),
            append_lock: Semaphore::new(1),
            rules: Cell::new(rules),
            gauges,
        }))
    }

    /// The group's leadership as this replica sees it.
    pub fn leadership(&self) -> Leadership {
        self.group.leadership()
    }

    /// Answers a Raft message from a peer replica of this partition.
    pub async fn serve_raft(&self, request: sluice_raft::RaftRequest) -> sluice_raft::RaftResponse {
        self.group.serve(request).await
    }

    /// As leader: the voters out of the ISR (not caught up within `replica.lag.time.max.ms`).
    pub fn out_of_sync(&self) -> Vec<u64> {
        self.group.out_of_sync()
    }

    /// The group's voters, as this replica knows its membership.
    pub fn voters(&self) -> Vec<u64> {
        self.group.voters()
    }

    /// As leader: adds `node` to the group as a learner (a broker joining the cluster).
    pub async fn add_learner(&self, node: u64) -> Result<(), ResponseError> {
        self.check_leader()?;
        self.group.add_learner(node).await.map_err(|e| {
            warn!(topic = %self.topic, partition = self.index, error = %e, "adding a learner failed");
            ResponseError::NotLeaderOrFollower
        })
    }

    /// As leader: removes learner `node` from the group (a decommissioned broker).
    pub async fn remove_learner(&self, node: u64) -> Result<bool, ProposeError> {
        self.group.remove_learner(node).await
    }

    /// As leader: hands leadership to replica `to` and waits, at most `timeout`, until this
    /// replica sees it lead (ElectLeaders).
    pub async fn transfer_leadership(
        &self,
        to: u64,
        timeout: Duration,
    ) -> Result<(), sluice_raft::TransferError> {
        let r = self.group.transfer_leadership(to, timeout).await;
        match &r {
            Ok(()) => {
                info!(topic = %self.topic, partition = self.index, to, "leadership handed over")
            }
            Err(e) => {
                info!(topic = %self.topic, partition = self.index, to, error = %e, "leadership not handed over")
            }
        }
        r
    }

    /// As leader: one step of moving the group's voters to `target` (a reassignment).
    pub async fn move_voters(
        &self,
        target: &[u64],
        catch_up: Duration,
    ) -> Result<sluice_raft::MoveStep, ProposeError> {
        self.group.move_voters(target, catch_up).await
    }

    /// Sets the replica leadership balancing moves back to (`None`: none, while it moves).
    pub fn set_preferred_leader(&self, node: Option<u64>) {
        self.group.set_preferred_leader(node);
    }

    /// Waits (at most `timeout`) until what this replica knows committed is applied.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        self.group.wait_caught_up(timeout).await
    }

    /// Calls `f` each time this replica's view of the leadership changes.
    pub fn on_leadership_change(&self, f: Box<dyn Fn(Leadership)>) {
        self.group.on_leadership_change(f);
    }

    /// At clean shutdown: a producer-state snapshot, so the next open replays (almost)
    /// nothing.
    pub async fn snapshot_at_close(&self) {
        self.applied.snapshot_at_close().await;
    }

    pub fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    pub fn gauges(&self) -> &crate::telemetry::PartitionGauges {
        &self.gauges
    }

    /// The next offset the log assigns (committed or not).
    pub fn log_end(&self) -> Offset {
        self.log.end().next_offset
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// Bytes of the partition's log on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// `check_leader`, then the client's idea of the leader epoch (-1: none) against the
    /// current one (the Raft term), as Kafka fences: a newer epoch than this leader knows is
    /// UNKNOWN_LEADER_EPOCH, an older one FENCED_LEADER_EPOCH. Returns the current epoch.
    pub fn check_epoch(&self, client_epoch: i32) -> Result<i32, ResponseError> {
        let epoch = self.check_leader()?.term.min(i32::MAX as u64) as i32;
        match client_epoch {
            e if e < 0 => Ok(epoch),
            e if e > epoch => Err(ResponseError::UnknownLeaderEpoch),
            e if e < epoch => Err(ResponseError::FencedLeaderEpoch),
            _ => Ok(epoch),
        }
    }

    /// Kafka's answer for a request only the leader serves, if this replica is not a leader
    /// ready for it (clients refresh metadata and retry).
    pub fn check_leader(&self) -> Result<Leadership, ResponseError> {
        let l = self.group.leadership();
        if l.ready {
            Ok(l)
        } else {
            Err(ResponseError::NotLeaderOrFollower)
        }
    }

    /// OffsetForLeaderEpoch on the leader: the largest epoch at most `epoch` in the log and
    /// where it ended (for the current epoch, the high watermark).
    pub async fn epoch_end(&self, epoch: i32) -> Result<Option<(i32, Offset)>, ResponseError> {
        let current = self.check_leader()?.term;
        let Ok(epoch) = u64::try_from(epoch) else {
            return Ok(None);
        };
        if epoch > current {
            return Ok(None);
        }
        if epoch == current {
            return Ok(Some((epoch as i32, self.hw.get())));
        }
        match self.log.epoch_end(sluice_storage::Term(epoch)).await {
            Ok(found) => Ok(found.map(|(t, o)| (t.0 as i32, o.min(self.hw.get())))),
            Err(e) => Err(storage_error_code(&e)),
        }
    }

    /// Moves the log start to `offset` (never past the high watermark) through Raft, so a
    /// replica behind it catches up from a snapshot; returns the new start.
    async fn cut_prefix(&self, offset: Offset) -> Result<Offset, StorageError> {
        let start = advance_log_start(&self.raft, &self.log, &self.prefix, offset, self.hw.get())
            .await
            .map_err(|e| StorageError::Io {
                what: "cut the log prefix",
                path: self.log.dir().to_path_buf(),
                source: e,
            })?;
        Ok(start.offset)
    }

    /// DeleteRecords: moves the log start to `before` (at most the high watermark) and
    /// returns the new low watermark.
    pub async fn delete_records(&self, before: Offset) -> Result<Offset, ResponseError> {
        self.check_leader()?;
        self.cut_prefix(before).await.map_err(|e| {
            warn!(topic = %self.topic, partition = self.index, error = %e, "delete records failed");
            ResponseError::KafkaStorageError
        })
    }

    /// `retention.ms` / `retention.bytes`: drops whole old segments on the leader, through
    /// Raft; returns how many.
    pub async fn apply_retention(&self, now_ms: u64) -> Result<usize, StorageError> {
        if !self.group.leadership().ready {
            return Ok(0);
        }
        let Some(target) = self.log.retention_target(now_ms) else {
            return Ok(0);
        };
        let before = self.log.segment_count();
        self.cut_prefix(target.offset).await?;
        Ok(before.saturating_sub(self.log.segment_count()))
    }

    /// Share of the sealed log not yet compacted (`min.cleanable.dirty.ratio` is against it).
    pub fn dirty_ratio(&self) -> f64 {
        self.log.dirty_ratio()
    }

    /// Key-based compaction of the sealed segments.
    pub async fn compact(
        &self,
        opts: &CompactionOptions,
        decompress: Decompress<'_>,
    ) -> Result<CompactionStats, StorageError> {
        self.log.compact(opts, decompress).await
    }

    /// Stops the Raft group and closes the log (graceful shutdown; snapshot first).
    pub async fn close(self) -> Result<(), StorageError> {
        if let Err(e) = self.raft.shutdown().await {
            warn!(topic = %self.topic, partition = self.index, error = %e, "Raft group did not stop cleanly");
        }
        let Partition {
            log, group, raft, ..
        } = self;
        drop((group, raft));
        match Rc::try_unwrap(log) {
            Ok(log) => log.close().await,
            // A task of the stopped group still holds it: flushing is what durability needs.
            Err(log) => log.flush().await.map(|_| ()),
        }
    }

    pub fn set_config(&self, config: LogConfig, rules: RecordRules) {
        self.log.set_config(config);
        self.rules.set(rules);
    }

    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            log_start: self.log.start().offset,
            high_watermark: self.hw.get(),
        }
    }

    /// The largest batch max-timestamp and that batch's last offset, if any batch has one.
    pub fn max_timestamp(&self) -> Option<(i64, Offset)> {
        let (ts, offset) = self.applied.max_timestamp();
        u64::try_from(offset).ok().map(|o| (ts, Offset(o)))
    }

    /// Appends every batch in `records` through Raft, as leader. With `Durability::Quorum`
    /// returns once they are committed; otherwise once they are proposed.
    /// With `Durability::Quorum`, REQUEST_TIMED_OUT if the batches are not committed within
    /// `timeout` (the request's `timeout_ms`, as Kafka bounds acks=all; a leader cut off from
    /// its quorum then answers instead of holding the request).
    pub async fn produce(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<ProduceOutcome, Refusal> {
        self.append_batches(records, durability, now_ms, true, Some(timeout))
            .await
    }

    /// Appends the broker's own records (group state, offsets), which the record-level
    /// rules meant for clients' data need not check.
    pub async fn produce_own(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
    ) -> Result<ProduceOutcome, ResponseError> {
        self.append_batches(records, durability, 0, false, None)
            .await
            .map_err(|r| r.error)
    }

    async fn append_batches(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
        now_ms: i64,
        check: bool,
        timeout: Option<Duration>,
    ) -> Result<ProduceOutcome, Refusal> {
        let batches = split_batches(&records)?;
        let permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| ResponseError::KafkaStorageError)?;
        let leadership = self.check_leader()?;
        // openraft refuses a leader's writes once no quorum has answered it for a lease;
        // refusing here first keeps the overlay to what Raft takes (a refused batch among
        // accepted ones would shift their offsets).
        if !self.group.lease_valid() {
            return Err(ResponseError::NotLeaderOrFollower.into());
        }
        let rules = self.rules.get();
        let log_append_time = rules.log_append_time;
        let mut first_base = None;
        // The commit (in `commits`) of the request's first batch, when it was proposed now:
        // the offsets the log gave it are the answer, not the prediction.
        let mut first_commit = None;
        let (mut appended_bytes, mut appended_records) = (0, 0);
        let mut commits = Vec::new();
        // Retries of batches this leader proposed and has not seen applied yet.
        let mut in_flight_dups = Vec::new();
        for b in batches {
            let h = sluice_storage::parse_header(b).map_err(|_| ResponseError::CorruptMessage)?;
            // Kafka reports the log start with record and sequence errors (not with a
            // malformed batch).
            let with_start = |mut r: Refusal| {
                r.log_start = Some(self.log.start().offset);
                r
            };
            if check {
                check_records(b, &h, &rules, now_ms).map_err(with_start)?;
            }
            let base = {
                let mut p = self.proposals.borrow_mut();
                if p.term != leadership.term {
                    // A new term: everything before it is applied (the leader is ready), and
                    // nothing of this term is proposed yet.
                    *p = Proposals {
                        term: leadership.term,
                        next_offset: self.hw.get().0,
                        batches: VecDeque::new(),
                    };
                }
                let applied = self.applied.noted_next();
                while p.batches.front().is_some_and(|b| b.base() < applied) {
                    p.batches.pop_front();
                }
                if let Some(dup) = self
                    .applied
                    .check_sequence(&h, p.batches.iter())
                    .map_err(|e| with_start(e.into()))?
                {
                    if dup >= applied {
                        in_flight_dups.push((dup, h));
                    }
                    first_base.get_or_insert(dup);
                    continue;
                }
                p.next_offset
            };
            sluice_storage::validate_batch(b, self.log.config().max_batch_bytes)
                .map_err(|e| storage_error_code(&StorageError::InvalidBatch(e)))?;
            let mut stored = if log_append_time {
                with_log_append_time(b, now_ms)
            } else {
                b.to_vec()
            };
            // The base offset the log will give it (not covered by the CRC): what applying
            // reads back, and what the leader answers before the commit with acks=1.
            stored[..8].copy_from_slice(&(base as i64).to_be_bytes());
            let respond = durability == Durability::Quorum;
            let proposed = self
                .group
                .propose(leadership.term, Bytes::from(stored), respond)
                .await
                .map_err(|e| propose_error(&self.topic, self.index, e))?;
            if let Some(c) = proposed {
                if first_base.is_none() {
                    first_commit = Some(commits.len());
                }
                commits.push((base, c));
            }
            {
                let mut p = self.proposals.borrow_mut();
                p.next_offset = base + h.offset_count();
                p.batches.extend(ProposedBatch::of(&h, base));
            }
            first_base.get_or_insert(base);
            appended_bytes += b.len() as u64;
            appended_records += h.records_count.max(0) as u64;
        }
        drop(permit);
        let first_base = first_base.expect("split_batches yields at least one batch");
        let committed = self.await_commits(
            first_base,
            first_commit,
            commits,
            in_flight_dups,
            durability,
            leadership.term,
        );
        let first_base = match timeout {
            None => committed.await?,
            Some(t) => {
                futures_lite::future::or(committed, async {
                    glommio::timer::sleep(t).await;
                    Err(ResponseError::RequestTimedOut.into())
                })
                .await?
            }
        };
        Ok(ProduceOutcome {
            base_offset: Offset(first_base),
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start: self.log.start().offset,
            appended_bytes,
            appended_records,
        })
    }

    /// Waits for this produce's commits and for the originals of its retried batches;
    /// returns the offset to answer for the first batch.
    async fn await_commits(
        &self,
        mut first_base: u64,
        first_commit: Option<usize>,
        commits: Vec<(
            u64,
            impl std::future::Future<Output = Result<AppliedBatch, ProposeError>>,
        )>,
        in_flight_dups: Vec<(u64, BatchHeader)>,
        durability: Durability,
        term: u64,
    ) -> Result<u64, Refusal> {
        for (i, (predicted, c)) in commits.into_iter().enumerate() {
            let stored = c.await.map_err(|e| {
                // A proposal refused in its own term leaves the overlay predicting
                // offsets and answering retries for a batch that is not in the log:
                // drop it, so retries are proposed again and offsets come from the
                // high watermark.
                self.proposals.borrow_mut().term = NO_TERM;
                propose_error(&self.topic, self.index, e)
            })?;
            if stored.base_offset != predicted {
                warn!(topic = %self.topic, partition = self.index, predicted,
                    stored = stored.base_offset, "a batch was stored at another offset than predicted");
            }
            if first_commit == Some(i) {
                first_base = stored.base_offset;
            }
        }
        if durability == Durability::Quorum {
            // A retry of a batch still in flight is answered once that batch is committed,
            // as a new one would be: answering at once acknowledged batches the next leader
            // never had.
            for (dup, h) in in_flight_dups {
                self.wait_committed(dup, &h, term).await?;
            }
        }
        Ok(first_base)
    }

    /// Waits until the batch `h` of this leader's `term`, proposed at `offset`, is applied,
    /// and checks it is there: NOT_LEADER_OR_FOLLOWER if the term ended first or the batch
    /// applied at `offset` is another (the client retries with the next leader).
    async fn wait_committed(&self, offset: u64, h: &BatchHeader, term: u64) -> Result<(), Refusal> {
        loop {
            if self.hw.get().0 > offset {
                return match self.applied.check_sequence(h, std::iter::empty()) {
                    Ok(Some(at)) if at == offset => Ok(()),
                    _ => Err(ResponseError::NotLeaderOrFollower.into()),
                };
            }
            let l = self.group.leadership();
            // The term ended, or a proposal of it was refused and the overlay that named
            // this batch in flight was dropped: the client retries.
            if l.term != term || l.leader.is_none() || self.proposals.borrow().term != term {
                return Err(ResponseError::NotLeaderOrFollower.into());
            }
            if let Some(rx) = self.applied.wait_past(Offset(offset), self.hw.get()) {
                // A term can end without anything applied: look again now and then.
                futures_lite::future::or(
                    async {
                        let _ = rx.recv_async().await;
                    },
                    glommio::timer::sleep(IN_FLIGHT_RECHECK),
                )
                .await;
            }
        }
    }

    /// Resolves when the high watermark passes `offset` or the receiver is dropped.
    pub fn wait_for_data(&self, offset: Offset) -> Option<flume::Receiver<()>> {
        self.applied.wait_past(offset, self.hw.get())
    }

    /// Kafka's fetch read: the log from the batch holding `offset` up to the high watermark,
    /// cut at `max_bytes` even inside a batch, as Kafka sends a slice of its log file
    /// (clients drop a partial last batch and fetch it again). With `min_one` the limit
    /// grows to the first batch's size (KIP-74: the first partition with data in a
    /// response, so a consumer always progresses).
    pub async fn fetch(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<(Vec<Bytes>, Watermarks), ResponseError> {
        let (mut batches, w) = self.read_whole(offset, max_bytes).await?;
        let Some(first) = batches.first() else {
            return Ok((batches, w));
        };
        let first_len = first.len();
        let limit = if min_one {
            max_bytes.max(first_len)
        } else {
            max_bytes
        };
        let mut total = 0;
        let mut keep = 0;
        for b in batches.iter_mut() {
            if total >= limit {
                break;
            }
            if total + b.len() > limit {
                *b = b.slice(..limit - total);
            }
            total += b.len();
            keep += 1;
        }
        batches.truncate(keep);
        // A first batch cut short is dropped, not sent: Kafka sends a partial batch only
        // after whole ones.
        if batches.len() == 1 && batches[0].len() < first_len {
            batches.clear();
            return Ok((batches, w));
        }
        // Every batch is whole and there is room: the next one did not fit, and Kafka fills
        // the room with its start.
        if total < limit {
            let last = batches.last().expect("the first batch is kept");
            let h =
                sluice_storage::parse_header(last).map_err(|_| ResponseError::CorruptMessage)?;
            let next = Offset(h.base_offset as u64 + h.offset_count());
            if next < w.high_watermark {
                let (more, _) = self.read_whole(next, 1).await?;
                if let Some(b) = more.first() {
                    batches.push(b.slice(..(limit - total).min(b.len())));
                }
            }
        }
        Ok((batches, w))
    }

    /// Whole batches from `offset` below the high watermark: up to `max_bytes`, but at
    /// least one.
    async fn read_whole(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, Watermarks), ResponseError> {
        let w = self.watermarks();
        if offset < w.log_start || offset > w.high_watermark.max(self.log.end().next_offset) {
            return Err(ResponseError::OffsetOutOfRange);
        }
        if offset >= w.high_watermark {
            return Ok((Vec::new(), w));
        }
        let batches = self
            .log
            .read(offset, max_bytes, w.high_watermark)
            .await
            .map_err(|e| storage_error_code(&e))?;
        Ok((batches, w))
    }

    /// Every record of the whole batches from `from` (at least one batch, about `max_bytes`)
    /// below the high watermark, decoded, and the offset after them. For replaying internal
    /// topics; an undecodable batch is logged and skipped.
    pub async fn read_records(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<(Vec<Record>, Offset), ResponseError> {
        let (batches, _) = self.read_whole(from, max_bytes).await?;
        let mut next = from;
        let mut records = Vec::new();
        for b in batches {
            let h = sluice_storage::parse_header(&b).map_err(|_| ResponseError::CorruptMessage)?;
            next = next.max(Offset(h.base_offset as u64 + h.offset_count()));
            let mut buf = b.clone();
            match RecordBatchDecoder::decode(&mut buf) {
                Ok(set) => records.extend(set.records),
                Err(_) => {
                    warn!(topic = %self.topic, partition = self.index, offset = h.base_offset,
                    "undecodable batch skipped")
                }
            }
        }
        Ok((records, next))
    }
}

impl Partition {
    /// First record (offset, timestamp) with timestamp >= `ts` below the high watermark.
    /// Storage finds the batch; its records are decoded (decompressed if needed) to find
    /// the record, as Kafka answers by record, not by batch.
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<(Offset, i64)>, ResponseError> {
        let hw = self.hw.get().0;
        let Some(start) = self
            .log
            .offset_for_timestamp(ts)
            .await
            .map_err(|e| storage_error_code(&e))?
        else {
            return Ok(None);
        };
        let mut from = start;
        while from.0 < hw {
            let batches = self
                .log
                .read(from, 1, Offset(hw))
                .await
                .map_err(|e| storage_error_code(&e))?;
            let Some(batch) = batches.into_iter().next() else {
                break;
            };
            let h =
                sluice_storage::parse_header(&batch).map_err(|_| ResponseError::CorruptMessage)?;
            from = Offset(h.base_offset as u64 + h.offset_count());
            if h.max_timestamp < ts || h.is_control() {
                continue;
            }
            let mut buf = batch.clone();
            let set =
                RecordBatchDecoder::decode(&mut buf).map_err(|_| ResponseError::CorruptMessage)?;
            let log_append = h.attributes & 0x08 != 0;
            for r in set.records {
                let t = if log_append {
                    h.max_timestamp
                } else {
                    r.timestamp
                };
                if t >= ts && r.offset >= self.log.start().offset.0 as i64 {
                    return Ok(Some((Offset(r.offset as u64), t)));
                }
            }
        }
        Ok(None)
    }
}
