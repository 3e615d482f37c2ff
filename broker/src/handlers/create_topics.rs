//! CreateTopics: every topic of the request gets its own result. The topics that pass are
//! committed together in one metadata change, and every shard has opened their partitions
//! when the answer goes out, so they are writable at once.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use sluice_protocol::kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use sluice_protocol::kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_protocol::{ResponseError, VersionRange};
use uuid::Uuid;

use super::admin::{change_metadata, duplicates, error_fields, topic_config_entries};
use super::str_bytes;
use crate::config::Config;
use crate::metadata::MetaRecord;
use crate::shard::Shard;
use crate::topics::{plan_create, Layout, PartitionBudget, TopicError};

/// kafka-go's `Conn` sends v2; v5 adds the created topic's settings to the answer, v7 its id.
pub const VERSIONS: VersionRange = VersionRange::new(2, 7);

/// `num_partitions` / `replication_factor` meaning "the broker's default" (and what both
/// must be when the client gives replica assignments).
const USE_DEFAULT: i32 = -1;

/// A topic that passed the request-level checks, ready for `plan_create`.
#[derive(Clone, Debug)]
struct Wanted {
    name: String,
    layout: Layout,
    configs: BTreeMap<String, String>,
}

/// What the answer reports for a topic that would be (or was) created.
#[derive(Clone, Debug)]
struct Created {
    id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
}

pub async fn handle(s: &Rc<Shard>, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let names: Vec<String> = r
        .topics
        .iter()
        .map(|t| t.name.0.as_str().to_string())
        .collect();
    let dup = duplicates(&names);
    let checked: Vec<Result<Wanted, TopicError>> = r
        .topics
        .iter()
        .zip(&dup)
        .map(|(t, &dup)| check(&s.config, t, dup))
        .collect();
    let wanted: Vec<Option<Wanted>> = checked.iter().map(|c| c.as_ref().ok().cloned()).collect();
    let validate_only = r.validate_only;
    let (per_shard, shards) = (s.config.topic_partitions_per_shard, s.count);
    let planned = change_metadata(s, validate_only, move |image| {
        let mut budget = PartitionBudget::new(image, per_shard, shards);
        let mut records = Vec::new();
        let outcomes: Vec<Option<Result<Created, TopicError>>> = wanted
            .iter()
            .map(|w| {
                let w = w.clone()?;
                Some(
                    plan_create(image, &mut budget, &w.name, w.layout, w.configs).map(|record| {
                        let created = match &record {
                            MetaRecord::TopicCreated {
                                id,
                                partitions,
                                configs,
                                assignments,
                                ..
                            } => Created {
                                id: if validate_only { Uuid::nil() } else { *id },
                                partitions: *partitions,
                                replication_factor: assignments.first().map_or(0, |r| r.len())
                                    as i16,
                                configs: configs.clone(),
                            },
                            other => unreachable!("plan_create returned {other:?}"),
                        };
                        records.push(record);
                        created
                    }),
                )
            })
            .collect();
        (records, outcomes)
    })
    .await;

    let mut resp = CreateTopicsResponse::default();
    for (i, (t, c)) in r.topics.into_iter().zip(checked).enumerate() {
        let result: Result<Created, TopicError> = match (c, &planned) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(code)) => Err(TopicError::new(
                *code,
                "the metadata change could not be made durable",
            )),
            (Ok(_), Ok(outcomes)) => outcomes[i].clone().expect("checked topics are planned"),
        };
        resp.topics.push(result_entry(&s.config, t, result));
    }
    resp
}

/// Request-level checks Kafka makes before looking at the cluster.
fn check(config: &Config, t: &CreatableTopic, duplicate: bool) -> Result<Wanted, TopicError> {
    if duplicate {
        return Err(TopicError::new(
            ResponseError::InvalidRequest,
            "Found multiple entries for this topic.",
        ));
    }
    let explicit = !t.assignments.is_empty();
    if explicit && (t.num_partitions != USE_DEFAULT || t.replication_factor as i32 != USE_DEFAULT) {
        return Err(TopicError::new(
            ResponseError::InvalidRequest,
            "Both numPartitions or replicationFactor and replicasAssignments were set. Both \
             cannot be used at the same time.",
        ));
    }
    let partitions = match t.num_partitions {
        USE_DEFAULT => config.num_partitions,
        n if n <= 0 => {
            return Err(TopicError::new(
                ResponseError::InvalidPartitions,
                "Number of partitions was set to an invalid non-positive value.",
            ))
        }
        n => n,
    };
    let replication_factor = match t.replication_factor as i32 {
        USE_DEFAULT => config.default_replication_factor,
        n if n <= 0 => {
            return Err(TopicError::new(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            ))
        }
        _ => t.replication_factor,
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let name = c.name.as_str().to_string();
        let Some(value) = &c.value else {
            return Err(TopicError::new(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic config {name}"),
            ));
        };
        if configs
            .insert(name.clone(), value.as_str().to_string())
            .is_some()
        {
            return Err(TopicError::new(
                ResponseError::InvalidConfig,
                format!("config {name} is given more than once"),
            ));
        }
    }
    let layout = if explicit {
        // Kafka numbers the assignments by partition; every one from 0 must be there once.
        let mut lists: Vec<Option<Vec<i32>>> = vec![None; t.assignments.len()];
        for a in &t.assignments {
            let slot = usize::try_from(a.partition_index)
                .ok()
                .and_then(|i| lists.get_mut(i))
                .filter(|s| s.is_none())
                .ok_or_else(|| {
                    TopicError::new(
                        ResponseError::InvalidReplicaAssignment,
                        "Partitions should be a consecutive 0-based integer sequence",
                    )
                })?;
            *slot = Some(a.broker_ids.iter().map(|b| b.0).collect());
        }
        Layout::Explicit(lists.into_iter().flatten().collect())
    } else {
        Layout::Spread {
            partitions,
            replication_factor,
        }
    };
    Ok(Wanted {
        name: t.name.0.as_str().to_string(),
        layout,
        configs,
    })
}

fn result_entry(
    config: &Config,
    t: CreatableTopic,
    result: Result<Created, TopicError>,
) -> CreatableTopicResult {
    let (error_code, error_message) = error_fields(&result);
    let mut e = CreatableTopicResult::default();
    e.name = t.name;
    e.error_code = error_code;
    e.error_message = error_message;
    e.num_partitions = -1;
    e.replication_factor = -1;
    e.configs = Some(Vec::new());
    if let Ok(c) = result {
        e.topic_id = c.id;
        e.num_partitions = c.partitions;
        e.replication_factor = c.replication_factor;
        e.configs = Some(
            topic_config_entries(config, &c.configs)
                .into_iter()
                .map(|entry| {
                    let mut out = CreatableTopicConfigs::default();
                    out.name = str_bytes(&entry.name);
                    out.value = Some(str_bytes(&entry.value));
                    out.read_only = false;
                    out.config_source = entry.source;
                    out.is_sensitive = false;
                    out
                })
                .collect(),
        );
    }
    e
}
