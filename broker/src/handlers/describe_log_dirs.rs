//! DescribeLogDirs: the one data directory with the size of every partition in it, gathered
//! from every shard. With one replica per partition nothing lags.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use sluice_protocol::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_protocol::kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use sluice_protocol::VersionRange;

use super::{str_bytes, topic_name};
use crate::shard::Shard;

/// v0 is older than kafka-protocol's codec.
pub const VERSIONS: VersionRange = VersionRange::new(1, 4);

/// Kafka's value for total and usable bytes it does not know (v4+).
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub async fn handle(s: &Rc<Shard>, r: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // None: every partition; otherwise only those asked for.
    let wanted: Option<BTreeSet<(String, i32)>> = r.topics.map(|ts| {
        ts.iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_string();
                t.partitions.iter().map(move |&p| (name.clone(), p))
            })
            .collect()
    });
    let mut sizes: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for target in 0..s.count {
        let local = s
            .run_on(target, |shard| async move {
                shard
                    .local_partitions()
                    .iter()
                    .map(|p| (p.topic.clone(), p.index, p.size_bytes() as i64))
                    .collect::<Vec<_>>()
            })
            .await;
        for (topic, index, size) in local {
            if wanted
                .as_ref()
                .is_none_or(|w| w.contains(&(topic.clone(), index)))
            {
                sizes.entry(topic).or_default().push((index, size));
            }
        }
    }
    let mut dir = DescribeLogDirsResult::default();
    let data_dir =
        std::path::absolute(&s.config.data_dir).unwrap_or_else(|_| s.config.data_dir.clone());
    dir.log_dir = str_bytes(&data_dir.display().to_string());
    dir.total_bytes = UNKNOWN_VOLUME_BYTES;
    dir.usable_bytes = UNKNOWN_VOLUME_BYTES;
    dir.topics = sizes
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_unstable();
            let mut t = DescribeLogDirsTopic::default();
            t.name = topic_name(&name);
            t.partitions = parts
                .into_iter()
                .map(|(index, size)| {
                    let mut p = DescribeLogDirsPartition::default();
                    p.partition_index = index;
                    p.partition_size = size;
                    p.offset_lag = 0;
                    p.is_future_key = false;
                    p
                })
                .collect();
            t
        })
        .collect();
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![dir];
    resp
}
