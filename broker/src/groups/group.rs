//! One consumer group's state: members, generation, the chosen protocol, committed offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::ResponseError;

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

pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    pub(super) join_waiter: Option<flume::Sender<JoinResult>>,
    pub(super) sync_waiter: Option<flume::Sender<SyncResult>>,
}

/// A described member: (member id, instance id, client id, host, metadata, assignment).
pub type MemberInfo = (String, Option<String>, String, String, Bytes, Bytes);

pub struct Group {
    pub state: State,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub(super) leader: Option<String>,
    /// Join order matters: the first member to join leads.
    pub(super) members: BTreeMap<u64, String>,
    pub(super) by_id: HashMap<String, (u64, Member)>,
    pub(super) next_seq: u64,
    pub(super) pending_ids: Vec<String>,
    /// A rebalance completes at this instant even if members are missing.
    pub(super) rebalance_deadline: Option<Instant>,
    /// A rebalance from Empty waits this long for more members (group.initial.rebalance.delay.ms).
    pub(super) join_not_before: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// When the group last became Empty, for offsets.retention.minutes.
    pub(super) empty_since_ms: i64,
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
    pub(super) fn check_instance(
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

    pub(super) fn new(now_ms: i64) -> Self {
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

    pub(super) fn remove_member(&mut self, id: &str) {
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

    pub(super) fn start_rebalance(&mut self, now: Instant, initial_delay: Duration) {
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
    pub(super) fn maybe_complete_join(&mut self, now: Instant, now_ms: i64) {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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
    #[test]
    pub(super) fn subscription_topics_decode_and_refuse_garbage() {
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
