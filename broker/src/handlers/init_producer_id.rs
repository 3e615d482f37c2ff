//! InitProducerId: hands idempotent producers a fresh id. Transactions come later, so a
//! transactional id is refused rather than half-supported.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use sluice_protocol::{ResponseError, VersionRange};
use tracing::warn;

use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 5);

pub async fn handle(s: &Rc<Shard>, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    // An empty transactional id is malformed (Kafka); any other is a transaction, which
    // Sluice does not offer yet.
    if r.transactional_id.as_ref().is_some_and(|t| t.0.is_empty()) {
        resp.error_code = ResponseError::InvalidRequest.code();
        return resp;
    }
    if r.transactional_id.is_some() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    // An idempotent producer re-initialising keeps its id with a bumped epoch (KIP-360).
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
        resp.producer_id = r.producer_id;
        resp.producer_epoch = r.producer_epoch + 1;
        return resp;
    }
    match s.next_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            warn!(error = %e, "could not allocate a producer id");
            resp.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    resp
}
