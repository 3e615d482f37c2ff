//! openraft's network over a `Transport`: the seam between a Raft group and whatever carries
//! its messages (the broker's inter-broker RPC; channels in tests). A group's messages are
//! `RaftRequest`/`RaftResponse` values, serializable so the RPC can frame them; `serve`
//! answers one on the receiving replica.

use std::future::Future;
use std::time::Duration;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::{OptionalSend, Raft};
use serde::{Deserialize, Serialize};

use crate::state_machine::{PartitionSnapshot, StateMachine};
use crate::types::{PartitionRaft, SnapshotMeta, Vote};

pub type PartitionRaftNode = Raft<PartitionRaft, StateMachine>;

/// One Raft message to a replica of the sender's group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<PartitionRaft>),
    Vote(VoteRequest<PartitionRaft>),
    PreVote(VoteRequest<PartitionRaft>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: PartitionSnapshot,
    },
    TransferLeader(TransferLeaderRequest<PartitionRaft>),
    /// A message between the brokers themselves, not for any group's Raft: the router's
    /// embedder answers it (controller requests, leadership notices). Opaque here.
    Broker(Vec<u8>),
}

/// The replica's answer; `Failed` when its Raft could not handle the message (it is
/// shutting down, or fatally failed).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    Append(AppendEntriesResponse<PartitionRaft>),
    Vote(VoteResponse<PartitionRaft>),
    Snapshot(SnapshotResponse<PartitionRaft>),
    TransferLeader(TransferLeaderResponse<PartitionRaft>),
    /// The embedder's answer to a `RaftRequest::Broker`.
    Broker(Vec<u8>),
    Failed(String),
}

/// Delivers a group's messages to its replica on broker `to` and returns the answer. An
/// `Err` means the replica could not be reached; openraft backs off and retries.
pub trait Transport: Clone + 'static {
    /// `timeout` bounds the wait for the answer (openraft's time to live for the message).
    fn call(
        &self,
        to: u64,
        request: RaftRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<RaftResponse, String>>;
}

/// Answers one message on the replica it was sent to.
pub async fn serve(raft: &PartitionRaftNode, request: RaftRequest) -> RaftResponse {
    let failed = |e: &dyn std::fmt::Display| RaftResponse::Failed(e.to_string());
    match request {
        RaftRequest::Append(r) => match raft.append_entries(r).await {
            Ok(a) => RaftResponse::Append(a),
            Err(e) => failed(&e),
        },
        RaftRequest::Vote(r) => match raft.vote(r).await {
            Ok(v) => RaftResponse::Vote(v),
            Err(e) => failed(&e),
        },
        RaftRequest::PreVote(r) => match raft.pre_vote(r).await {
            Ok(v) => RaftResponse::Vote(v),
            Err(e) => failed(&e),
        },
        RaftRequest::Snapshot { vote, meta, data } => {
            let snapshot = Snapshot {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(s) => RaftResponse::Snapshot(s),
                Err(e) => failed(&e),
            }
        }
        RaftRequest::TransferLeader(r) => match raft.handle_transfer_leader(r).await {
            Ok(t) => RaftResponse::TransferLeader(t),
            Err(e) => failed(&e),
        },
        RaftRequest::Broker(_) => failed(&"a broker message is not for a Raft group"),
    }
}

/// Builds a `Connection` per peer of one group.
#[derive(Clone)]
pub struct Network<T: Transport> {
    transport: T,
}

impl<T: Transport> Network<T> {
    pub fn new(transport: T) -> Self {
        Network { transport }
    }
}

impl<T: Transport> RaftNetworkFactory<PartitionRaft> for Network<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: u64, _node: &openraft::EmptyNode) -> Connection<T> {
        Connection {
            transport: self.transport.clone(),
            target,
        }
    }
}

/// The link from a group's replica to one peer replica.
pub struct Connection<T: Transport> {
    transport: T,
    target: u64,
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<PartitionRaft> {
    Unreachable::from_string(e.to_string())
}

/// The least time an append carrying entries may take to be answered. The follower answers
/// after its fdatasync, whose tail on a shared disk reaches tens of milliseconds; openraft's
/// time to live for it is a fraction of the heartbeat interval, and a disk slower than that
/// would then never get an append acknowledged (replication would stall, not slow down).
pub const APPEND_TIMEOUT_MIN: Duration = Duration::from_secs(5);

impl<T: Transport> Connection<T> {
    async fn call(
        &self,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, Unreachable<PartitionRaft>> {
        let ttl = match &request {
            RaftRequest::Append(a) if !a.entries.is_empty() => {
                option.hard_ttl().max(APPEND_TIMEOUT_MIN)
            }
            _ => option.hard_ttl(),
        };
        match self.transport.call(self.target, request, ttl).await {
            Ok(RaftResponse::Failed(e)) => Err(unreachable(format!(
                "replica on broker {} failed: {e}",
                self.target
            ))),
            Ok(r) => Ok(r),
            Err(e) => Err(unreachable(e)),
        }
    }
}

fn mismatched(what: &str) -> Unreachable<PartitionRaft> {
    unreachable(format!("answer of the wrong kind to {what}"))
}

impl<T: Transport> RaftNetworkV2<PartitionRaft> for Connection<T> {
    type SnapshotData = PartitionSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        match self.call(RaftRequest::Append(rpc), &option).await? {
            RaftResponse::Append(a) => Ok(a),
            _ => Err(mismatched("append").into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        match self.call(RaftRequest::Vote(rpc), &option).await? {
            RaftResponse::Vote(v) => Ok(v),
            _ => Err(mismatched("vote").into()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        match self.call(RaftRequest::PreVote(rpc), &option).await? {
            RaftResponse::Vote(v) => Ok(v),
            _ => Err(mismatched("pre-vote").into()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<
            openraft::type_config::alias::CommittedLeaderIdOf<PartitionRaft>,
            u64,
            openraft::EmptyNode,
            PartitionSnapshot,
        >,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        // The snapshot is a few fields, not a stream of chunks: one message carries it.
        let request = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self.call(request, &option).await? {
            RaftResponse::Snapshot(s) => Ok(s),
            _ => Err(mismatched("snapshot").into()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        match self.call(RaftRequest::TransferLeader(req), &option).await? {
            RaftResponse::TransferLeader(t) => Ok(t),
            _ => Err(mismatched("leader transfer").into()),
        }
    }
}
