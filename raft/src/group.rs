//! One ticker per shard drives the timers of every Raft group on it.
//!
//! openraft's own timer wakes each group about 50 times a second (a tick every fifth of a
//! heartbeat interval): 1,000 idle groups kept a core 88 % busy here. Groups therefore run
//! with openraft's tick off, and the shard's `Ticker` wakes once per heartbeat interval: a
//! leader sends its heartbeats (the transport can coalesce those of many groups to one peer),
//! and a follower that has not heard from a leader within its election timeout — tracked
//! here, from the messages `Group::serve` answers — starts a pre-vote election. An idle
//! follower costs a clock comparison per interval. The ticker also balances leadership: a
//! leader that is not its partition's preferred replica hands over to it once it is back and
//! caught up, so restarts do not leave one broker leading everything.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesResponse;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{AsyncRuntime, RaftMetrics, ServerState};
use openraft_rt::WatchReceiver;
use rand::RngExt;
use tracing::warn;

use crate::network::{serve, PartitionRaftNode, RaftRequest, RaftResponse};
use crate::runtime::GlommioRuntime;
use crate::types::{AppliedBatch, Batch, PartitionRaft};

/// Who leads a group as this replica sees it, and in which term (the Kafka leader epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<u64>,
    pub term: u64,
    /// This replica leads and has applied its own first entry of the term, so everything
    /// committed before the term is applied: it may take writes.
    pub ready: bool,
    /// Counts changes of the leader's out-of-sync set (`Group::out_of_sync`), so a listener
    /// hears of each.
    pub isr_changes: u32,
}

/// Why a proposed write was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Leadership moved (or the term ended) before the write was committed.
    #[error("not the leader of term {0}")]
    NotLeader(u64),
    /// The group stopped.
    #[error("Raft group stopped: {0}")]
    Stopped(String),
}

/// Why a requested leadership transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("this replica does not lead the group")]
    NotLeader,
    #[error("replica {0} is not a voter of the group")]
    NotVoter(u64),
    /// The target has not answered this leader lately: it is down, paused or cut off.
    #[error("replica {0} has not answered the leader within {1:?}")]
    Unreachable(u64, Duration),
    /// The target did not take over in time (it may still).
    #[error("replica {0} did not take over within {1:?}")]
    TimedOut(u64, Duration),
    #[error("Raft group stopped: {0}")]
    Stopped(String),
}

/// Where moving a group to new voters stands after one `move_voters` step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// The voters are the target, uniformly, and no other replica is a member.
    Done,
    /// A step was taken, or the new replicas are still catching up: step again.
    Progress,
    /// This leader was not among the targets: it handed leadership to this one of them,
    /// which takes the move on.
    HandedOver(u64),
}

/// A replica being added counts as caught up for promotion to voter when it is at most
/// this many entries behind the leader (under steady writes it is never exactly level).
const PROMOTE_LAG_ENTRIES: u64 = 64;

/// Reports leadership changes of a group (called from its shard's ticker).
pub type LeadershipListener = Box<dyn Fn(Leadership)>;

/// A Raft group replica with the clock its ticker needs.
pub struct Group {
    raft: PartitionRaftNode,
    metrics: WatchReceiverOf<PartitionRaft, RaftMetrics<PartitionRaft>>,
    /// When a leader last reached this replica (or the replica started).
    contact: Cell<Instant>,
    /// This replica's current election timeout, drawn from [min, 2 × min).
    timeout: Cell<Duration>,
    election_min: Duration,
    /// The replica that should lead when it can (the first of the partition's replicas), and
    /// how long this replica must have led before it hands leadership over.
    preferred: Cell<Option<u64>>,
    balance_after: Duration,
    /// When this replica's current term as leader started, seen by the ticker.
    leading_since: Cell<Option<Instant>>,
    /// Until when this replica stands again at every tick while no leader is known: a new
    /// group's preferred replica, whose first votes may reach peers that have not opened the
    /// group yet (they apply the same metadata a moment later).
    eager_until: Cell<Option<Instant>>,
    /// `replica.lag.time.max.ms`: a voter that has not caught up with the leader for this
    /// long is out of sync.
    replica_lag: Cell<Duration>,
    /// As leader, in `sync_term`: when each voter last caught up, and the leader's last log
    /// index at the previous tick, which a voter must reach to count as caught up (Kafka's
    /// rule: a follower is caught up when it has what the leader had a fetch earlier; here
    /// as of the voter's last answer to the leader).
    caught_up: RefCell<std::collections::HashMap<u64, Instant>>,
    end_at_last_tick: Cell<Option<u64>>,
    sync_term: Cell<Option<u64>>,
    out_of_sync: RefCell<Vec<u64>>,
    isr_changes: Cell<u32>,
    /// The leadership last reported to `listener`.
    reported: Cell<Option<Leadership>>,
    listener: RefCell<Option<LeadershipListener>>,
    /// As leader: what the last heartbeat told, and the ticks since it went out.
    heartbeat_told: Cell<Option<Told>>,
    ticks_since_heartbeat: Cell<u32>,
}

