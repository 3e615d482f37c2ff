//! Broker liveness (Kafka's broker heartbeats and fencing). Every broker tells the
//! controller leader it is alive every `broker.heartbeat.interval.ms`; the leader fences a
//! broker it has not heard from for `broker.session.timeout.ms` (`BrokerFenced`), so no
//! new replica is placed on it, and unfences it when it is heard from again.
//!
//! Fencing only steers placement: who leads a partition stays Raft's business, so a fenced
//! broker that still leads something (cut off from the controller alone) keeps serving it.
//! What the leader heard lives in its memory only; a new leader starts every broker's
//! session when it takes over, so a change of controller leader never fences anyone early.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::{call_controller_within, BrokerMessage, BrokerReply, Controller};
use crate::metadata::{MetaRecord, MetadataImage};
use crate::shard::Shard;

/// Failed heartbeats in a row after which a broker logs that it cannot reach the leader.
const FAILURES_LOGGED_EVERY: u32 = 15;

#[derive(Default)]
pub(super) struct Liveness {
    /// When the leader last heard from each broker.
    heard: RefCell<HashMap<i32, Instant>>,
    /// The term in which this broker leads the controller, and when it was first seen
    /// leading in it: no session under this leader is older.
    leading: Cell<Option<(u64, Instant)>>,
}

impl Controller {
    /// Starts this broker's heartbeats and, while it leads the controller, the fencing of
    /// brokers that stopped sending theirs.
    pub fn start_heartbeats(self: &Rc<Self>, shard: &Rc<Shard>) {
        let (c, s) = (self.clone(), shard.clone());
        glommio::spawn_local(async move {
            let mut failures = 0u32;
            while !s.shutting_down.get() {
                if c.heartbeat_round(&s).await {
                    failures = 0;
                } else {
                    failures += 1;
                    if failures.is_multiple_of(FAILURES_LOGGED_EVERY) {
                        warn!(failures, "heartbeats do not reach the controller leader");
                    }
                }
                glommio::timer::sleep(s.config.broker_heartbeat_interval()).await;
            }
        })
        .detach();
    }

    /// One heartbeat: to the leader, or (on the leader) noted here and followed by the
    /// fencing of silent brokers. False when no leader took it.
    async fn heartbeat_round(&self, shard: &Rc<Shard>) -> bool {
        let me = shard.config.node_id;
        let Some(p) = self.partition() else {
            return false;
        };
        let l = p.leadership();
        if l.ready && l.leader == Some(me as u64) {
            if !matches!(self.liveness.leading.get(), Some((term, _)) if term == l.term) {
                self.liveness.leading.set(Some((l.term, Instant::now())));
            }
            let noted = matches!(self.heard_from(shard, me).await, BrokerReply::Noted);
            self.fence_silent(shard).await;
            return noted;
        }
        self.liveness.leading.set(None);
        let Some(leader) = l.leader else {
            return false;
        };
        let msg = BrokerMessage::Heartbeat { node: me };
        let timeout = shard.config.broker_heartbeat_interval();
        match call_controller_within(shard, leader, &msg, timeout).await {
            BrokerReply::Noted => true,
            other => {
                debug!(leader, reply = ?other, "heartbeat not taken");
                false
            }
        }
    }

    /// On the leader: broker `node` is alive; unfences it if it was fenced.
    pub(super) async fn heard_from(&self, shard: &Rc<Shard>, node: i32) -> BrokerReply {
        if self.leader() != Some(shard.config.node_id as u64) {
            return BrokerReply::NotLeader;
        }
        self.liveness
            .heard
            .borrow_mut()
            .insert(node, Instant::now());
        if !self.applier.image.borrow().fenced.contains(&node) {
            return BrokerReply::Noted;
        }
        let unfence = |img: &MetadataImage| {
            Ok::<_, std::convert::Infallible>(if img.fenced.contains(&node) {
                vec![MetaRecord::BrokerUnfenced { id: node }]
            } else {
                Vec::new()
            })
        };
        match self.change(shard, unfence).await {
            Ok(()) => {
                info!(node, "broker heard from again: unfenced");
                BrokerReply::Noted
            }
            Err(e) => BrokerReply::Failed(format!("cannot unfence node {node}: {e}")),
        }
    }

    /// On the leader: fences every registered broker it has not heard from for
    /// `broker.session.timeout.ms` (counting from when it took the lead at the earliest).
    async fn fence_silent(&self, shard: &Rc<Shard>) {
        let Some((_, since)) = self.liveness.leading.get() else {
            return;
        };
        let me = shard.config.node_id;
        let session = shard.config.broker_session_timeout();
        let silent = |img: &MetadataImage| -> Vec<i32> {
            let heard = self.liveness.heard.borrow();
            img.brokers
                .keys()
                .copied()
                .filter(|id| *id != me && !img.fenced.contains(id))
                .filter(|id| {
                    let last = heard.get(id).map_or(since, |t| (*t).max(since));
                    last.elapsed() >= session
                })
                .collect()
        };
        if silent(&self.applier.image.borrow()).is_empty() {
            return;
        }
        let fence = |img: &MetadataImage| {
            Ok::<_, std::convert::Infallible>(
                silent(img)
                    .into_iter()
                    .map(|id| MetaRecord::BrokerFenced { id })
                    .collect(),
            )
        };
        match self.change(shard, fence).await {
            Ok(()) => info!(
                fenced = ?self.applier.image.borrow().fenced,
                timeout_ms = session.as_millis() as u64,
                "brokers not heard from within broker.session.timeout.ms are fenced"
            ),
            Err(e) => warn!(error = %e, "cannot fence silent brokers"),
        }
    }
}
