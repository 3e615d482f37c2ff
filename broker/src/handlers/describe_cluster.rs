//! DescribeCluster: the cluster id, the controller leader, and the registered brokers at
//! their advertised addresses. Fenced brokers (not heard from lately) are left out, as
//! Kafka does, unless a v2 request includes them, flagged.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use sluice_protocol::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::{AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_AUTHORIZED_OPERATIONS};
use super::str_bytes;
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 2);

/// `endpoint_type` of broker listeners (v1+); 2 asks for controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub async fn handle(
    s: &Rc<Shard>,
    r: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = ENDPOINT_BROKERS;
    if version >= 1 && r.endpoint_type != ENDPOINT_BROKERS {
        resp.error_code = ResponseError::MismatchedEndpointType.code();
        resp.error_message = Some(str_bytes(
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of \
             type CONTROLLER",
        ));
        return resp;
    }
    let image = s.metadata();
    resp.cluster_id = str_bytes(&image.cluster_id);
    resp.controller_id = BrokerId(s.controller_id());
    let include_fenced = version >= 2 && r.include_fenced_brokers;
    resp.brokers = s
        .brokers(&image)
        .into_iter()
        .filter(|info| include_fenced || !image.fenced.contains(&info.id))
        .map(|info| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(info.id);
            b.host = str_bytes(&info.host);
            b.port = info.port;
            b.rack = info.rack.map(|r| str_bytes(&r));
            b.is_fenced = image.fenced.contains(&info.id);
            b
        })
        .collect();
    resp.cluster_authorized_operations = if r.include_cluster_authorized_operations {
        CLUSTER_AUTHORIZED_OPERATIONS
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    resp
}
