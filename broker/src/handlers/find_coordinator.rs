//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition. Transaction coordinators come with transactions.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::find_coordinator_response::Coordinator;
use sluice_protocol::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{ResponseError, VersionRange};

use super::str_bytes;
use crate::groups::{partition_for, OFFSETS_TOPIC};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 6);
/// v4+ batches several keys in one request.
const BATCHED_VERSION: i16 = 4;
const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    s: &Rc<Shard>,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let image = s.metadata();
    let offsets = image.topic(OFFSETS_TOPIC);
    let keys: Vec<StrBytes> = if version >= BATCHED_VERSION {
        r.coordinator_keys
    } else {
        vec![r.key]
    };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.key = key;
            // The leader of the group's partition, at its registered address; none while
            // the partition has no leader (clients retry).
            let coordinator = offsets
                .filter(|_| r.key_type == KEY_TYPE_GROUP)
                .and_then(|t| {
                    let p = partition_for(c.key.as_str(), t.partitions);
                    s.leadership(&t.id, p).and_then(|l| l.leader)
                })
                .and_then(|leader| image.brokers.get(&(leader as i32)).cloned());
            match coordinator {
                None => {
                    c.error_code = ResponseError::CoordinatorNotAvailable.code();
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                Some(b) => {
                    c.node_id = BrokerId(b.id);
                    c.host = str_bytes(&b.host);
                    c.port = b.port;
                }
            }
            c
        })
        .collect();
    let mut resp = FindCoordinatorResponse::default();
    if version >= BATCHED_VERSION {
        resp.coordinators = coordinators;
    } else if let Some(c) = coordinators.into_iter().next() {
        resp.error_code = c.error_code;
        // Kafka's v1–v3 message is the error's name, "NONE" included.
        if c.error_code == 0 {
            resp.error_message = Some(str_bytes("NONE"));
        }
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}
