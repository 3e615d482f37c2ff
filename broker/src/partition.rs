//! One partition replica on its owner shard: the storage log plus what Kafka layers on it —
//! the high watermark, idempotent-producer state, and wake-ups for parked fetches.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;
use sluice_protocol::kafka_protocol::records::{Record, RecordBatchDecoder};
use sluice_protocol::ResponseError;
use sluice_storage::{
    BatchHeader, CompactionOptions, CompactionStats, Decompress, LogConfig, Offset, PartitionLog,
    StorageError, Term,
};
use tracing::warn;

/// Batches per producer whose sequence numbers are remembered for duplicate detection;
/// Kafka's `max.in.flight.requests.per.connection` with idempotence is at most 5.
const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// The leader epoch of a one-node cluster (the Raft term, once replication lands).
pub const LEADER_EPOCH: i32 = 0;
const TERM: Term = Term(0);
/// Largest read while rebuilding producer state at open.
const REBUILD_CHUNK_BYTES: usize = 8 << 20;
/// Bytes appended between two producer-state snapshots (the active segment's recovery
/// checkpoint interval), so opening a partition replays at most about this much of its log (Kafka snapshots at segment roll, which for 1 GiB
/// segments can mean replaying a whole segment).
const PRODUCER_SNAPSHOT_INTERVAL_BYTES: u64 = 32 << 20;
/// Bytes to replay at the next open above which a clean shutdown saves a snapshot.
const CLOSE_SNAPSHOT_MIN_BYTES: u64 = 1 << 20;
/// Format version of the producer-state snapshot.
const SNAPSHOT_VERSION: u8 = 1;
/// A record timestamp of -1: "none", which the timestamp bounds do not apply to (Kafka).
const NO_TIMESTAMP: i64 = -1;

#[derive(Clone, Copy, Debug)]
struct SeqBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
}

#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    recent: VecDeque<SeqBatch>,
}

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

/// Kafka's record-level rules for a topic (its log validator's), checked on produce.
#[derive(Clone, Copy, Debug)]
pub struct RecordRules {
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches, so client
    /// timestamps are not checked.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: compaction is by key, so every record needs one.
    pub keys_required: bool,
    /// `message.timestamp.before.max.ms`: how far a CreateTime timestamp may lag the clock.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far a CreateTime timestamp may lead the clock.
    pub timestamp_after_max_ms: i64,
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

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Only `Partition` touches the log: this is the seam replication slots into.
    log: PartitionLog,
    producers: RefCell<HashMap<i64, ProducerState>>,
    /// Offsets below this are durable (the Raft commit, for one node an fdatasync).
    hw: Cell<u64>,
    /// Largest batch max-timestamp and that batch's last offset, for ListOffsets -3.
    max_timestamp: Cell<(i64, i64)>,
    /// Serializes sequence checks with appends so pipelined idempotent batches can't race.
    append_lock: Semaphore,
    waiters: RefCell<Vec<flume::Sender<()>>>,
    rules: Cell<RecordRules>,
    /// Bytes appended since the last producer-state snapshot.
    unsnapshotted_bytes: Cell<u64>,
    /// Set at scrape time; resolved once here so a scrape does no registry lookups.
    gauges: crate::telemetry::PartitionGauges,
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

impl Partition {
    pub async fn open(
        dir: &std::path::Path,
        topic: String,
        index: i32,
        config: LogConfig,
        rules: RecordRules,
    ) -> Result<Rc<Self>, StorageError> {
        // The shard syncs the file system once for every partition it opens, before serving.
        let log = PartitionLog::open_unsynced(dir, config).await?;
        let hw = log.durable_end().next_offset.0;
        let gauges = crate::telemetry::PartitionGauges::new(&topic, index);
        let p = Rc::new(Partition {
            topic,
            index,
            log,
            producers: RefCell::new(HashMap::new()),
            hw: Cell::new(hw),
            max_timestamp: Cell::new((-1, -1)),
            append_lock: Semaphore::new(1),
            waiters: RefCell::new(Vec::new()),
            rules: Cell::new(rules),
            unsnapshotted_bytes: Cell::new(0),
            gauges,
        });
        p.rebuild_producer_state().await?;
        Ok(p)
    }

