//! `sluice-raft`: openraft integration for Sluice. A partition replica's Raft state is its
//! storage log (`log_store`, `state_machine`), and its messages travel over a `Transport`
//! the broker provides (`network`); the glommio runtime adapter lives in `runtime`
//! and nowhere else.

pub mod config;
pub mod group;
pub mod log_store;
pub mod network;
pub mod prefix;
pub mod rpc;
pub mod runtime;
pub mod state_machine;
pub mod types;

pub use config::{default_group_config, group_config, ELECTION_TIMEOUT_MIN};
pub use group::{
    Group, Leadership, MoveStep, ProposeError, Ticker, TransferError, REPLICA_LAG_TIME_MAX_DEFAULT,
};
pub use log_store::{LogReader, LogStore};
pub use network::{serve, Network, PartitionRaftNode, RaftRequest, RaftResponse, Transport};
pub use prefix::advance_log_start;
pub use runtime::GlommioRuntime;
pub use state_machine::{ApplyObserver, PartitionSnapshot, PrefixPoint, StateMachine};
pub use types::{AppliedBatch, Batch, PartitionRaft};
