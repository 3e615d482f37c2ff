//! `sluice-storage`: the on-disk log of one partition replica.
//!
//! It owns segments, their sparse offset and time indexes, direct I/O (O_DIRECT through
//! glommio on io_uring), group-commit durability, reads by Kafka offset and by Raft index,
//! truncation, retention and crash recovery. It is used from the one executor thread that
//! owns the partition, so it has no locks and never blocks that thread.
//!
//! It must never know Kafka requests, Raft roles or the network: it stores Kafka RecordBatch
//! v2 bytes (validated, with offsets and the term set) and opaque Raft-internal entries, and
//! answers questions about them. See `PartitionLog` for the contract.

mod batch;
mod checkpoint;
mod config;
mod direct_io;
mod error;
mod faults;
mod files;
mod frame;
mod index;
mod log;
mod segment;
mod telemetry;
mod types;

pub use batch::{
    batch_len, parse_header, validate as validate_batch, BatchError, BatchHeader,
    HEADER_BYTES as BATCH_HEADER_BYTES,
};
pub use checkpoint::{Checkpoint, HardState, MAX_CHECKPOINT_BYTES};
pub use config::*;
pub use direct_io::check_direct_io;
pub use error::StorageError;
pub use faults::{set_sync_delay, SYNC_DELAY_MAX};
pub use files::{
    close_idle_files, open_files_stats, set_open_files_max, OPEN_FILES_MAX_DEFAULT, OPEN_FILES_MIN,
};
pub use log::{
    sync_file_system, Appended, CompactionOptions, CompactionStats, Decompress, Entry, LogEnd,
    LogStart, PartitionLog,
};
pub use telemetry::describe_metrics;
pub use types::{EntryKind, Offset, RaftIndex, Term};
