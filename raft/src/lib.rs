//! `sluice-raft`: openraft integration for Sluice. A partition replica's Raft state is its
//! storage log (`log_store`, `state_machine`); the glommio runtime adapter lives in `runtime`
//! and nowhere else.

pub mod log_store;
pub mod runtime;
pub mod state_machine;
pub mod types;

pub use log_store::{LogReader, LogStore};
pub use runtime::GlommioRuntime;
pub use state_machine::{PartitionSnapshot, StateMachine};
pub use types::{AppliedBatch, Batch, PartitionRaft};