    /// Restores idempotent-producer state and the max timestamp: from the newest snapshot,
    /// then by replaying the batch headers written after it.
    async fn rebuild_producer_state(&self) -> Result<(), StorageError> {
        let end = Offset(self.hw.get());
        let mut next = self.log.start().offset;
        if let Some((at, bytes)) = self.log.load_snapshot().await {
            match self.restore_snapshot(&bytes) {
                Some(()) => next = next.max(at),
                None => {
                    warn!(topic = %self.topic, partition = self.index,
                        "producer-state snapshot does not decode; replaying the whole log");
                    self.producers.borrow_mut().clear();
                    self.max_timestamp.set((-1, -1));
                }
            }
        }
        while next < end {
            let batches = self.log.read(next, REBUILD_CHUNK_BYTES, end).await?;
            let Some(last) = batches.last() else { break };
            let last_end = sluice_storage::parse_header(last)?;
            for b in &batches {
                let h = sluice_storage::parse_header(b)?;
                self.note_batch(&h, h.base_offset as u64);
                self.unsnapshotted_bytes
                    .set(self.unsnapshotted_bytes.get() + b.len() as u64);
            }
            next = Offset(last_end.base_offset as u64 + last_end.offset_count());
        }
        Ok(())
    }

    fn note_batch(&self, h: &BatchHeader, base: u64) {
        let last = base as i64 + h.last_offset_delta as i64;
        // On a tie the earlier batch keeps it, as in Kafka.
        if h.max_timestamp > self.max_timestamp.get().0 {
            self.max_timestamp.set((h.max_timestamp, last));
        }
        if h.producer_id >= 0 && !h.is_control() {
            let mut producers = self.producers.borrow_mut();
            let s = producers.entry(h.producer_id).or_default();
            if h.producer_epoch != s.epoch {
                s.epoch = h.producer_epoch;
                s.recent.clear();
            }
            s.recent.push_back(SeqBatch {
                first_seq: h.base_sequence,
                last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
                base_offset: base,
            });
            if s.recent.len() > PRODUCER_BATCHES_REMEMBERED {
                s.recent.pop_front();
            }
        }
    }

    /// The producer state and max timestamp, encoded for a snapshot.
    fn encode_snapshot(&self) -> Vec<u8> {
        let producers = self.producers.borrow();
        let mut b = Vec::with_capacity(32 + producers.len() * 64);
        b.push(SNAPSHOT_VERSION);
        let (ts, ts_offset) = self.max_timestamp.get();
        b.extend_from_slice(&ts.to_le_bytes());
        b.extend_from_slice(&ts_offset.to_le_bytes());
        b.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        for (pid, s) in producers.iter() {
            b.extend_from_slice(&pid.to_le_bytes());
            b.extend_from_slice(&s.epoch.to_le_bytes());
            b.push(s.recent.len() as u8);
            for r in &s.recent {
                b.extend_from_slice(&r.first_seq.to_le_bytes());
                b.extend_from_slice(&r.last_seq.to_le_bytes());
                b.extend_from_slice(&r.base_offset.to_le_bytes());
            }
        }
        b
    }

    /// Replaces the producer state with a snapshot's; `None` if it does not decode.
    fn restore_snapshot(&self, mut b: &[u8]) -> Option<()> {
        fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
            let (head, rest) = b.split_first_chunk::<N>()?;
            *b = rest;
            Some(*head)
        }
        if take::<1>(&mut b)?[0] != SNAPSHOT_VERSION {
            return None;
        }
        let ts = i64::from_le_bytes(take(&mut b)?);
        let ts_offset = i64::from_le_bytes(take(&mut b)?);
        let n = u32::from_le_bytes(take(&mut b)?);
        let mut producers = HashMap::new();
        for _ in 0..n {
            let pid = i64::from_le_bytes(take(&mut b)?);
            let epoch = i16::from_le_bytes(take(&mut b)?);
            let k = take::<1>(&mut b)?[0] as usize;
            if k > PRODUCER_BATCHES_REMEMBERED {
                return None;
            }
            let mut recent = VecDeque::with_capacity(k);
            for _ in 0..k {
                recent.push_back(SeqBatch {
                    first_seq: i32::from_le_bytes(take(&mut b)?),
                    last_seq: i32::from_le_bytes(take(&mut b)?),
                    base_offset: u64::from_le_bytes(take(&mut b)?),
                });
            }
            producers.insert(pid, ProducerState { epoch, recent });
        }
        if !b.is_empty() {
            return None;
        }
        *self.producers.borrow_mut() = producers;
        self.max_timestamp.set((ts, ts_offset));
        Some(())
    }

