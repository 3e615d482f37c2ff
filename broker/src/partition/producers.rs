//! What applying committed batches builds on every replica of a partition: the
//! idempotent-producer state (so a new leader deduplicates retries the old one took), the
//! largest timestamp, and the wake-ups of parked fetches. Raft's state machine calls
//! `Applied` for each batch it applies, in log order; the leader overlays the batches it has
//! proposed but not yet seen applied (`Proposed`) when it checks a sequence.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use sluice_protocol::ResponseError;
use sluice_storage::{BatchHeader, Offset, PartitionLog};
use tracing::warn;

/// Batches per producer whose sequence numbers are remembered for duplicate detection;
/// Kafka's `max.in.flight.requests.per.connection` with idempotence is at most 5.
const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// Bytes applied between two producer-state snapshots, so opening a partition replays at most
/// about this much of its log (Kafka snapshots at segment roll, which for 1 GiB segments can
/// mean replaying a whole segment).
const PRODUCER_SNAPSHOT_INTERVAL_BYTES: u64 = 32 << 20;
/// Bytes to replay at the next open above which a clean shutdown saves a snapshot.
const CLOSE_SNAPSHOT_MIN_BYTES: u64 = 1 << 20;
/// Format version of the producer-state snapshot.
const SNAPSHOT_VERSION: u8 = 1;

#[derive(Clone, Copy, Debug)]
struct SeqBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
}

#[derive(Clone, Debug, Default)]
struct ProducerState {
    epoch: i16,
    recent: VecDeque<SeqBatch>,
}

impl ProducerState {
    fn note(&mut self, epoch: i16, b: SeqBatch) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.recent.clear();
        }
        self.recent.push_back(b);
        if self.recent.len() > PRODUCER_BATCHES_REMEMBERED {
            self.recent.pop_front();
        }
    }
}

/// One idempotent batch a leader proposed and has not seen applied yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProposedBatch {
    producer_id: i64,
    epoch: i16,
    batch: SeqBatch,
}

impl ProposedBatch {
    pub(super) fn base(&self) -> u64 {
        self.batch.base_offset
    }

    /// The sequence facts of `h`, stored at `base`; `None` for a batch without a producer.
    pub(super) fn of(h: &BatchHeader, base: u64) -> Option<Self> {
        (h.producer_id >= 0 && !h.is_control()).then(|| ProposedBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            batch: SeqBatch {
                first_seq: h.base_sequence,
                last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
                base_offset: base,
            },
        })
    }
}

/// The state built from applied batches, shared by the partition and its state machine.
pub(super) struct Applied {
    topic: String,
    index: i32,
    log: Rc<PartitionLog>,
    producers: RefCell<HashMap<i64, ProducerState>>,
    /// Largest batch max-timestamp and that batch's last offset, for ListOffsets -3.
    max_timestamp: Cell<(i64, i64)>,
    /// One past the last batch noted: batches Raft applies again after a restart (from its
    /// applied-position record) are below it and noted once.
    noted_next: Cell<u64>,
    waiters: RefCell<Vec<flume::Sender<()>>>,
    unsnapshotted_bytes: Cell<u64>,
}

impl Applied {
    /// The state of the log's applied prefix below `applied_end`: from the newest snapshot,
    /// then the batch headers after it.
    pub(super) async fn rebuild(
        topic: String,
        index: i32,
        log: Rc<PartitionLog>,
        applied_end: Offset,
        chunk_bytes: usize,
    ) -> Result<Rc<Self>, sluice_storage::StorageError> {
        let a = Rc::new(Applied {
            topic,
            index,
            log: log.clone(),
            producers: RefCell::new(HashMap::new()),
            max_timestamp: Cell::new((-1, -1)),
            noted_next: Cell::new(log.start().offset.0),
            waiters: RefCell::new(Vec::new()),
            unsnapshotted_bytes: Cell::new(0),
        });
        let mut next = log.start().offset;
        if let Some((at, bytes)) = log.load_snapshot().await {
            match a.restore_snapshot(&bytes) {
                Some(()) => {
                    next = next.max(at);
                    a.noted_next.set(next.0);
                }
                None => {
                    warn!(topic = %a.topic, partition = a.index,
                        "producer-state snapshot does not decode; replaying the whole log");
                    a.producers.borrow_mut().clear();
                    a.max_timestamp.set((-1, -1));
                }
            }
        }
        while next < applied_end {
            let batches = log.read(next, chunk_bytes, applied_end).await?;
            let Some(last) = batches.last() else { break };
            let last = sluice_storage::parse_header(last)?;
            for b in &batches {
                let h = sluice_storage::parse_header(b)?;
                a.note(&h, h.base_offset as u64, b.len() as u64);
            }
            next = Offset(last.base_offset as u64 + last.offset_count());
        }
        a.noted_next.set(a.noted_next.get().max(applied_end.0));
        Ok(a)
    }