/// (term, last log index, commit index) as a heartbeat tells them.
type Told = (u64, Option<u64>, Option<u64>);

/// A leader with nothing new to tell (no entry or commit since its last heartbeat, every
/// voter holding its whole log) heartbeats every this many ticks instead of every tick: a
/// third of the minimum election timeout, so a follower still hears from it three times
/// before it could stand, and the lease is renewed well within its length. Idle groups
/// are what a broker with many partitions spends its idle CPU on.
const IDLE_HEARTBEAT_TICKS: u32 = 3;

/// A leader hands leadership to the preferred replica after leading this many election
/// timeouts, once that replica has caught up: long enough that a replica flapping up and down
/// does not drag leadership with it (Kafka checks leader imbalance every 300 s).
pub const LEADER_BALANCE_ELECTION_TIMEOUTS: u32 = 10;

/// A write is refused when less than this fraction of the minimum election timeout is left
/// of the leader's lease (a healthy leader renews it every heartbeat, a tenth of it).
const LEASE_MARGIN_FRACTION: u32 = 4;

/// Kafka's default `replica.lag.time.max.ms`.
pub const REPLICA_LAG_TIME_MAX_DEFAULT: Duration = Duration::from_secs(30);

/// A new group's preferred replica stands this many times within one election timeout while
/// no leader is known.
const EAGER_ROUNDS: u32 = 4;

impl Group {
    /// Wraps a Raft built with `group_config(election_min)` (openraft's tick off).
    pub fn new(raft: PartitionRaftNode, election_min: Duration) -> Rc<Self> {
        let metrics = raft.metrics();
        let g = Rc::new(Group {
            raft,
            metrics,
            contact: Cell::new(Instant::now()),
            timeout: Cell::new(election_min),
            election_min,
            preferred: Cell::new(None),
            balance_after: election_min * LEADER_BALANCE_ELECTION_TIMEOUTS,
            leading_since: Cell::new(None),
            eager_until: Cell::new(None),
            replica_lag: Cell::new(REPLICA_LAG_TIME_MAX_DEFAULT),
            caught_up: RefCell::new(std::collections::HashMap::new()),
            end_at_last_tick: Cell::new(None),
            sync_term: Cell::new(None),
            out_of_sync: RefCell::new(Vec::new()),
            isr_changes: Cell::new(0),
            reported: Cell::new(None),
            listener: RefCell::new(None),
            heartbeat_told: Cell::new(None),
            ticks_since_heartbeat: Cell::new(0),
        });
        g.draw_timeout();
        g
    }

    pub fn raft(&self) -> &PartitionRaftNode {
        &self.raft
    }

    /// This replica's view of the group's leadership now.
    pub fn leadership(&self) -> Leadership {
        let m = self.metrics.borrow_watched();
        let leading = m.state == ServerState::Leader;
        Leadership {
            leader: m.current_leader,
            term: m.current_term,
            ready: leading
                && m.last_applied
                    .is_some_and(|a| a.leader_id.term == m.current_term),
            isr_changes: self.isr_changes.get(),
        }
    }

    /// The only voter is this replica: no lease to keep.
    fn alone(&self, m: &RaftMetrics<PartitionRaft>) -> bool {
        let mut voters = m.membership_config.membership().voter_ids();
        voters.next() == Some(m.id) && voters.next().is_none()
    }

    fn within_lease(&self, since_quorum: Duration) -> bool {
        since_quorum + self.election_min / LEASE_MARGIN_FRACTION < self.election_min * 2
    }

    /// As leader: whether openraft will take a write now. It refuses writes once no quorum
    /// has answered the leader for its lease (the maximum election timeout): after the
    /// leader was cut off or paused. This answers with a margin, so a write it lets through
    /// is not refused a moment later.
    pub fn lease_valid(&self) -> bool {
        let m = self.metrics.borrow_watched();
        if m.state != ServerState::Leader {
            return false;
        }
        self.alone(&m)
            || m.last_quorum_acked
                .as_ref()
                .is_some_and(|at| self.within_lease(at.elapsed()))
    }

