//! DescribeConfigs: a topic's configs (broker defaults with its overrides on top) and this
//! broker's static configs.

use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use sluice_protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use sluice_protocol::kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::{
    broker_key_of, error_fields, topic_config_entries, topic_config_type, RESOURCE_BROKER,
    RESOURCE_TOPIC, SOURCE_DEFAULT_CONFIG, SOURCE_DYNAMIC_TOPIC_CONFIG,
    SOURCE_STATIC_BROKER_CONFIG, TYPE_BOOLEAN, TYPE_INT, TYPE_LIST, TYPE_LONG, TYPE_STRING,
};
use super::str_bytes;
use crate::config::{valid_topic_name, Config};
use crate::metadata::MetadataImage;
use crate::shard::Shard;
use crate::topics::TopicError;

/// v0 (with `is_default` instead of a source) is older than kafka-protocol's codec.
pub const VERSIONS: VersionRange = VersionRange::new(1, 4);

/// One described config before it becomes a wire entry.
struct Described {
    name: String,
    value: String,
    read_only: bool,
    source: i8,
    config_type: i8,
    /// `(name, value, source)`, most specific first, for `include_synonyms`.
    synonyms: Vec<(String, String, i8)>,
}

pub async fn handle(s: &Rc<Shard>, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = s.metadata();
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let described = describe(&s.config, &image, &res);
        let (error_code, error_message) = error_fields(&described);
        let mut out = DescribeConfigsResult::default();
        out.error_code = error_code;
        // Kafka sends an empty message when the error has none of its own (NONE, an
        // unknown topic).
        out.error_message = match error_code {
            0 => Some(str_bytes("")),
            c if c == ResponseError::UnknownTopicOrPartition.code() => Some(str_bytes("")),
            _ => error_message,
        };
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        // Kafka treats a null or empty key list as "every config".
        let wanted = res.configuration_keys.as_ref().filter(|k| !k.is_empty());
        out.configs = described
            .unwrap_or_default()
            .into_iter()
            .filter(|d| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == d.name)))
            .map(|d| entry(d, r.include_synonyms))
            .collect();
        resp.results.push(out);
    }
    resp
}

fn describe(
    config: &Config,
    image: &MetadataImage,
    res: &DescribeConfigsResource,
) -> Result<Vec<Described>, TopicError> {
    let name = res.resource_name.as_str();
    match res.resource_type {
        RESOURCE_TOPIC => {
            if !valid_topic_name(name) {
                return Err(TopicError::new(
                    ResponseError::InvalidTopicException,
                    format!("topic name {name:?} is not valid"),
                ));
            }
            let topic = image.topic(name).ok_or_else(|| {
                TopicError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic {name} does not exist"),
                )
            })?;
            Ok(topic_config_entries(config, &topic.configs)
                .into_iter()
                .map(|e| {
                    let default_name = broker_key_of(&e.name).unwrap_or(&e.name).to_string();
                    let mut synonyms = Vec::new();
                    if e.source == SOURCE_DYNAMIC_TOPIC_CONFIG {
                        synonyms.push((e.name.clone(), e.value.clone(), e.source));
                    }
                    synonyms.push((default_name, e.default, SOURCE_DEFAULT_CONFIG));
                    Described {
                        config_type: topic_config_type(&e.name),
                        name: e.name,
                        value: e.value,
                        read_only: false,
                        source: e.source,
                        synonyms,
                    }
                })
                .collect())
        }
        RESOURCE_BROKER => {
            check_broker_name(config, name)?;
            Ok(broker_configs(config)
                .into_iter()
                .map(|(key, value, config_type)| Described {
                    name: key.to_string(),
                    synonyms: vec![(key.to_string(), value.clone(), SOURCE_STATIC_BROKER_CONFIG)],
                    value,
                    read_only: true,
                    source: SOURCE_STATIC_BROKER_CONFIG,
                    config_type,
                })
                .collect())
        }
        other => Err(TopicError::new(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

/// A broker resource is named by this broker's id, or empty for the cluster default.
pub fn check_broker_name(config: &Config, name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name.parse::<i32>() == Ok(config.node_id) {
        Ok(())
    } else {
        Err(TopicError::new(
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                config.node_id
            ),
        ))
    }
}

/// The broker's configs under Kafka's names, with their `ConfigDef.Type`. All are static:
/// they come from the config file and flags and change only with a restart.
fn broker_configs(c: &Config) -> Vec<(&'static str, String, i8)> {
    let (host, port) = c.advertised();
    let data_dir = std::path::absolute(&c.data_dir).unwrap_or_else(|_| c.data_dir.clone());
    let mut v = vec![
        ("node.id", c.node_id.to_string(), TYPE_INT),
        ("broker.id", c.node_id.to_string(), TYPE_INT),
        ("log.dirs", data_dir.display().to_string(), TYPE_STRING),
        ("listeners", format!("PLAINTEXT://{}", c.listen), TYPE_LIST),
        (
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{port}"),
            TYPE_LIST,
        ),
        ("num.partitions", c.num_partitions.to_string(), TYPE_INT),
        ("default.replication.factor", "1".to_string(), TYPE_INT),
        (
            "auto.create.topics.enable",
            c.auto_create_topics_enable.to_string(),
            TYPE_BOOLEAN,
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "queued.max.request.bytes",
            c.queued_max_request_bytes.to_string(),
            TYPE_LONG,
        ),
        (
            "log.retention.check.interval.ms",
            c.log_retention_check_interval_ms.to_string(),
            TYPE_LONG,
        ),
    ];
    // The broker-level names of the topic defaults (log.retention.ms, message.max.bytes, ...).
    for (topic_key, value) in c.topic_defaults() {
        if let Some(key) = broker_key_of(&topic_key) {
            v.push((key, value, topic_config_type(&topic_key)));
        }
    }
    v.sort_by_key(|(k, _, _)| *k);
    v.dedup_by_key(|(k, _, _)| *k);
    v
}

fn entry(d: Described, include_synonyms: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(&d.name);
    e.value = Some(str_bytes(&d.value));
    e.read_only = d.read_only;
    e.config_source = d.source;
    e.is_sensitive = false;
    e.config_type = d.config_type;
    e.documentation = None;
    if include_synonyms {
        e.synonyms = d
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                let mut s = DescribeConfigsSynonym::default();
                s.name = str_bytes(&name);
                s.value = Some(str_bytes(&value));
                s.source = source;
                s
            })
            .collect();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_configs_include_the_documented_keys() {
        let c = Config::default();
        let keys: Vec<_> = broker_configs(&c).into_iter().map(|(k, _, _)| k).collect();
        for k in [
            "num.partitions",
            "auto.create.topics.enable",
            "message.max.bytes",
            "log.retention.ms",
            "log.segment.bytes",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
    }

    #[test]
    fn broker_names() {
        let c = Config::default();
        assert!(check_broker_name(&c, "").is_ok());
        assert!(check_broker_name(&c, &c.node_id.to_string()).is_ok());
        assert!(check_broker_name(&c, "x").is_err());
        assert!(check_broker_name(&c, &(c.node_id + 1).to_string()).is_err());
    }
}