    /// Saves the producer state as of the log's end. Called under `append_lock` (or with no
    /// appends running), so the state covers exactly the entries before that end.
    async fn save_snapshot(&self) {
        let at = self.log.end().next_offset;
        let state = self.encode_snapshot();
        self.unsnapshotted_bytes.set(0);
        if let Err(e) = self.log.save_snapshot(at, &state).await {
            warn!(topic = %self.topic, partition = self.index, error = %e,
                "could not save a producer-state snapshot");
        }
    }

    /// At clean shutdown: a snapshot at the end, so the next open replays (almost) nothing.
    /// Below `CLOSE_SNAPSHOT_MIN_BYTES` to replay, replaying is cheaper than the write.
    pub async fn snapshot_at_close(&self) {
        if self.unsnapshotted_bytes.get() >= CLOSE_SNAPSHOT_MIN_BYTES {
            self.save_snapshot().await;
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    pub fn gauges(&self) -> &crate::telemetry::PartitionGauges {
        &self.gauges
    }

    /// The next offset the log assigns (durable or not).
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

    /// DeleteRecords: moves the log start to `before` (at most the high watermark) and
    /// returns the new low watermark.
    pub async fn delete_records(&self, before: Offset) -> Result<Offset, ResponseError> {
        match self.log.advance_start(before).await {
            Ok(start) => Ok(start.offset),
            Err(e) => {
                warn!(topic = %self.topic, partition = self.index, error = %e, "delete records failed");
                Err(ResponseError::KafkaStorageError)
            }
        }
    }

    /// `retention.ms` / `retention.bytes`: deletes whole old segments; returns how many.
    pub async fn apply_retention(&self, now_ms: u64) -> Result<usize, StorageError> {
        self.log.apply_retention(now_ms).await
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

    /// Closes the log (graceful shutdown); flush and snapshot first.
    pub async fn close(self) -> Result<(), StorageError> {
        self.log.close().await
    }

    pub fn set_config(&self, config: LogConfig, rules: RecordRules) {
        self.log.set_config(config);
        self.rules.set(rules);
    }

    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            log_start: self.log.start().offset,
            high_watermark: Offset(self.hw.get()),
        }
    }

    /// The largest batch max-timestamp and that batch's last offset, if any batch has one.
    pub fn max_timestamp(&self) -> Option<(i64, Offset)> {
        let (ts, offset) = self.max_timestamp.get();
        u64::try_from(offset).ok().map(|o| (ts, Offset(o)))
    }

    /// Checks an idempotent batch against the producer's state: `Ok(None)` to append,
    /// `Ok(Some(base))` for a duplicate already stored at `base`, or Kafka's error.
    fn check_sequence(&self, h: &BatchHeader) -> Result<Option<u64>, ResponseError> {
        if h.producer_id < 0 {
            return Ok(None);
        }
        let producers = self.producers.borrow();
        let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta);
        match producers.get(&h.producer_id) {
            // A new producer (or one whose batches retention removed) starts at 0; anything
            // else means earlier batches were lost, and accepting it would hide the loss.
            None => match h.base_sequence {
                0 => Ok(None),
                _ => Err(ResponseError::OutOfOrderSequenceNumber),
            },
            Some(s) if h.producer_epoch < s.epoch => Err(ResponseError::InvalidProducerEpoch),
            Some(s) if h.producer_epoch > s.epoch => match h.base_sequence {
                0 => Ok(None),
                _ => Err(ResponseError::OutOfOrderSequenceNumber),
            },
            Some(s) => {
                if let Some(d) = s
                    .recent
                    .iter()
                    .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
                {
                    return Ok(Some(d.base_offset));
                }
                let expected = s
                    .recent
                    .back()
                    .map_or(0, |b| b.last_seq.wrapping_add(1).max(0));
                if h.base_sequence == expected {
                    Ok(None)
                } else {
                    Err(ResponseError::OutOfOrderSequenceNumber)
                }
            }
        }
    }

