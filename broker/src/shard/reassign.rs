//! Moving partitions between brokers (AlterPartitionReassignments). The controller records
//! the target; every broker in the target or the current replicas opens the partition; the
//! replica leading it drives its Raft group to the target voters (`Group::move_voters`:
//! learners catch up, joint consensus switches the voters) and then commits the move's end
//! to the controller, whereupon the replicas left out close and delete the partition. The
//! move survives leader changes: whichever replica leads next takes it on from where the
//! group's membership stands.

use std::rc::Rc;
use std::time::Duration;

use sluice_raft::{MoveStep, ProposeError};
use tracing::{info, warn};
use uuid::Uuid;

use super::Shard;
use crate::metadata::{MetaRecord, MetadataImage};

/// Longest one step waits for the new replicas to catch up before it looks again (at the
/// image, which a newer reassignment or a cancel may have changed).
const CATCH_UP_STEP: Duration = Duration::from_secs(5);
/// Pause after a failed step or an uncommitted completion before trying again.
const REASSIGN_RETRY: Duration = Duration::from_millis(500);

impl Shard {
    /// Moves partition `key` if this shard leads it and it is being reassigned; one task per
    /// partition at a time.
    pub(super) fn drive_reassignment(self: &Rc<Self>, key: (Uuid, i32)) {
        let pending = self
            .metadata()
            .topic_by_id(&key.0)
            .is_some_and(|t| t.reassignments.contains_key(&key.1));
        if !pending || !self.moving.borrow_mut().insert(key) {
            return;
        }
        let s = self.clone();
        glommio::spawn_local(async move {
            s.reassign(key).await;
            s.moving.borrow_mut().remove(&key);
        })
        .detach();
    }

    async fn reassign(self: &Rc<Self>, key: (Uuid, i32)) {
        let (id, index) = key;
        loop {
            if self.shutting_down.get() {
                return;
            }
            let Some(target) = self
                .metadata()
                .topic_by_id(&id)
                .and_then(|t| t.reassignments.get(&index))
                .map(|r| r.target.clone())
            else {
                return;
            };
            let Some(part) = self.local_partition(&id, index) else {
                return;
            };
            if !part.leadership().ready {
                return;
            }
            let voters: Vec<u64> = target.iter().map(|&n| n as u64).collect();
            match part.move_voters(&voters, CATCH_UP_STEP).await {
                Ok(MoveStep::Done) => {
                    let done = target.clone();
                    let plan = move |image: &MetadataImage| {
                        Ok::<_, std::convert::Infallible>(completion(image, id, index, &done))
                    };
                    match self.update_metadata(plan).await {
                        Ok(_) => {
                            info!(topic = %part.topic, partition = index, replicas = ?target, "reassignment completed")
                        }
                        Err(e) => {
                            warn!(topic = %part.topic, partition = index, error = ?e, "reassignment done but not recorded yet");
                            glommio::timer::sleep(REASSIGN_RETRY).await;
                        }
                    }
                }
                Ok(MoveStep::Progress) => {}
                Ok(MoveStep::HandedOver(to)) => {
                    info!(topic = %part.topic, partition = index, to, "leadership handed to a target replica, which moves the partition on");
                    return;
                }
                Err(ProposeError::NotLeader(_)) => return,
                Err(e) => {
                    warn!(topic = %part.topic, partition = index, error = %e, "reassignment step failed; retrying");
                    glommio::timer::sleep(REASSIGN_RETRY).await;
                }
            }
        }
    }
}

/// The record ending the move of `partition` to `target`, unless it has ended or moves
/// elsewhere now.
fn completion(image: &MetadataImage, id: Uuid, partition: i32, target: &[i32]) -> Vec<MetaRecord> {
    let current = image
        .topic_by_id(&id)
        .and_then(|t| t.reassignments.get(&partition));
    match current {
        Some(r) if r.target == target => vec![MetaRecord::ReassignmentCompleted {
            id,
            partition,
            target: target.to_vec(),
        }],
        _ => Vec::new(),
    }
}
