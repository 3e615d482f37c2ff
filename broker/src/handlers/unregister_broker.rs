//! UnregisterBroker (`kafka-cluster unregister`, the last step of `sluice cluster
//! decommission`): a broker leaves the cluster for good. Only a broker that holds no
//! replica may leave, so no partition loses a copy it still counts on; move its replicas
//! off first (AlterPartitionReassignments). The seed brokers are the controller group's
//! voters and cannot leave. A decommissioned node id joins again only with an empty data
//! dir, as a new broker: its old data (a stale controller log) never comes back.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::{
    UnregisterBrokerRequest, UnregisterBrokerResponse,
};
use sluice_protocol::kafka_protocol::protocol::StrBytes;
use sluice_protocol::{ResponseError, VersionRange};
use tracing::info;

use super::admin::change_metadata;
use crate::metadata::{MetaRecord, MetadataImage};
use crate::shard::Shard;
use crate::topics::TopicError;

pub const VERSIONS: VersionRange = VersionRange::new(0, 0);

/// Partitions named in the refusal of a broker that still holds replicas.
const HELD_NAMED: usize = 5;

pub async fn handle(s: &Rc<Shard>, r: UnregisterBrokerRequest) -> UnregisterBrokerResponse {
    let id = r.broker_id.0;
    let voters = s
        .run_on(0, |s| async move {
            s.controller().map_or_else(Vec::new, |c| c.voters())
        })
        .await;
    let planned = change_metadata(s, false, move |image| match plan(image, id, &voters) {
        Ok(records) => (records, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    })
    .await;
    let result = planned.unwrap_or_else(|code| {
        Err(TopicError::new(
            code,
            "the controller could not record the change",
        ))
    });
    let mut resp = UnregisterBrokerResponse::default();
    match result {
        Ok(()) => {
            info!(node = id, "broker decommissioned");
            resp.error_message = None;
        }
        Err(e) => {
            resp.error_code = e.code.code();
            resp.error_message = Some(StrBytes::from_string(e.message));
        }
    }
    resp
}

fn plan(image: &MetadataImage, id: i32, voters: &[u64]) -> Result<Vec<MetaRecord>, TopicError> {
    if !image.brokers.contains_key(&id) {
        return Err(TopicError::new(
            ResponseError::BrokerIdNotRegistered,
            format!("Broker ID {id} is not registered."),
        ));
    }
    if voters.contains(&(id as u64)) {
        return Err(TopicError::new(
            ResponseError::InvalidRequest,
            format!(
                "broker {id} is a seed, a voter of the controller group: only brokers that \
                 joined beyond the seeds can be decommissioned"
            ),
        ));
    }
    let held = image.partitions_on(id);
    if !held.is_empty() {
        let named: Vec<String> = held
            .iter()
            .take(HELD_NAMED)
            .map(|(t, p)| format!("{}-{p}", t.name))
            .collect();
        return Err(TopicError::new(
            ResponseError::InvalidRequest,
            format!(
                "broker {id} still holds {} replicas ({}{}): move them to other brokers \
                 first (sluice cluster decommission does)",
                held.len(),
                named.join(", "),
                if held.len() > HELD_NAMED { ", ..." } else { "" }
            ),
        ));
    }
    Ok(vec![MetaRecord::BrokerUnregistered { id }])
}