    /// As leader: the voters that have not caught up within `replica.lag.time.max.ms`, in
    /// id order (Kafka's ISR is the other voters). Empty on a replica that does not lead.
    pub fn out_of_sync(&self) -> Vec<u64> {
        self.out_of_sync.borrow().clone()
    }

    /// Sets `replica.lag.time.max.ms`.
    pub fn set_replica_lag(&self, lag: Duration) {
        self.replica_lag.set(lag);
    }

    /// At a leader's tick: notes which voters caught up since the last one, and recomputes
    /// the out-of-sync set. A new term starts with every voter in sync, as a new Kafka
    /// leader starts from the ISR it was given.
    fn track_sync(&self, now: Instant) {
        let m = self.metrics.borrow_watched();
        let target = self.end_at_last_tick.replace(m.last_log_index);
        let mut caught = self.caught_up.borrow_mut();
        // Walked twice rather than collected: this runs on every tick of every group.
        let voters = || {
            m.membership_config
                .membership()
                .voter_ids()
                .filter(|&v| v != m.id)
        };
        let new_term = self.sync_term.replace(Some(m.current_term)) != Some(m.current_term);
        if new_term {
            caught.clear();
        }
        // The leader's end a tick ago (now, on the first tick of the term).
        let wanted = if new_term { m.last_log_index } else { target };
        caught.retain(|v, _| voters().any(|x| x == *v));
        let replication = m.replication.as_ref();
        for v in voters() {
            let matched = replication
                .and_then(|r| r.get(&v).copied().flatten())
                .map(|l| l.index);
            // When the voter last answered: a stopped one holding the whole log of an idle
            // partition is caught up, but only as of its last answer.
            let answered = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&v).copied().flatten())
                .map(|at| *at);
            let entry = caught.entry(v).or_insert(now);
            if let Some(at) = answered.filter(|_| matched >= wanted) {
                *entry = (*entry).max(at.min(now));
            }
        }
        let lag = self.replica_lag.get();
        let mut lagging: Vec<u64> = caught
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= lag)
            .map(|(v, _)| *v)
            .collect();
        lagging.sort_unstable();
        drop(caught);
        self.set_out_of_sync(lagging);
    }

    fn set_out_of_sync(&self, lagging: Vec<u64>) {
        if *self.out_of_sync.borrow() != lagging {
            *self.out_of_sync.borrow_mut() = lagging;
            self.isr_changes.set(self.isr_changes.get().wrapping_add(1));
        }
    }

    /// Calls `listener` with the leadership as the ticker sees it, each time it changes.
    pub fn on_leadership_change(&self, listener: LeadershipListener) {
        *self.listener.borrow_mut() = Some(listener);
    }

    fn report_leadership(&self) {
        let now = self.leadership();
        if self.reported.get() != Some(now) {
            self.reported.set(Some(now));
            if let Some(l) = self.listener.borrow().as_ref() {
                l(now);
            }
        }
    }

    /// Waits (at most `timeout`) until this replica leads and may take writes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let ready = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.last_applied
                            .is_some_and(|a| a.leader_id.term == m.current_term)
                },
                "leader ready",
            )
            .await
            .is_ok();
        self.report_leadership();
        ready
    }

    /// Waits (at most `timeout`) until this replica has applied every entry it knows to be
    /// committed (after a restart: up to the commit point it saved, if its store saves one).
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.last_applied >= m.local_committed,
                "applied what is committed",
            )
            .await
            .is_ok()
    }

    /// Starts an election now, and again at each tick for one election timeout while no
    /// leader is known (a new group's preferred replica, not waiting out a timeout).
    pub async fn elect_now(&self) {
        let now = Instant::now();
        self.contact.set(now);
        self.eager_until.set(Some(now + self.election_min));
        if let Err(e) = self.raft.trigger().elect(false).await {
            warn!(error = %e, "cannot start an election");
        }
    }

    /// Starts an election now if this replica is its group's only voter (a one-node
    /// cluster need not wait out an election timeout after a restart).
    pub async fn elect_if_alone(&self) {
        let alone = {
            let m = self.metrics.borrow_watched();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            voters == [m.id] && m.state != ServerState::Leader
        };
        if alone {
            if let Err(e) = self.raft.trigger().elect(false).await {
                warn!(error = %e, "cannot start an election");
            }
        }
    }

    /// Proposes `batch` as leader of `term`: it is queued behind every earlier proposal, in
    /// order, and refused if the term has ended by the time Raft takes it. With `respond`,
    /// the returned future resolves once the batch is committed and applied.
    pub async fn propose(
        &self,
        term: u64,
        batch: bytes::Bytes,
        respond: bool,
    ) -> Result<
        Option<impl std::future::Future<Output = Result<AppliedBatch, ProposeError>>>,
        ProposeError,
    > {
        let leader = openraft::type_config::alias::CommittedLeaderIdOf::<PartitionRaft>::new(term);
        let write = self.raft.write(Batch(batch)).with_leader(leader);
        if !respond {
            write
                .await
                .map_err(|e| ProposeError::Stopped(e.to_string()))?;
            return Ok(None);
        }
        let (responder, rx) = openraft::impls::ProgressResponder::complete_only();
        write
            .responder(responder)
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        Ok(Some(async move {
            match rx.await {
                // openraft keys a proposal's responder by log index only: a replica that lost
                // leadership with the proposal in its log can see another term's entry applied
                // at that index, and that answer is not this proposal's.
                Ok(Ok(r)) if r.log_id.leader_id.term != term => {
                    warn!(term, applied = %r.log_id, "a proposal was answered by another term's entry");
                    Err(ProposeError::NotLeader(term))
                }
                Ok(Ok(r)) => Ok(r.data),
                Ok(Err(_)) => Err(ProposeError::NotLeader(term)),
                Err(e) => Err(ProposeError::Stopped(e.to_string())),
            }
        }))
    }

    /// The group's voters, as this replica's membership config has them.
    pub fn voters(&self) -> Vec<u64> {
        self.metrics
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Whether `node` is in the group's membership, as a voter or a learner.
    pub fn is_member(&self, node: u64) -> bool {
        let m = self.metrics.borrow_watched();
        let membership = m.membership_config.membership();
        membership.voter_ids().any(|v| v == node) || membership.learner_ids().any(|l| l == node)
    }

    /// As leader: adds `node` as a learner (it receives the log, it does not vote), without
    /// waiting for it to catch up. A member already is left as it is.
    pub async fn add_learner(&self, node: u64) -> Result<(), ProposeError> {
        if self.is_member(node) {
            return Ok(());
        }
        self.raft
            .add_learner(node, openraft::EmptyNode {}, false)
            .await
            .map(|_| ())
            .map_err(|e| ProposeError::Stopped(format!("cannot add learner {node}: {e}")))
    }

    /// As leader: removes learner `node` from the group (a broker leaving the cluster);
    /// whether it was one. A voter is left as it is.
    pub async fn remove_learner(&self, node: u64) -> Result<bool, ProposeError> {
        let learner = {
            let m = self.metrics.borrow_watched();
            let learner = m
                .membership_config
                .membership()
                .learner_ids()
                .any(|l| l == node);
            learner
        };
        if !learner {
            return Ok(false);
        }
        let nodes = std::collections::BTreeSet::from([node]);
        self.raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(nodes), false)
            .await
            .map(|_| true)
            .map_err(|e| ProposeError::Stopped(format!("cannot remove learner {node}: {e}")))
    }

    /// As leader: one step of moving the group to the voters `target` (preferred first), as
    /// Raft's membership change does it: the replicas not yet members join as learners and
    /// catch up (waiting at most `catch_up` here), then joint consensus switches the voters,
    /// and the replicas left out are removed. A leader outside the target first makes the
    /// targets voters beside itself and hands leadership to one of them, so a group never
    /// commits under a leader that is not a voter.
    pub async fn move_voters(
        &self,
        target: &[u64],
        catch_up: Duration,
    ) -> Result<MoveStep, ProposeError> {
        use std::collections::BTreeSet;
        let goal: BTreeSet<u64> = target.iter().copied().collect();
        let (me, term, uniform, voters, members) = {
            let m = self.metrics.borrow_watched();
            if m.state != ServerState::Leader {
                return Err(ProposeError::NotLeader(m.current_term));
            }
            let membership = m.membership_config.membership();
            let configs = membership.get_joint_config();
            let uniform = (configs.len() == 1).then(|| configs[0].clone());
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let members: BTreeSet<u64> = voters
                .iter()
                .copied()
                .chain(membership.learner_ids())
                .collect();
            (m.id, m.current_term, uniform, voters, members)
        };
        let failed = |what: &str, e: String| ProposeError::Stopped(format!("{what}: {e}"));
        if uniform.as_ref() == Some(&goal) {
            let strays: BTreeSet<u64> = members.difference(&goal).copied().collect();
            if strays.is_empty() {
                return Ok(MoveStep::Done);
            }
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(strays), false)
                .await
                .map_err(|e| failed("removing replicas", e.to_string()))?;
            return Ok(MoveStep::Progress);
        }
        for &n in goal.difference(&members) {
            self.raft
                .add_learner(n, openraft::EmptyNode {}, false)
                .await
                .map_err(|e| failed(&format!("adding replica {n}"), e.to_string()))?;
        }
        let joining: Vec<u64> = goal.difference(&voters).copied().collect();
        let caught_up = self
            .raft
            .wait(Some(catch_up))
            .metrics(
                |m| {
                    let end = m.last_log_index.unwrap_or(0);
                    joining.iter().all(|n| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(n).copied().flatten())
                            .is_some_and(|l| l.index + PROMOTE_LAG_ENTRIES >= end)
                    })
                },
                "new replicas caught up",
            )
            .await
            .is_ok();
        if !caught_up {
            return Ok(MoveStep::Progress);
        }
        if goal.contains(&me) {
            self.raft
                .change_membership(openraft::ChangeMembers::ReplaceAllVoters(goal), false)
                .await
                .map_err(|e| failed("switching voters", e.to_string()))?;
            return Ok(MoveStep::Progress);
        }
        if !joining.is_empty() {
            let joining = joining.into_iter().collect();
            self.raft
                .change_membership(openraft::ChangeMembers::AddVoterIds(joining), true)
                .await
                .map_err(|e| failed("promoting replicas", e.to_string()))?;
            return Ok(MoveStep::Progress);
        }
        // Every target is a voter beside this leader: the first one answering takes over.
        let mut last = TransferError::NotLeader;
        for &to in target {
            match self.transfer_leadership(to, catch_up).await {
                Ok(()) => return Ok(MoveStep::HandedOver(to)),
                Err(TransferError::NotLeader) => return Err(ProposeError::NotLeader(term)),
                Err(e) => last = e,
            }
        }
        warn!(error = %last, "no target replica took leadership over");
        Ok(MoveStep::Progress)
    }

    /// As leader: hands leadership to voter `to` (an operator's ElectLeaders) and waits, at
    /// most `timeout`, until this replica sees it lead. `to` must have answered this leader
    /// within an election timeout; openraft makes it stand once its log holds everything
    /// this leader had, so no committed entry is left behind.
    pub async fn transfer_leadership(
        &self,
        to: u64,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        {
            let m = self.metrics.borrow_watched();
            if m.state != ServerState::Leader {
                return Err(TransferError::NotLeader);
            }
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == to)
            {
                return Err(TransferError::NotVoter(to));
            }
            let heard = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&to).copied().flatten())
                .is_some_and(|at| at.elapsed() < self.election_min);
            if !heard {
                return Err(TransferError::Unreachable(to, self.election_min));
            }
        }
        self.leading_since.set(None);
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| TransferError::Stopped(e.to_string()))?;
        let moved = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await
            .is_ok();
        self.report_leadership();
        moved
            .then_some(())
            .ok_or(TransferError::TimedOut(to, timeout))
    }

    /// Sets the replica leadership moves back to after failovers (leadership balancing).
    pub fn set_preferred_leader(&self, node: Option<u64>) {
        self.preferred.set(node);
    }

    /// The preferred replica, if it should take over now: this replica has led long enough
    /// and the preferred one holds everything this one has.
    fn hand_over_to(&self, now: Instant) -> Option<u64> {
        let since = self.leading_since.get().unwrap_or(now);
        self.leading_since.set(Some(since));
        let m = self.metrics.borrow_watched();
        let p = self.preferred.get().filter(|&p| p != m.id)?;
        let caught_up = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&p).copied().flatten())
            .is_some_and(|matched| Some(matched.index) == m.last_log_index);
        (now.duration_since(since) >= self.balance_after && caught_up).then_some(p)
    }

    /// As leader at a tick: whether to heartbeat now (see `IDLE_HEARTBEAT_TICKS`).
    fn heartbeat_due(&self) -> bool {
        let m = self.metrics.borrow_watched();
        let told = (
            m.current_term,
            m.last_log_index,
            m.cluster_committed.as_ref().map(|c| c.index),
        );
        let all_hold_it = m.replication.as_ref().is_some_and(|r| {
            r.iter()
                .all(|(_, matched)| matched.as_ref().map(|l| l.index) == m.last_log_index)
        });
        let ticks = self.ticks_since_heartbeat.get() + 1;
        let idle = all_hold_it && self.heartbeat_told.get() == Some(told);
        if idle && ticks < IDLE_HEARTBEAT_TICKS {
            self.ticks_since_heartbeat.set(ticks);
            return false;
        }
        self.heartbeat_told.set(Some(told));
        self.ticks_since_heartbeat.set(0);
        true
    }

    fn draw_timeout(&self) {
        let min = self.election_min.as_micros() as u64;
        let t = rand::rng().random_range(min..2 * min);
        self.timeout.set(Duration::from_micros(t));
    }

    /// Answers a message from a peer replica; an append or snapshot a leader got accepted
    /// counts as contact.
    pub async fn serve(&self, request: RaftRequest) -> RaftResponse {
        let from_leader = matches!(
            request,
            RaftRequest::Append(_) | RaftRequest::Snapshot { .. }
        );
        let response = serve(&self.raft, request).await;
        let accepted = match &response {
            RaftResponse::Append(AppendEntriesResponse::HigherVote(_)) => false,
            RaftResponse::Append(_) | RaftResponse::Snapshot(_) => true,
            _ => false,
        };
        if from_leader && accepted {
            self.contact.set(Instant::now());
        }
        response
    }

    async fn tick(&self, now: Instant) {
        let (state, own, voters_alone, leaderless) = {
            let m = self.metrics.borrow_watched();
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (m.state, m.id, voters == [m.id], m.current_leader.is_none())
        };
        let eager = match self.eager_until.get() {
            Some(until) if now < until && leaderless => {
                // Not at every tick: a round's votes must have time to come back, or each
                // new term discards the last one's answers.
                now.duration_since(self.contact.get()) >= self.election_min / EAGER_ROUNDS
            }
            Some(_) => {
                self.eager_until.set(None);
                false
            }
            None => false,
        };
        if state == ServerState::Leader {
            self.track_sync(now);
        } else {
            self.leading_since.set(None);
            self.sync_term.set(None);
            self.end_at_last_tick.set(None);
            self.set_out_of_sync(Vec::new());
        }
        self.report_leadership();
        let result = match state {
            // A leader with no one to tell needs no heartbeat.
            ServerState::Leader if voters_alone => Ok(()),
            ServerState::Leader => match self.hand_over_to(now) {
                Some(p) => {
                    self.leading_since.set(None);
                    self.raft.trigger().transfer_leader(p).await
                }
                None if self.heartbeat_due() => self.raft.trigger().heartbeat().await,
                None => Ok(()),
            },
            ServerState::Shutdown | ServerState::Learner => Ok(()),
            ServerState::Follower | ServerState::Candidate => {
                // The only voter of its group has no one to wait for.
                let due = voters_alone
                    || eager
                    || now.duration_since(self.contact.get()) >= self.timeout.get();
                if !due {
                    return;
                }
                self.contact.set(now);
                self.draw_timeout();
                self.raft.trigger().elect(!voters_alone).await
            }
        };
        if let Err(e) = result {
            warn!(node = own, error = %e, "Raft group stopped; its ticker drops it");
        }
    }
}

