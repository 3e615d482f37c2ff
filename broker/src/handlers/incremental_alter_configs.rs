//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on a topic's overrides;
//! APPEND and SUBTRACT only on list configs (`cleanup.policy`), starting from the default
//! when the topic has no override. Replication throttles can only be deleted, which
//! changes nothing: Sluice does not throttle replication.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use sluice_protocol::kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use sluice_protocol::kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use sluice_protocol::{ResponseError, VersionRange};

use super::admin::{
    alter_topic_configs, duplicates, error_fields, prepare_alter, ConfigEdit, LIST_TOPIC_CONFIGS,
    REPLICATION_THROTTLE_BROKER_CONFIGS, REPLICATION_THROTTLE_TOPIC_CONFIGS,
};
use crate::shard::Shard;
use crate::topics::TopicError;

pub const VERSIONS: VersionRange = VersionRange::new(0, 1);

/// `AlterConfigOp.OpType` codes.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// One operation of a resource, checked against the request alone.
#[derive(Clone, Debug)]
struct Op {
    key: String,
    op: i8,
    value: Option<String>,
}

pub async fn handle(
    s: &Rc<Shard>,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let keys: Vec<(i8, String)> = r
        .resources
        .iter()
        .map(|res| (res.resource_type, res.resource_name.as_str().to_string()))
        .collect();
    let dup = duplicates(&keys);
    let defaults = s.config.topic_defaults();
    let prepared = r
        .resources
        .iter()
        .zip(dup)
        .map(|(res, dup)| {
            prepare_alter(
                &s.config,
                res.resource_type,
                res.resource_name.as_str(),
                changes_broker_config(res),
                dup,
                || {
                    let ops = check_ops(&defaults, res)?;
                    let defaults = defaults.clone();
                    let edit: ConfigEdit =
                        Box::new(move |current| apply(&defaults, current, ops.clone()));
                    Ok(edit)
                },
            )
        })
        .collect();
    let results = alter_topic_configs(s, prepared, r.validate_only).await;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for (res, result) in r.resources.into_iter().zip(results) {
        let (error_code, error_message) = error_fields(&result);
        let mut e = AlterConfigsResourceResponse::default();
        e.error_code = error_code;
        e.error_message = error_message;
        e.resource_type = res.resource_type;
        e.resource_name = res.resource_name;
        resp.responses.push(e);
    }
    resp
}

/// Whether a broker resource's operations would change anything: all but deleting a
/// replication throttle, which cannot be set.
fn changes_broker_config(res: &AlterConfigsResource) -> bool {
    res.configs.iter().any(|c| {
        c.config_operation != DELETE
            || !REPLICATION_THROTTLE_BROKER_CONFIGS.contains(&c.name.as_str())
    })
}

/// The checks that need no metadata: known keys, each key once, valid operations.
fn check_ops(
    defaults: &BTreeMap<String, String>,
    res: &AlterConfigsResource,
) -> Result<Vec<Op>, TopicError> {
    let names: Vec<&str> = res.configs.iter().map(|c| c.name.as_str()).collect();
    if duplicates(&names).into_iter().any(|d| d) {
        return Err(TopicError::new(
            ResponseError::InvalidRequest,
            "Error due to duplicate config keys",
        ));
    }
    res.configs
        .iter()
        .filter(|c| {
            // Deleting a throttle that cannot be set leaves nothing to do.
            c.config_operation != DELETE
                || !REPLICATION_THROTTLE_TOPIC_CONFIGS.contains(&c.name.as_str())
        })
        .map(|c| {
            let key = c.name.as_str().to_string();
            if REPLICATION_THROTTLE_TOPIC_CONFIGS.contains(&key.as_str()) {
                return Err(TopicError::new(
                    ResponseError::InvalidConfig,
                    format!("{key} cannot be set: Sluice does not throttle replication"),
                ));
            }
            if !defaults.contains_key(&key) {
                return Err(TopicError::new(
                    ResponseError::InvalidConfig,
                    format!("Unknown topic config name: {key}"),
                ));
            }
            let value = c.value.as_ref().map(|v| v.as_str().to_string());
            match c.config_operation {
                SET | APPEND | SUBTRACT if value.is_none() => Err(TopicError::new(
                    ResponseError::InvalidRequest,
                    format!("Null value not supported for: {key}"),
                )),
                APPEND | SUBTRACT if !LIST_TOPIC_CONFIGS.contains(&key.as_str()) => {
                    Err(TopicError::new(
                        ResponseError::InvalidConfig,
                        format!(
                            "Config value append/subtract is not allowed for config key: {key}"
                        ),
                    ))
                }
                SET | DELETE | APPEND | SUBTRACT => Ok(Op {
                    key,
                    op: c.config_operation,
                    value,
                }),
                other => Err(TopicError::new(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other} for {key}"),
                )),
            }
        })
        .collect()
}

/// The overrides after `ops`, in order.
fn apply(
    defaults: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    ops: Vec<Op>,
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut next = current.clone();
    for Op { key, op, value } in ops {
        let value = value.unwrap_or_default();
        match op {
            SET => {
                next.insert(key, value);
            }
            DELETE => {
                next.remove(&key);
            }
            _ => {
                let base = next
                    .get(&key)
                    .or_else(|| defaults.get(&key))
                    .cloned()
                    .unwrap_or_default();
                let mut items = list_items(&base);
                let given = list_items(&value);
                if op == APPEND {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                next.insert(key, items.join(","));
            }
        }
    }
    Ok(next)
}

fn list_items(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, op: i8, value: Option<&str>) -> Op {
        Op {
            key: key.into(),
            op,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn ops_apply_in_order() {
        let defaults = crate::config::Config::default().topic_defaults();
        let mut current = BTreeMap::new();
        current.insert("retention.ms".to_string(), "5".to_string());
        let next = apply(
            &defaults,
            &current,
            vec![
                op("retention.ms", DELETE, None),
                op("segment.ms", SET, Some("100")),
                op("cleanup.policy", APPEND, Some("compact")),
            ],
        )
        .unwrap();
        assert_eq!(next.get("retention.ms"), None);
        assert_eq!(next.get("segment.ms").map(String::as_str), Some("100"));
        assert_eq!(
            next.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let next = apply(
            &defaults,
            &next,
            vec![op("cleanup.policy", SUBTRACT, Some("delete"))],
        )
        .unwrap();
        assert_eq!(
            next.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
    }
}