    /// Appends every batch in `records`. With `Durability::Quorum` returns only once they are
    /// durable; otherwise durability (and the high watermark) follows in the background.
    pub async fn produce(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
        now_ms: i64,
    ) -> Result<ProduceOutcome, Refusal> {
        self.append_batches(records, durability, now_ms, true).await
    }

    /// Appends the broker's own records (group state, offsets), which the record-level
    /// rules meant for clients' data need not check.
    pub async fn produce_own(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
    ) -> Result<ProduceOutcome, ResponseError> {
        self.append_batches(records, durability, 0, false)
            .await
            .map_err(|r| r.error)
    }

    async fn append_batches(
        self: &Rc<Self>,
        records: Bytes,
        durability: Durability,
        now_ms: i64,
        check: bool,
    ) -> Result<ProduceOutcome, Refusal> {
        let batches = split_batches(&records)?;
        let _permit = self
            .append_lock
            .acquire_permit(1)
            .await
            .map_err(|_| ResponseError::KafkaStorageError)?;
        let mut first_base = None;
        let rules = self.rules.get();
        let log_append_time = rules.log_append_time;
        let (mut appended_bytes, mut appended_records) = (0, 0);
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
            if let Some(dup) = self.check_sequence(&h).map_err(|e| with_start(e.into()))? {
                first_base.get_or_insert(dup);
                continue;
            }
            let appended = if log_append_time {
                // Validate what the client sent before the CRC is recomputed over it.
                sluice_storage::validate_batch(b, self.log.config().max_batch_bytes)
                    .map_err(|e| storage_error_code(&StorageError::InvalidBatch(e)))?;
                let patched = with_log_append_time(b, now_ms);
                self.log.append(&patched, TERM).await
            } else {
                self.log.append(b, TERM).await
            };
            let a = appended.map_err(|e| {
                warn!(topic = %self.topic, partition = self.index, error = %e, "append refused");
                storage_error_code(&e)
            })?;
            let mut h = h;
            if log_append_time {
                h.max_timestamp = now_ms;
            }
            self.note_batch(&h, a.base_offset.0);
            first_base.get_or_insert(a.base_offset.0);
            appended_bytes += b.len() as u64;
            appended_records += h.records_count.max(0) as u64;
            self.unsnapshotted_bytes
                .set(self.unsnapshotted_bytes.get() + b.len() as u64);
        }
        if self.unsnapshotted_bytes.get() >= PRODUCER_SNAPSHOT_INTERVAL_BYTES {
            self.save_snapshot().await;
        }
        drop(_permit);
        if durability == Durability::Quorum {
            self.make_durable().await?;
        } else {
            let p = self.clone();
            glommio::spawn_local(async move {
                let _ = p.make_durable().await;
            })
            .detach();
        }
        Ok(ProduceOutcome {
            base_offset: Offset(first_base.expect("split_batches yields at least one batch")),
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start: self.log.start().offset,
            appended_bytes,
            appended_records,
        })
    }

    /// Flushes (group commit) and advances the high watermark, waking parked fetches.
    pub async fn make_durable(&self) -> Result<(), ResponseError> {
        let end = self.log.flush().await.map_err(|e| {
            warn!(topic = %self.topic, partition = self.index, error = %e, "flush failed");
            storage_error_code(&e)
        })?;
        if end.next_offset.0 > self.hw.get() {
            self.hw.set(end.next_offset.0);
            for w in self.waiters.borrow_mut().drain(..) {
                let _ = w.try_send(());
            }
        }
        Ok(())
    }

    /// Resolves when the high watermark passes `offset` or the receiver is dropped.
    pub fn wait_for_data(&self, offset: Offset) -> Option<flume::Receiver<()>> {
        if self.hw.get() > offset.0 {
            return None;
        }
        let (tx, rx) = flume::bounded(1);
        let mut w = self.waiters.borrow_mut();
        w.retain(|s| !s.is_disconnected());
        w.push(tx);
        Some(rx)
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

/// Splits a produce request's records into whole batches; a torn or empty set, or more than
/// one batch, is refused.
fn split_batches(records: &Bytes) -> Result<Vec<&[u8]>, ResponseError> {
    let mut out = Vec::new();
    let mut rest = &records[..];
    while !rest.is_empty() {
        let len = sluice_storage::batch_len(rest).ok_or(ResponseError::CorruptMessage)?;
        if len < sluice_storage::BATCH_HEADER_BYTES as i64 {
            return Err(ResponseError::CorruptMessage);
        }
        // Kafka sees no whole batch in a truncated one, and wants exactly one.
        if len > rest.len() as i64 {
            return Err(ResponseError::InvalidRecord);
        }
        let (b, r) = rest.split_at(len as usize);
        out.push(b);
        rest = r;
    }
    // Produce v3+ carries exactly one batch per partition; Kafka refuses none or more.
    match out.len() {
        1 => Ok(out),
        _ => Err(ResponseError::InvalidRecord),
    }
}

/// Kafka's record-level validation of one batch: keys on compacted topics and CreateTime
/// timestamps within the topic's bounds. Records are decoded only when a rule could fail:
/// always for a compacted topic, otherwise only when the header's max timestamp is past
/// the upper bound or a lower bound is configured.
fn check_records(
    b: &[u8],
    h: &BatchHeader,
    rules: &RecordRules,
    now_ms: i64,
) -> Result<(), Refusal> {
    if h.is_control() {
        return Ok(());
    }
    let check_time = !rules.log_append_time;
    let too_late = now_ms.saturating_add(rules.timestamp_after_max_ms);
    let too_early = now_ms.saturating_sub(rules.timestamp_before_max_ms);
    let may_fail = rules.keys_required
        || (check_time && (h.max_timestamp > too_late || rules.timestamp_before_max_ms < i64::MAX));
    if !may_fail {
        return Ok(());
    }
    let mut buf = Bytes::copy_from_slice(b);
    let records = RecordBatchDecoder::decode(&mut buf)
        .map_err(|_| ResponseError::CorruptMessage)?
        .records;
    // One error per record, the key's first, as Kafka's validator reports them.
    let mut record_errors = Vec::new();
    let mut bad_time = false;
    for (i, r) in records.iter().enumerate() {
        let reason = if rules.keys_required && r.key.is_none() {
            "no key, and the topic is compacted by key".to_string()
        } else if check_time
            && r.timestamp != NO_TIMESTAMP
            && (r.timestamp < too_early || r.timestamp > too_late)
        {
            bad_time = true;
            format!(
                "timestamp {} outside the topic's bounds [{too_early}, {too_late}]",
                r.timestamp
            )
        } else {
            continue;
        };
        record_errors.push((i as i32, reason));
    }
    if record_errors.is_empty() {
        return Ok(());
    }
    // A timestamp error sets the partition's code even when other records lack keys.
    let (error, message) = if bad_time {
        (
            ResponseError::InvalidTimestamp,
            format!(
                "{} records refused, at least one for its timestamp",
                record_errors.len()
            ),
        )
    } else {
        (
            ResponseError::InvalidRecord,
            format!("{} records refused, without keys", record_errors.len()),
        )
    };
    Err(Refusal {
        error,
        record_errors,
        message: Some(message),
        log_start: None,
    })
}

/// For `message.timestamp.type=LogAppendTime`: the broker sets the batch's max timestamp
/// and timestamp-type bit, which the CRC covers, so the CRC is recomputed.
fn with_log_append_time(b: &[u8], now_ms: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    let attrs = i16::from_be_bytes([v[21], v[22]]) | 0x08;
    v[21..23].copy_from_slice(&attrs.to_be_bytes());
    v[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    v
}

impl Partition {
    /// First record (offset, timestamp) with timestamp >= `ts` below the high watermark.
    /// Storage finds the batch; its records are decoded (decompressed if needed) to find
    /// the record, as Kafka answers by record, not by batch.
    pub async fn offset_for_timestamp(
        &self,
        ts: i64,
    ) -> Result<Option<(Offset, i64)>, ResponseError> {
        let hw = self.hw.get();
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
