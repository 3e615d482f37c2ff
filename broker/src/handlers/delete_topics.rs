//! DeleteTopics, by name (v1+) or by topic id (v6+). The deletions are committed together;
//! each shard then closes the partitions it owned and deletes their directories before the
//! answer goes out.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use sluice_protocol::kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use sluice_protocol::{ResponseError, VersionRange};
use uuid::Uuid;

use super::admin::{change_metadata, duplicates, error_fields};
use super::topic_name;
use crate::metadata::MetaRecord;
use crate::shard::Shard;
use crate::topics::TopicError;

/// kafka-go sends v1; v6 names topics by name or by id.
pub const VERSIONS: VersionRange = VersionRange::new(1, 6);
/// Topics are given as `topics` (name or id) from this version, before as `topic_names`.
const TOPIC_STATE_VERSION: i16 = 6;

/// One topic to delete, as the client named it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    name: Option<String>,
    id: Uuid,
}

pub async fn handle(s: &Rc<Shard>, r: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let targets: Vec<Target> = if version >= TOPIC_STATE_VERSION {
        r.topics
            .iter()
            .map(|t| Target {
                name: t.name.as_ref().map(|n| n.0.as_str().to_string()),
                id: t.topic_id,
            })
            .collect()
    } else {
        r.topic_names
            .iter()
            .map(|n| Target {
                name: Some(n.0.as_str().to_string()),
                id: Uuid::nil(),
            })
            .collect()
    };
    let dup = duplicates(&targets);
    let plan_targets = targets.clone();
    let planned = change_metadata(s, false, move |image| {
        let mut records = Vec::new();
        let outcomes: Vec<Result<(String, Uuid), TopicError>> = plan_targets
            .iter()
            .zip(dup.iter().copied())
            .map(|(t, dup)| {
                if dup {
                    return Err(TopicError::new(
                        ResponseError::InvalidRequest,
                        "Duplicate topic in the request.",
                    ));
                }
                let topic = match (&t.name, t.id.is_nil()) {
                    (Some(_), false) => {
                        return Err(TopicError::new(
                            ResponseError::InvalidRequest,
                            "You may not specify both topic name and topic id.",
                        ))
                    }
                    (Some(n), true) => image.topic(n).ok_or_else(|| {
                        TopicError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic {n} does not exist"),
                        )
                    })?,
                    (None, _) => image.topic_by_id(&t.id).ok_or_else(|| {
                        TopicError::new(
                            ResponseError::UnknownTopicId,
                            format!("no topic has id {}", t.id),
                        )
                    })?,
                };
                records.push(MetaRecord::TopicDeleted { id: topic.id });
                Ok((topic.name.clone(), topic.id))
            })
            .collect();
        (records, outcomes)
    })
    .await;

    let mut resp = DeleteTopicsResponse::default();
    for (i, t) in targets.into_iter().enumerate() {
        let result = match &planned {
            Ok(outcomes) => outcomes[i].clone(),
            Err(code) => Err(TopicError::new(
                *code,
                "the metadata change could not be made durable",
            )),
        };
        let (error_code, error_message) = error_fields(&result);
        let mut e = DeletableTopicResult::default();
        e.error_code = error_code;
        e.error_message = error_message;
        match result {
            Ok((name, id)) => {
                e.name = Some(topic_name(&name));
                e.topic_id = id;
            }
            Err(_) => {
                e.name = t.name.as_deref().map(topic_name);
                e.topic_id = t.id;
            }
        }
        if version < TOPIC_STATE_VERSION && e.name.is_none() {
            e.name = Some(topic_name(""));
        }
        resp.responses.push(e);
    }
    resp
}