/// The shard's timer for all its groups.
pub struct Ticker {
    groups: RefCell<Vec<Weak<Group>>>,
    interval: Duration,
}

impl Ticker {
    /// Wakes every `election_min / 10`, the heartbeat interval of `group_config`.
    pub fn new(election_min: Duration) -> Rc<Self> {
        let interval = crate::config::heartbeat_interval(election_min);
        Rc::new(Ticker {
            groups: RefCell::new(Vec::new()),
            interval,
        })
    }

    /// Drives `g` until it is dropped.
    pub fn register(&self, g: &Rc<Group>) {
        self.groups.borrow_mut().push(Rc::downgrade(g));
    }

    /// Runs on the shard until the ticker itself is dropped elsewhere.
    pub fn spawn(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        GlommioRuntime::spawn(async move {
            loop {
                let Some(t) = weak.upgrade() else { return };
                let interval = t.interval;
                let live: Vec<Rc<Group>> = {
                    let mut groups = t.groups.borrow_mut();
                    groups.retain(|g| g.strong_count() > 0);
                    groups.iter().filter_map(Weak::upgrade).collect()
                };
                drop(t);
                let now = Instant::now();
                for g in live {
                    g.tick(now).await;
                }
                GlommioRuntime::sleep(interval).await;
            }
        });
    }
}
