//! What the topic-administration and config handlers share: Kafka's config-source and
//! config-type codes, resource types, the description of a topic's configs, and a metadata
//! change that reports a result per item of the request.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use sluice_protocol::ResponseError;

use crate::config::{validate_topic_config, Config};
use crate::metadata::{MetaRecord, MetadataImage};
use crate::shard::{Shard, UpdateError};
use crate::topics::TopicError;

/// `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// `ConfigEntry.ConfigSource` codes.
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// `ConfigDef.Type` codes (DescribeConfigs v3+).
pub const TYPE_BOOLEAN: i8 = 1;
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_DOUBLE: i8 = 6;
pub const TYPE_LIST: i8 = 7;

/// Kafka's "not requested" value for authorized-operations fields.
pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `AclOperation` codes, as bits of an authorized-operations field.
const fn ops(codes: &[u8]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits
}
/// Without an authorizer every client may do everything Kafka defines for a topic:
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC_AUTHORIZED_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// ... and for the cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
/// ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]);

/// Topic configs whose value is a comma-separated list (IncrementalAlterConfigs APPEND and
/// SUBTRACT apply only to these).
pub const LIST_TOPIC_CONFIGS: &[&str] = &["cleanup.policy"];

/// Kafka's replication throttles (KIP-73), as broker and as topic configs. Sluice does not
/// throttle replication, so none can be set; deleting one, as `kafka-reassign-partitions
/// --verify` does once a move is done, succeeds and changes nothing.
pub const REPLICATION_THROTTLE_BROKER_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
];
pub const REPLICATION_THROTTLE_TOPIC_CONFIGS: &[&str] = &[
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

/// A topic config and the broker config that supplies its default.
const TOPIC_TO_BROKER_KEY: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", "compression.type"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
];

/// The broker config that supplies a topic config's default, if any.
pub fn broker_key_of(topic_key: &str) -> Option<&'static str> {
    TOPIC_TO_BROKER_KEY
        .iter()
        .find(|(t, _)| *t == topic_key)
        .map(|(_, b)| *b)
}

/// The `ConfigDef.Type` of a topic config.
pub fn topic_config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => TYPE_LIST,
        "retention.ms"
        | "retention.bytes"
        | "segment.ms"
        | "delete.retention.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms" => TYPE_LONG,
        "min.cleanable.dirty.ratio" => TYPE_DOUBLE,
        "segment.bytes" | "max.message.bytes" | "index.interval.bytes" | "min.insync.replicas" => {
            TYPE_INT
        }
        _ => TYPE_STRING,
    }
}

/// One config of a topic as DescribeConfigs and CreateTopics v5+ report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfigEntry {
    pub name: String,
    pub value: String,
    /// `SOURCE_DYNAMIC_TOPIC_CONFIG` for an override, else `SOURCE_DEFAULT_CONFIG`.
    pub source: i8,
    /// The broker default when the entry is an override.
    pub default: String,
}

/// Every topic config: the broker defaults with the topic's overrides on top, sorted by name.
pub fn topic_config_entries(
    config: &Config,
    overrides: &BTreeMap<String, String>,
) -> Vec<TopicConfigEntry> {
    config
        .topic_defaults()
        .into_iter()
        .map(|(name, default)| match overrides.get(&name) {
            Some(v) => TopicConfigEntry {
                value: v.clone(),
                source: SOURCE_DYNAMIC_TOPIC_CONFIG,
                name,
                default,
            },
            None => TopicConfigEntry {
                value: default.clone(),
                source: SOURCE_DEFAULT_CONFIG,
                name,
                default,
            },
        })
        .collect()
}

/// Checks a complete set of topic overrides, naming the first bad one.
pub fn validate_overrides(configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
    for (k, v) in configs {
        validate_topic_config(k, v)
            .map_err(|m| TopicError::new(ResponseError::InvalidConfig, m))?;
    }
    Ok(())
}

/// Marks every key that occurs more than once.
pub fn duplicates<K: Eq + Hash + Clone>(keys: &[K]) -> Vec<bool> {
    let mut counts: HashMap<K, usize> = HashMap::new();
    for k in keys {
        *counts.entry(k.clone()).or_default() += 1;
    }
    keys.iter().map(|k| counts[k] > 1).collect()
}

/// Runs `plan` against the current image (again if the image moved before the controller
/// committed), commits the records it returns (every shard has applied them when this
/// returns), and hands back the per-item outcome of the plan that was committed. With `validate_only` the plan runs against this shard's image and
/// nothing is committed.
pub async fn change_metadata<T, P>(
    s: &Rc<Shard>,
    validate_only: bool,
    plan: P,
) -> Result<T, ResponseError>
where
    T: Send + 'static,
    P: Fn(&MetadataImage) -> (Vec<MetaRecord>, T) + Send + 'static,
{
    if validate_only {
        return Ok(plan(&s.metadata()).1);
    }
    let outcome = Arc::new(Mutex::new(None));
    let slot = outcome.clone();
    let updated = s
        .update_metadata(move |image| {
            let (records, t) = plan(image);
            *slot.lock().expect("outcome lock") = Some(t);
            Ok::<_, Infallible>(records)
        })
        .await;
    match updated {
        Ok(_) => Ok(outcome
            .lock()
            .expect("outcome lock")
            .take()
            .expect("the plan ran")),
        Err(UpdateError::Rejected(never)) => match never {},
        Err(UpdateError::Unavailable(e)) => {
            tracing::warn!(error = %e, "could not commit a metadata change");
            Err(ResponseError::RequestTimedOut)
        }
    }
}

