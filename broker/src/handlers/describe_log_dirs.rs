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

/// Total and usable bytes of the file system holding `dir`, as Kafka reports its log
/// directory's volume; unknown if it can't be asked. (statvfs reads no data: cheap enough
/// for an admin request on the shard.)
fn volume_bytes(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let unknown = (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES);
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return unknown;
    };
    // SAFETY: statvfs is plain data, valid when zeroed; `path` is NUL-terminated and
    // outlives the call, and `st` is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return unknown;
    }
    let block = st.f_frsize as i64;
    (st.f_blocks as i64 * block, st.f_bavail as i64 * block)
}

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
    (dir.total_bytes, dir.usable_bytes) = volume_bytes(&data_dir);
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
