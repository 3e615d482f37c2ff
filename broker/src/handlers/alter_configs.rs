//! AlterConfigs (the legacy, non-incremental form): a topic's overrides become exactly the
//! configs given; anything not given goes back to its default.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use sluice_protocol::kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use sluice_protocol::VersionRange;

use super::admin::{alter_topic_configs, duplicates, error_fields, prepare_alter, ConfigEdit};
use crate::shard::Shard;

pub const VERSIONS: VersionRange = VersionRange::new(0, 2);

pub async fn handle(s: &Rc<Shard>, r: AlterConfigsRequest) -> AlterConfigsResponse {
    let keys: Vec<(i8, String)> = r
        .resources
        .iter()
        .map(|res| (res.resource_type, res.resource_name.as_str().to_string()))
        .collect();
    let dup = duplicates(&keys);
    let prepared = r
        .resources
        .iter()
        .zip(dup)
        .map(|(res, dup)| {
            prepare_alter(
                &s.config,
                res.resource_type,
                res.resource_name.as_str(),
                !res.configs.is_empty(),
                dup,
                || {
                    // A null value leaves the config out, which means its default.
                    let configs: BTreeMap<String, String> = res
                        .configs
                        .iter()
                        .filter_map(|c| {
                            c.value
                                .as_ref()
                                .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                        })
                        .collect();
                    let edit: ConfigEdit = Box::new(move |_current| Ok(configs.clone()));
                    Ok(edit)
                },
            )
        })
        .collect();
    let results = alter_topic_configs(s, prepared, r.validate_only).await;
    let mut resp = AlterConfigsResponse::default();
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
