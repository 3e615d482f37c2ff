//! The classic consumer-group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup and
//! committed offsets).
//!
//! A group belongs to one partition of the internal topic `__consumer_offsets` (Kafka's
//! `abs(hashCode(group)) % partitions`), and the shard owning that partition owns the group:
//! its membership state machine runs there, and its offsets and metadata are records in that
//! partition, so they will replicate with it once Raft lands. State is rebuilt from those
//! records at start-up. Assignment stays client-side: the leader's assignment bytes are
//! relayed to each member unchanged.

//!
//! `group.rs` is one group's state (members, generation, protocol choice); `records.rs` is
//! how groups and offsets are stored in `__consumer_offsets` and replayed from it; this
//! module is the coordinator, the JoinGroup/SyncGroup/Heartbeat/LeaveGroup/commit protocol.

mod group;
mod records;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::ResponseError;
use tracing::info;

use group::Member;
pub use group::{Committed, Group, JoinRequest, JoinResult, MemberInfo, State, SyncResult};
pub use records::{group_record, offset_records, write_group_records};

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

/// Kafka's partition of `__consumer_offsets` for a group: Java's `String.hashCode`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(c as i32);
    }
    // Kafka's Utils.abs maps i32::MIN to 0.
    (if h == i32::MIN { 0 } else { h.abs() }) % partitions.max(1)
}

#[derive(Default)]
pub struct Coordinator {
    pub groups: RefCell<HashMap<String, Group>>,
    /// The `__consumer_offsets` partitions this shard coordinates (it leads them), by
    /// index: loading, or loaded.
    pub(crate) loads: RefCell<HashMap<i32, Load>>,
    /// Tells a load apart from a later one of the same partition.
    pub(crate) load_generation: std::cell::Cell<u64>,
}

/// A coordinated partition's groups: being replayed (by the load of this generation), or
/// served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Load {
    Loading(u64),
    Ready,
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
}