/// `(error_code, error_message)` of a result: 0 and null on success.
pub fn error_fields<T>(
    r: &Result<T, TopicError>,
) -> (
    i16,
    Option<sluice_protocol::kafka_protocol::protocol::StrBytes>,
) {
    match r {
        Ok(_) => (0, None),
        Err(e) => (e.code.code(), Some(super::str_bytes(&e.message))),
    }
}

/// How a topic's overrides change: from the current overrides to the new full set (again
/// if the change is planned again).
pub type ConfigEdit =
    Box<dyn Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TopicError> + Send>;

/// One resource of an AlterConfigs or IncrementalAlterConfigs request, after the checks
/// that need no metadata.
pub enum Prepared {
    /// Answered already (an error, or a broker resource with nothing to change).
    Done(Result<(), TopicError>),
    /// A topic and the change to make to its overrides.
    Topic(String, ConfigEdit),
}

/// The checks shared by AlterConfigs and IncrementalAlterConfigs; `edit` is only called for
/// a topic resource that passed them.
pub fn prepare_alter(
    config: &Config,
    resource_type: i8,
    name: &str,
    changes_something: bool,
    duplicate: bool,
    edit: impl FnOnce() -> Result<ConfigEdit, TopicError>,
) -> Prepared {
    if duplicate {
        return Prepared::Done(Err(TopicError::new(
            ResponseError::InvalidRequest,
            "Duplicate resource in the request.",
        )));
    }
    match resource_type {
        RESOURCE_TOPIC => {
            if !crate::config::valid_topic_name(name) {
                return Prepared::Done(Err(TopicError::new(
                    ResponseError::InvalidTopicException,
                    format!("topic name {name:?} is not valid"),
                )));
            }
            match edit() {
                Ok(e) => Prepared::Topic(name.to_string(), e),
                Err(e) => Prepared::Done(Err(e)),
            }
        }
        RESOURCE_BROKER => Prepared::Done(
            super::describe_configs::check_broker_name(config, name).and_then(|()| {
                if changes_something {
                    Err(TopicError::new(
                        ResponseError::InvalidRequest,
                        "broker configs cannot be changed at runtime; set them in the \
                         config file or on the command line and restart",
                    ))
                } else {
                    Ok(())
                }
            }),
        ),
        other => Prepared::Done(Err(TopicError::new(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        ))),
    }
}

/// Applies the topic edits as one metadata change (nothing is committed with
/// `validate_only`). Open partitions pick the new configs up as the image is applied.
pub async fn alter_topic_configs(
    s: &Rc<Shard>,
    prepared: Vec<Prepared>,
    validate_only: bool,
) -> Vec<Result<(), TopicError>> {
    let mut results: Vec<Option<Result<(), TopicError>>> = Vec::new();
    let mut edits = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Prepared::Done(r) => results.push(Some(r)),
            Prepared::Topic(name, edit) => {
                results.push(None);
                edits.push((i, name, edit));
            }
        }
    }
    let planned = change_metadata(s, validate_only, move |image| {
        let mut records = Vec::new();
        let outcomes: Vec<(usize, Result<(), TopicError>)> = edits
            .iter()
            .map(|(i, name, edit)| {
                let r = image
                    .topic(name)
                    .ok_or_else(|| {
                        TopicError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("Topic {name} does not exist"),
                        )
                    })
                    .and_then(|t| {
                        let configs = edit(&t.configs)?;
                        validate_overrides(&configs)?;
                        if configs != t.configs {
                            records.push(MetaRecord::ConfigsSet { id: t.id, configs });
                        }
                        Ok(())
                    });
                (*i, r)
            })
            .collect();
        (records, outcomes)
    })
    .await;
    match planned {
        Ok(outcomes) => {
            for (i, r) in outcomes {
                results[i] = Some(r);
            }
        }
        Err(code) => {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Err(TopicError::new(
                    code,
                    "the metadata change could not be made durable",
                )));
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every resource is answered"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_default_has_a_type_and_a_broker_key() {
        let c = Config::default();
        for (k, v) in c.topic_defaults() {
            assert!(broker_key_of(&k).is_some(), "{k}");
            assert!(validate_topic_config(&k, &v).is_ok(), "{k}={v}");
        }
    }

    #[test]
    fn entries_mark_overrides() {
        let c = Config::default();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        let e = topic_config_entries(&c, &o);
        let r = e.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(
            (r.value.as_str(), r.source),
            ("1000", SOURCE_DYNAMIC_TOPIC_CONFIG)
        );
        let s = e.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!(s.source, SOURCE_DEFAULT_CONFIG);
        assert_eq!(e.len(), c.topic_defaults().len());
    }

    #[test]
    fn authorized_operations_bits() {
        assert_eq!(TOPIC_AUTHORIZED_OPERATIONS, 0b1101_1111_1000);
        assert_eq!(CLUSTER_AUTHORIZED_OPERATIONS, 0b1_1111_1010_0000);
    }

    #[test]
    fn duplicates_are_marked() {
        assert_eq!(
            duplicates(&["a", "b", "a", "c"]),
            vec![true, false, true, false]
        );
    }
}