    fn note(&self, h: &BatchHeader, base: u64, bytes: u64) {
        let last = base as i64 + h.last_offset_delta as i64;
        // On a tie the earlier batch keeps it, as in Kafka.
        if h.max_timestamp > self.max_timestamp.get().0 {
            self.max_timestamp.set((h.max_timestamp, last));
        }
        if let Some(p) = ProposedBatch::of(h, base) {
            self.producers
                .borrow_mut()
                .entry(p.producer_id)
                .or_default()
                .note(p.epoch, p.batch);
        }
        self.noted_next.set(base + h.offset_count());
        self.unsnapshotted_bytes
            .set(self.unsnapshotted_bytes.get() + bytes);
    }

    /// One past the last batch applied to this state.
    pub(super) fn noted_next(&self) -> u64 {
        self.noted_next.get()
    }

    pub(super) fn max_timestamp(&self) -> (i64, i64) {
        self.max_timestamp.get()
    }

    /// Checks an idempotent batch against the producer's applied state with the leader's
    /// `proposed` batches on top: `Ok(None)` to append, `Ok(Some(base))` for a duplicate
    /// already stored at `base`, or Kafka's error.
    pub(super) fn check_sequence<'a>(
        &self,
        h: &BatchHeader,
        proposed: impl Iterator<Item = &'a ProposedBatch>,
    ) -> Result<Option<u64>, ResponseError> {
        if h.producer_id < 0 {
            return Ok(None);
        }
        let mut state = self.producers.borrow().get(&h.producer_id).cloned();
        for p in proposed.filter(|p| p.producer_id == h.producer_id) {
            state
                .get_or_insert_with(Default::default)
                .note(p.epoch, p.batch);
        }
        let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta);
        match state {
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

    /// Resolves when applying passes `offset` (the high watermark `hw` is below it) or the
    /// receiver is dropped.
    pub(super) fn wait_past(&self, offset: Offset, hw: Offset) -> Option<flume::Receiver<()>> {
        if hw > offset {
            return None;
        }
        let (tx, rx) = flume::bounded(1);
        let mut w = self.waiters.borrow_mut();
        w.retain(|s| !s.is_disconnected());
        w.push(tx);
        Some(rx)
    }

    fn wake(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.try_send(());
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

    /// Saves the state as of everything applied so far; what it covers is exactly the
    /// batches below `noted_next`, which are committed.
    async fn save_snapshot(&self) {
        let at = Offset(self.noted_next.get());
        let state = self.encode_snapshot();
        self.unsnapshotted_bytes.set(0);
        if let Err(e) = self.log.save_snapshot(at, &state).await {
            warn!(topic = %self.topic, partition = self.index, error = %e,
                "could not save a producer-state snapshot");
        }
    }

    /// At clean shutdown: a snapshot, so the next open replays (almost) nothing. Below
    /// `CLOSE_SNAPSHOT_MIN_BYTES` to replay, replaying is cheaper than the write.
    pub(super) async fn snapshot_at_close(&self) {
        if self.unsnapshotted_bytes.get() >= CLOSE_SNAPSHOT_MIN_BYTES {
            self.save_snapshot().await;
        }
    }
}

impl sluice_raft::ApplyObserver for Applied {
    fn applied(&self, batch: &[u8], base_offset: u64) {
        if base_offset >= self.noted_next.get() {
            match sluice_storage::parse_header(batch) {
                Ok(h) => self.note(&h, base_offset, batch.len() as u64),
                Err(e) => warn!(topic = %self.topic, partition = self.index, error = %e,
                    offset = base_offset, "applied batch has no readable header"),
            }
        }
        self.wake();
        if self.unsnapshotted_bytes.get() >= PRODUCER_SNAPSHOT_INTERVAL_BYTES {
            // Encoded now, written in the background: the snapshot covers exactly the
            // batches applied so far.
            let at = Offset(self.noted_next.get());
            let state = self.encode_snapshot();
            self.unsnapshotted_bytes.set(0);
            let (log, topic, index) = (self.log.clone(), self.topic.clone(), self.index);
            glommio::spawn_local(async move {
                if let Err(e) = log.save_snapshot(at, &state).await {
                    warn!(%topic, partition = index, error = %e,
                        "could not save a producer-state snapshot");
                }
            })
            .detach();
        }
    }

    fn reset(&self, next_offset: u64) {
        // The log restarts at the leader's start: producers whose batches were all before it
        // are forgotten, as retention forgets them.
        self.producers.borrow_mut().clear();
        self.max_timestamp.set((-1, -1));
        self.noted_next.set(next_offset);
        self.wake();
    }
}
