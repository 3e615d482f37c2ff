//! Limits and tunables of one partition log. Names follow Kafka's topic configs where one exists.

/// Kafka's `message.max.bytes` default: the largest record batch a partition accepts.
pub const MAX_BATCH_BYTES_DEFAULT: usize = 1_048_588;
/// Kafka's `segment.bytes` default (1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Kafka's lower bound for `segment.bytes`; smaller segments would mean a file per few batches.
pub const SEGMENT_BYTES_MIN: u64 = 14;
/// Upper bound for `segment.bytes`: positions inside a segment must fit the index's u32 slot.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Kafka's `segment.ms` default (7 days).
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Kafka's `index.interval.bytes` default: bytes between sparse index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u64 = 4096;
/// Bytes of recent entries kept in memory for tailing readers (the page cache is bypassed).
pub const CACHE_BYTES_DEFAULT: usize = 8 << 20;
/// Appended-but-unflushed bytes after which `append` waits for a flush, so memory stays bounded
/// when nobody asks for durability (acks=0/1 traffic).
pub const MAX_UNFLUSHED_BYTES_DEFAULT: usize = 16 << 20;
/// Smallest read issued against a segment file; reading less costs the same I/O round trip.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Zeroed bytes kept written ahead of the active segment's data, so a flush overwrites
/// blocks already inside the file instead of extending it. ext4 completes a direct write
/// that extends the file synchronously, which makes io_uring hand every append to a kernel
/// worker thread competing with the shard for its core; an overwrite is issued inline.
/// Capped at a quarter of `segment.bytes` for small segments. A log starts at
/// `PREALLOCATE_MIN_BYTES` and doubles the step each time it uses one up, so an idle or slow
/// partition costs tens of KiB of disk, not a MiB (10,000 partitions would hold 10 GB of zeros).
pub const PREALLOCATE_BYTES: u64 = 1 << 20;
pub const PREALLOCATE_MIN_BYTES: u64 = 64 << 10;
/// Durable bytes of the active segment between two writes of its index checkpoint, so
/// recovery after a crash scans at most this much of it instead of the whole segment. The
/// interval also grows to `RECOVERY_CHECKPOINT_INDEX_RATIO` times the checkpoint's own size,
/// which bounds the extra writes to 1/ratio of the data.
pub const RECOVERY_CHECKPOINT_BYTES_DEFAULT: u64 = 32 << 20;
pub const RECOVERY_CHECKPOINT_INDEX_RATIO: u64 = 8;
/// Largest opaque payload of a Raft-internal entry.
pub const MAX_INTERNAL_ENTRY_BYTES: usize = 1 << 20;

/// Configuration of one partition log. `None` retention means unlimited (Kafka's -1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `message.max.bytes`.
    pub max_batch_bytes: usize,
    /// `segment.bytes`.
    pub segment_bytes: u64,
    /// `segment.ms`.
    pub segment_ms: u64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u64,
    /// `retention.ms`.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`.
    pub retention_bytes: Option<u64>,
    /// Bytes of the recent-entry cache.
    pub cache_bytes: usize,
    /// Unflushed bytes before `append` applies backpressure.
    pub max_unflushed_bytes: usize,
    /// Durable bytes of the active segment between two writes of its index checkpoint.
    pub recovery_checkpoint_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cache_bytes: CACHE_BYTES_DEFAULT,
            max_unflushed_bytes: MAX_UNFLUSHED_BYTES_DEFAULT,
            recovery_checkpoint_bytes: RECOVERY_CHECKPOINT_BYTES_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Clamps values into their legal bounds, so a bad config can't make the log misbehave.
    pub fn sanitized(mut self) -> Self {
        self.segment_bytes = self
            .segment_bytes
            .clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self.recovery_checkpoint_bytes = self.recovery_checkpoint_bytes.max(1);
        self.max_batch_bytes = self.max_batch_bytes.max(crate::batch::HEADER_BYTES);
        self.max_unflushed_bytes = self.max_unflushed_bytes.max(self.max_batch_bytes);
        self
    }
}
