//! The classic consumer-group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup and
//! committed offsets).
//!
//! A group belongs to one partition of the internal topic `__consumer_offsets` (Kafka's
//! `abs(hashCode(group)) % partitions`), and the shard owning that partition owns the group:
//! its membership state machine runs there, and its offsets and metadata are records in that
//! partition, so they will replicate with it once Raft lands. State is rebuilt from those
//! records at start-up. Assignment stays client-side: the leader's assignment bytes are
//! relayed to each member unchanged.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sluice_protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_protocol::ResponseError;
use tracing::{info, warn};

use crate::partition::Partition;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms` defaults.
pub const GROUP_MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
pub const GROUP_MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;
/// Bytes of protocol metadata one member may send; bounds a group's memory.
pub const MEMBER_METADATA_MAX_BYTES: usize = 1 << 20;
/// Groups one shard coordinates; past it new groups get COORDINATOR_NOT_AVAILABLE.
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;
/// How often expired sessions, due rebalances and expired offsets are checked.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Largest read while replaying `__consumer_offsets` at start-up.
const LOAD_CHUNK_BYTES: usize = 8 << 20;

/// Kafka's partition of `__consumer_offsets` for a group: Java's `String.hashCode`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(c as i32);
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    (if h == i32::MIN { 0 } else { h.abs() }) % partitions.max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// What a JoinGroup answers, built when the rebalance completes.
#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata) — only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Clone, Debug, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets an id and MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<flume::Sender<JoinResult>>,
    sync_waiter: Option<flume::Sender<SyncResult>>,
}

/// A described member: (member id, instance id, client id, host, metadata, assignment).
pub type MemberInfo = (String, Option<String>, String, String, Bytes, Bytes);

pub struct Group {
    pub state: State,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    leader: Option<String>,
    /// Join order matters: the first member to join leads.
    members: BTreeMap<u64, String>,
    by_id: HashMap<String, (u64, Member)>,
    next_seq: u64,
    pending_ids: Vec<String>,
    /// A rebalance completes at this instant even if members are missing.
    rebalance_deadline: Option<Instant>,
    /// A rebalance from Empty waits this long for more members (group.initial.rebalance.delay.ms).
    join_not_before: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// When the group last became Empty, for offsets.retention.minutes.
    empty_since_ms: i64,
}

impl Group {
    /// Topics the members of a consumer-protocol group subscribe to, from their metadata for
    /// the chosen protocol; `None` when that cannot be known (another protocol type, or
    /// metadata that does not decode), in which case the group counts as using everything.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = HashSet::new();
        for (_, m) in self.by_id.values() {
            let (_, meta) = m.protocols.iter().find(|(n, _)| n == protocol)?;
            topics.extend(subscription_topics(meta)?);
        }
        Some(topics)
    }

    /// Kafka's static-membership check: a request naming an instance id that now belongs to
    /// another member id comes from a fenced (replaced) member.
    fn check_instance(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let Some(inst) = instance_id else {
            return Ok(());
        };
        match self
            .by_id
            .iter()
            .find(|(_, (_, m))| m.instance_id.as_deref() == Some(inst))
        {
            Some((id, _)) if id != member_id => Err(ResponseError::FencedInstanceId),
            Some(_) => Ok(()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    fn new(now_ms: i64) -> Self {
        Group {
            state: State::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            pending_ids: Vec::new(),
            rebalance_deadline: None,
            join_not_before: None,
            offsets: HashMap::new(),
            empty_since_ms: now_ms,
        }
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.members
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, m)| (id, m)))
            .map(|(id, m)| {
                let metadata = self
                    .protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map_or_else(Bytes::new, |(_, b)| b.clone());
                (
                    id.clone(),
                    m.instance_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    metadata,
                    m.assignment.clone(),
                )
            })
            .collect()
    }

    fn remove_member(&mut self, id: &str) {
        if let Some((seq, m)) = self.by_id.remove(id) {
            self.members.remove(&seq);
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult {
                    error: Some(ResponseError::UnknownMemberId),
                    member_id: id.to_string(),
                    ..JoinResult::default()
                });
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncResult {
                    error: Some(ResponseError::UnknownMemberId),
                    ..SyncResult::default()
                });
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn start_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::PreparingRebalance {
            return;
        }
        // Members waiting on a sync that will never come must rejoin.
        for (_, m) in self.by_id.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    ..SyncResult::default()
                });
            }
        }
        let timeout = self
            .by_id
            .values()
            .map(|(_, m)| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.join_not_before = (self.state == State::Empty).then(|| now + initial_delay);
        self.rebalance_deadline = Some(now + timeout.max(initial_delay));
        self.state = State::PreparingRebalance;
    }

    /// Completes the join phase when every member has rejoined (and the initial delay is
    /// over) or the rebalance timeout passed; members that did not rejoin are dropped.
    fn maybe_complete_join(&mut self, now: Instant, now_ms: i64) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.by_id.values().all(|(_, m)| m.join_waiter.is_some());
        let delay_over = self.join_not_before.is_none_or(|t| now >= t);
        let timed_out = self.rebalance_deadline.is_some_and(|t| now >= t);
        if !(timed_out || all_joined && delay_over) {
            return;
        }
        let missing: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, (_, m))| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.join_not_before = None;
        if self.by_id.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            self.empty_since_ms = now_ms;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.by_id.contains_key(l))
        {
            self.leader = self.members.values().next().cloned();
        }
        self.state = State::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let all = self.members();
        for (id, (_, m)) in self.by_id.iter_mut() {
            m.last_seen = now;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.iter()
                            .map(|(i, inst, _, _, md, _)| (i.clone(), inst.clone(), md.clone()))
                            .collect()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// The protocol every member supports, preferred by the most members (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let members: Vec<&Member> = self.by_id.values().map(|(_, m)| m).collect();
        let first = members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in &members {
            if let Some(pick) = m
                .protocols
                .iter()
                .map(|(n, _)| n)
                .find(|n| candidates.contains(n))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == pick) {
                    v.0 += 1;
                }
            }
        }
        // Most votes wins; ties go to the first member's preference order.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| (*c).clone())
    }
}

/// Record keys and values in `__consumer_offsets` (JSON: small, and readable in a dump).
#[derive(Serialize, Deserialize)]
enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Serialize, Deserialize)]
struct GroupValue {
    protocol_type: Option<String>,
}

#[derive(Default)]
pub struct Coordinator {
    pub groups: RefCell<HashMap<String, Group>>,
}

pub struct Limits {
    pub initial_rebalance_delay: Duration,
    pub group_max_size: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    /// JoinGroup: a receiver that yields the answer, at once for an error or a member that
    /// needn't rebalance, otherwise when the rebalance completes.
    pub fn join(&self, req: JoinRequest, limits: &Limits) -> flume::Receiver<JoinResult> {
        self.try_join(req, limits).unwrap_or_else(|failed| {
            let (tx, rx) = flume::bounded(1);
            let _ = tx.send(*failed);
            rx
        })
    }

    fn try_join(
        &self,
        req: JoinRequest,
        limits: &Limits,
    ) -> Result<flume::Receiver<JoinResult>, Box<JoinResult>> {
        let fail = |e: ResponseError, member_id: &str| {
            Box::new(JoinResult {
                error: Some(e),
                member_id: member_id.to_string(),
                generation: -1,
                ..JoinResult::default()
            })
        };
        if req.session_timeout_ms < GROUP_MIN_SESSION_TIMEOUT_MS
            || req.session_timeout_ms > GROUP_MAX_SESSION_TIMEOUT_MS
        {
            return Err(fail(ResponseError::InvalidSessionTimeout, &req.member_id));
        }
        if req.protocols.is_empty()
            || req.protocol_type.is_empty()
            || req
                .protocols
                .iter()
                .map(|(n, m)| n.len() + m.len())
                .sum::<usize>()
                > MEMBER_METADATA_MAX_BYTES
        {
            return Err(fail(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(&req.group) && groups.len() >= GROUPS_PER_SHARD_MAX {
            return Err(fail(ResponseError::CoordinatorNotAvailable, &req.member_id));
        }
        let now = Instant::now();
        let group = groups
            .entry(req.group.clone())
            .or_insert_with(|| Group::new(now_ms()));
        if group.state != State::Empty
            && group
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != req.protocol_type)
        {
            return Err(fail(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if !group.by_id.is_empty() {
            let supported = group
                .by_id
                .values()
                .next()
                .map(|(_, m)| {
                    req.protocols
                        .iter()
                        .any(|(n, _)| m.protocols.iter().any(|(p, _)| p == n))
                })
                .unwrap_or(true);
            if !supported {
                return Err(fail(
                    ResponseError::InconsistentGroupProtocol,
                    &req.member_id,
                ));
            }
        }
        // Static members are found by instance id; a new join with it replaces (fences) the
        // old member id.
        let mut member_id = req.member_id.clone();
        if let Some(inst) = &req.instance_id {
            let existing = group
                .by_id
                .iter()
                .find(|(_, (_, m))| m.instance_id.as_ref() == Some(inst))
                .map(|(id, _)| id.clone());
            match existing {
                Some(old) if member_id.is_empty() => {
                    // Rejoin after a restart: same place in the group, new id.
                    let (seq, m) = group.by_id.remove(&old).expect("found above");
                    member_id = format!("{inst}-{}", uuid::Uuid::new_v4());
                    group.members.insert(seq, member_id.clone());
                    if group.leader.as_deref() == Some(old.as_str()) {
                        group.leader = Some(member_id.clone());
                    }
                    group.by_id.insert(member_id.clone(), (seq, m));
                }
                Some(old) if member_id == old => {}
                Some(_) => return Err(fail(ResponseError::FencedInstanceId, &req.member_id)),
                None if member_id.is_empty() => {
                    member_id = format!("{inst}-{}", uuid::Uuid::new_v4())
                }
                None => {}
            }
        } else if member_id.is_empty() {
            member_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id {
                group.pending_ids.push(member_id.clone());
                if group.pending_ids.len() > limits.group_max_size.saturating_mul(2) {
                    group.pending_ids.remove(0);
                }
                return Err(fail(ResponseError::MemberIdRequired, &member_id));
            }
        } else if !group.by_id.contains_key(&member_id) {
            match group.pending_ids.iter().position(|p| *p == member_id) {
                Some(i) => {
                    group.pending_ids.remove(i);
                }
                None => return Err(fail(ResponseError::UnknownMemberId, &member_id)),
            }
        }
        if !group.by_id.contains_key(&member_id) && group.by_id.len() >= limits.group_max_size {
            return Err(fail(ResponseError::GroupMaxSizeReached, &member_id));
        }
        let (tx, rx) = flume::bounded(1);
        let known = group.by_id.contains_key(&member_id);
        let unchanged = known
            && group
                .by_id
                .get(&member_id)
                .is_some_and(|(_, m)| m.protocols == req.protocols);
        if !known {
            let seq = group.next_seq;
            group.next_seq += 1;
            group.members.insert(seq, member_id.clone());
            group.by_id.insert(
                member_id.clone(),
                (
                    seq,
                    Member {
                        instance_id: req.instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                        rebalance_timeout: Duration::from_millis(
                            req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64,
                        ),
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        last_seen: now,
                        join_waiter: None,
                        sync_waiter: None,
                    },
                ),
            );
        }
        group.protocol_type = Some(req.protocol_type.clone());
        {
            let (_, m) = group.by_id.get_mut(&member_id).expect("inserted above");
            m.protocols = req.protocols.clone();
            m.last_seen = now;
            m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            m.join_waiter = Some(tx);
        }
        // A known member rejoining a stable group with the same protocols (a static member
        // coming back, or a lost JoinGroup answer) gets the current generation without a
        // rebalance of everyone else.
        if unchanged && group.state == State::Stable {
            let leader = group.leader.clone().unwrap_or_default();
            let members = if leader == member_id {
                group
                    .members()
                    .into_iter()
                    .map(|(i, inst, _, _, md, _)| (i, inst, md))
                    .collect()
            } else {
                Vec::new()
            };
            let (_, m) = group.by_id.get_mut(&member_id).expect("known");
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: None,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    leader,
                    member_id: member_id.clone(),
                    members,
                });
            }
            return Ok(rx);
        }
        group.start_rebalance(now, limits.initial_rebalance_delay);
        group.maybe_complete_join(now, now_ms());
        Ok(rx)
    }

    /// SyncGroup: the leader's assignments are handed to every member.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<(flume::Receiver<SyncResult>, bool), ResponseError> {
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        group.check_instance(member_id, instance_id)?;
        if !group.by_id.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let (tx, rx) = flume::bounded(1);
        let mut became_stable = false;
        match group.state {
            State::PreparingRebalance | State::Empty => {
                return Err(ResponseError::RebalanceInProgress)
            }
            State::Stable => {
                let (_, m) = group.by_id.get_mut(member_id).expect("checked");
                m.last_seen = Instant::now();
                let _ = tx.send(SyncResult {
                    error: None,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    assignment: m.assignment.clone(),
                });
            }
            State::CompletingRebalance => {
                {
                    let (_, m) = group.by_id.get_mut(member_id).expect("checked");
                    m.last_seen = Instant::now();
                    m.sync_waiter = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, (_, m)) in group.by_id.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    group.state = State::Stable;
                    became_stable = true;
                    for (_, m) in group.by_id.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: None,
                                protocol_type: group.protocol_type.clone(),
                                protocol: group.protocol.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
            }
        }
        Ok((rx, became_stable))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get(group_id) {
            g.check_instance(member_id, instance_id)?;
        }
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let state = group.state;
        let current = group.generation;
        let (_, m) = group
            .by_id
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        m.last_seen = Instant::now();
        if generation != current {
            return Err(ResponseError::IllegalGeneration);
        }
        match state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member (by id, or by instance id for static members).
    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        limits: &Limits,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let id = match instance_id {
            Some(inst) => {
                let found = group
                    .by_id
                    .iter()
                    .find(|(_, (_, m))| m.instance_id.as_deref() == Some(inst))
                    .map(|(id, _)| id.clone())
                    .ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && member_id != found {
                    return Err(ResponseError::FencedInstanceId);
                }
                found
            }
            None => member_id.to_string(),
        };
        if !group.by_id.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        group.remove_member(&id);
        let now = Instant::now();
        if group.by_id.is_empty() {
            group.state = State::Empty;
            group.generation += 1;
            group.protocol = None;
            group.leader = None;
            group.empty_since_ms = now_ms();
            group.rebalance_deadline = None;
        } else {
            group.start_rebalance(now, limits.initial_rebalance_delay);
            group.maybe_complete_join(now, now_ms());
        }
        Ok(())
    }

    /// Checks that a commit comes from the current generation (or from a simple,
    /// group-less consumer committing to an empty group).
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let groups = self.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.state == State::Empty {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        group.check_instance(member_id, instance_id)?;
        if !group.by_id.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        // As Kafka: a current-generation member may still commit while the group prepares a
        // rebalance (that is when it commits what it processed); not while assignments are
        // being handed out.
        if group.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    pub fn apply_commits(&self, group_id: &str, commits: &[(String, i32, Committed)]) {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) && groups.len() >= GROUPS_PER_SHARD_MAX {
            return;
        }
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(now_ms()));
        for (t, p, c) in commits {
            group.offsets.insert((t.clone(), *p), c.clone());
        }
    }

    /// Expires sessions, completes due rebalances; returns groups whose expired offsets
    /// were dropped (the caller writes tombstones).
    pub fn sweep(
        &self,
        limits: &Limits,
        offsets_retention: Duration,
    ) -> Vec<(String, Vec<(String, i32)>)> {
        let now = Instant::now();
        let now_ms = now_ms();
        let mut expired_offsets = Vec::new();
        let mut groups = self.groups.borrow_mut();
        for (name, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .by_id
                .iter()
                .filter(|(_, (_, m))| {
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                info!(group = %name, members = ?expired, "session timeout: removing members");
                for id in &expired {
                    group.remove_member(id);
                }
                if group.by_id.is_empty() && group.state != State::PreparingRebalance {
                    group.state = State::Empty;
                    group.generation += 1;
                    group.leader = None;
                    group.protocol = None;
                    group.empty_since_ms = now_ms;
                } else {
                    group.start_rebalance(now, limits.initial_rebalance_delay);
                }
            }
            group.maybe_complete_join(now, now_ms);
            if group.state == State::Empty
                && now_ms - group.empty_since_ms > offsets_retention.as_millis() as i64
            {
                let old: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, c)| now_ms - c.commit_ms > offsets_retention.as_millis() as i64)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !old.is_empty() {
                    for k in &old {
                        group.offsets.remove(k);
                    }
                    expired_offsets.push((name.clone(), old));
                }
            }
        }
        expired_offsets
    }

    /// Replays a `__consumer_offsets` partition into this coordinator.
    pub async fn load(&self, p: &Rc<Partition>) {
        let mut next = p.watermarks().log_start;
        let hw = p.watermarks().high_watermark;
        let mut count = 0usize;
        while next < hw {
            let Ok((batches, _)) = p.fetch(next, LOAD_CHUNK_BYTES).await else {
                break;
            };
            let Some(last) = batches.last() else { break };
            let Ok(h) = sluice_storage::parse_header(last) else {
                break;
            };
            next = h.base_offset + h.last_offset_delta as i64 + 1;
            for b in batches {
                let mut buf = b.clone();
                let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                    warn!(
                        partition = p.index,
                        "undecodable batch in __consumer_offsets; skipped"
                    );
                    continue;
                };
                for r in set.records {
                    self.apply_record(&r);
                    count += 1;
                }
            }
        }
        if count > 0 {
            info!(partition = p.index, records = count, "group state loaded");
        }
    }

    fn apply_record(&self, r: &Record) {
        let Some(key) = r
            .key
            .as_ref()
            .and_then(|k| serde_json::from_slice::<RecordKey>(k).ok())
        else {
            return;
        };
        let mut groups = self.groups.borrow_mut();
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match r
                .value
                .as_ref()
                .and_then(|v| serde_json::from_slice::<Committed>(v).ok())
            {
                Some(c) => {
                    let g = groups.entry(group).or_insert_with(|| Group::new(now_ms()));
                    g.offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            RecordKey::Group { group } => match r
                .value
                .as_ref()
                .and_then(|v| serde_json::from_slice::<GroupValue>(v).ok())
            {
                Some(v) => {
                    let g = groups.entry(group).or_insert_with(|| Group::new(now_ms()));
                    g.protocol_type = v.protocol_type;
                }
                None => {
                    groups.remove(&group);
                }
            },
        }
    }
}

/// Encodes group records (key, value-or-tombstone) as one RecordBatch v2.
fn encode_records(items: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Bytes {
    let ts = now_ms();
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
            key: Some(Bytes::from(k)),
            value: v.map(Bytes::from),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("group records encode");
    buf.freeze()
}

pub fn offset_records(group: &str, commits: &[(String, i32, Option<Committed>)]) -> Bytes {
    encode_records(
        commits
            .iter()
            .map(|(t, p, c)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                (
                    serde_json::to_vec(&key).expect("keys serialize"),
                    c.as_ref()
                        .map(|c| serde_json::to_vec(c).expect("values serialize")),
                )
            })
            .collect(),
    )
}

pub fn group_record(group: &str, protocol_type: Option<Option<String>>) -> Bytes {
    let key = RecordKey::Group {
        group: group.to_string(),
    };
    encode_records(vec![(
        serde_json::to_vec(&key).expect("keys serialize"),
        protocol_type.map(|pt| {
            serde_json::to_vec(&GroupValue { protocol_type: pt }).expect("values serialize")
        }),
    )])
}

/// The topics of a ConsumerProtocolSubscription (every version starts with a version and the
/// topic array, never flexible).
fn subscription_topics(meta: &[u8]) -> Option<Vec<String>> {
    let mut b = meta.get(2..)?;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head.to_vec())
    };
    let count = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    // Each name takes at least its 2-byte length, so a hostile count can't over-allocate.
    let mut topics = Vec::with_capacity((count.max(0) as usize).min(b.len() / 2));
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        topics.push(String::from_utf8(take(&mut b, usize::try_from(len).ok()?)?).ok()?);
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash() {
        // "my-group".hashCode() = -1906497762 in Java; abs % 50 = 12.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
    }

    #[test]
    fn group_records_are_one_batch() {
        let b = offset_records(
            "g",
            &[
                (
                    "t".into(),
                    0,
                    Some(Committed {
                        offset: 5,
                        leader_epoch: -1,
                        metadata: None,
                        commit_ms: 1,
                    }),
                ),
                ("t".into(), 1, None),
            ],
        );
        let h = sluice_storage::parse_header(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(sluice_storage::batch_len(&b), Some(b.len() as i64));
    }

    #[test]
    fn subscription_topics_decode_and_refuse_garbage() {
        // version 1, ["a", "bc"], then user data and more (ignored).
        let meta = [0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0, 0, 0, 0];
        assert_eq!(
            super::subscription_topics(&meta),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(super::subscription_topics(&meta[..9]), None);
        assert_eq!(
            super::subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(
            super::subscription_topics(&[0, 1, 0, 0, 0, 1, 0xff, 0xff]),
            None
        );
    }
}
