//! The inter-broker RPC: one TCP connection from each shard to each peer broker carries every
//! group's Raft messages, batched into frames (`wire`). `Peers` is the sending side and gives
//! each group a `Transport`; `Server` accepts peers and hands each message to a `Router`
//! (the broker routes it to the shard owning the group; tests to a local map).
//!
//! Every queue is bounded: a peer's outgoing queue refuses when full (openraft backs off),
//! and a connection stops reading while `RPC_MAX_IN_FLIGHT` of its messages are being served.

mod client;
mod server;
pub mod wire;

use std::time::Duration;

pub use client::{GroupTransport, Peers};
pub use server::{Router, Server};

/// Messages queued to one peer before senders are refused.
pub const RPC_QUEUE_DEPTH: usize = 4096;
/// Envelopes per frame; more wait for the next frame.
pub const RPC_MAX_BATCH: usize = 1024;
/// Messages of one connection served at once before it stops reading.
pub const RPC_MAX_IN_FLIGHT: usize = 4096;
/// Connecting to a peer, and its hello, must finish within this.
pub const RPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A frame's body must arrive within this once its length has.
pub const RPC_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between reconnection attempts to a peer that is down.
pub const RPC_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections a server holds at once (peers × their shards, with room to spare).
pub const RPC_MAX_CONNECTIONS: usize = 1024;
