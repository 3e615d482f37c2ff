//! `sluice group ...`: ListGroups, DescribeGroups with OffsetFetch and ListOffsets for lag,
//! DeleteGroups, and moving an idle group's committed offsets with OffsetCommit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, Bytes};
use clap::Subcommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::Decodable;
use serde_json::json;

use super::client::{check, name, retrying, str_bytes, CliError, Client, Result, LATEST};
use super::output::{self, Progress};
use super::{topic, Format, StartAt};

/// Partitions per OffsetCommit when seeking; bounds one request's size for huge topics.
const SEEK_COMMIT_PARTITIONS_MAX: usize = 1_000;
/// The group states in which Kafka lets an outside tool move committed offsets.
const IDLE_STATES: &[&str] = &["Empty", "Dead"];
/// The protocol type of groups whose assignments are Kafka consumer assignments.
const CONSUMER_PROTOCOL: &str = "consumer";

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups, on every broker.
    List,
    /// A group's members and assignments, and per partition its committed offset and lag.
    Describe { group: String },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets on every partition of a topic. Only for a group
    /// with no active members (Kafka's rule), so no consumer overwrites the new offsets.
    Seek {
        group: String,
        /// The topic whose offsets to move.
        #[arg(long)]
        topic: String,
        /// start, end, an offset, or @UNIX_MS (the first record at or after that time).
        #[arg(long)]
        to: StartAt,
    },
}

pub fn run(client: &mut Client, format: Format, cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List => list(client, format),
        GroupCommand::Describe { group } => describe(client, format, &group),
        GroupCommand::Delete { groups } => delete(client, format, &groups),
        GroupCommand::Seek { group, topic, to } => seek(client, format, &group, &topic, to),
    }
}

fn gid(g: &str) -> GroupId {
    GroupId(str_bytes(g))
}

/// Every committed offset of `group`: (topic, partition) → offset.
pub fn committed(client: &mut Client, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    retrying(|| committed_once(client, group))
}

fn committed_once(client: &mut Client, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    let conn = client.coordinator(group)?;
    let v = conn.version::<OffsetFetchRequest>()?;
    let mut req = OffsetFetchRequest::default().with_group_id(gid(group));
    // v1 cannot ask for "every topic"; v2 and later take null for that.
    if v < 2 {
        return Err(CliError::Unsupported {
            addr: conn.addr.clone(),
            api: kafka_protocol::messages::ApiKey::OffsetFetch,
        });
    }
    req.topics = None;
    let resp = conn.send(&req, v)?;
    check(
        resp.error_code,
        || format!("fetch offsets of group {group}"),
        None,
    )?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            check(
                p.error_code,
                || format!("fetch offsets of group {group}"),
                None,
            )?;
            if p.committed_offset >= 0 {
                out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (partition, offset) of `topic` for `group`, outside any generation.
pub fn commit(client: &mut Client, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<()> {
    retrying(|| commit_once(client, group, topic, offsets))
}

fn commit_once(
    client: &mut Client,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<()> {
    let conn = client.coordinator(group)?;
    let v = conn.version::<OffsetCommitRequest>()?;
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(
                offsets
                    .iter()
                    .map(|&(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                    })
                    .collect(),
            )]);
    let resp = conn.send(&req, v)?;
    for t in resp.topics {
        for p in t.partitions {
            check(
                p.error_code,
                || {
                    format!(
                        "commit offsets of group {group} for {topic}/{}",
                        p.partition_index
                    )
                },
                None,
            )?;
        }
    }
    Ok(())
}

fn describe_group(client: &mut Client, group: &str) -> Result<DescribedGroup> {
    retrying(|| describe_group_once(client, group))
}

fn describe_group_once(client: &mut Client, group: &str) -> Result<DescribedGroup> {
    let conn = client.coordinator(group)?;
    let v = conn.version::<DescribeGroupsRequest>()?;
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let resp = conn.send(&req, v)?;
    let g = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Protocol {
            addr: conn.addr.clone(),
            detail: "DescribeGroups answered no group".into(),
        })?;
    check(
        g.error_code,
        || format!("describe group {group}"),
        g.error_message.as_ref(),
    )?;
    Ok(g)
}

/// The partitions a consumer-protocol member was assigned: (topic, partition).
fn assigned(protocol_type: &str, assignment: &Bytes) -> Vec<(String, i32)> {
    if protocol_type != CONSUMER_PROTOCOL || assignment.len() < 2 {
        return Vec::new();
    }
    let mut buf = assignment.clone();
    let version = buf.get_i16();
    // A newer assignment version than we know still starts with the fields we know.
    let version = version.min(3);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.to_string();
                tp.partitions.into_iter().map(move |p| (t.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn list(client: &mut Client, format: Format) -> Result<()> {
    client.metadata(Some(&[]))?;
    let mut nodes: Vec<_> = client.node_addrs().keys().copied().collect();
    nodes.sort();
    let mut groups = BTreeMap::new();
    for node in nodes {
        let conn = client.node(node)?;
        let v = conn.version::<ListGroupsRequest>()?;
        let resp = conn.send(&ListGroupsRequest::default(), v)?;
        check(
            resp.error_code,
            || format!("list groups on {}", conn.addr),
            None,
        )?;
        for g in resp.groups {
            groups.insert(
                g.group_id.to_string(),
                (g.group_state.to_string(), g.protocol_type.to_string()),
            );
        }
    }
    match format {
        Format::Text => {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|(g, (s, p))| vec![g.clone(), s.clone(), p.clone()])
                .collect();
            output::table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)
        }
        Format::Json => output::json(&json!(groups
            .iter()
            .map(|(g, (s, p))| json!({"group": g, "state": s, "protocol_type": p}))
            .collect::<Vec<_>>())),
    }
}

/// One row of a group's offsets: what is committed, where the log ends, who owns it.
struct OffsetRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: i64,
    member: Option<usize>,
}

fn describe(client: &mut Client, format: Format, group: &str) -> Result<()> {
    let g = describe_group(client, group)?;
    let offsets = committed(client, group)?;
    let protocol_type = g.protocol_type.to_string();
    if g.group_state.as_str() == "Dead" && offsets.is_empty() {
        return Err(CliError::Missing {
            what: format!("group {group} does not exist"),
            code: ResponseError::GroupIdNotFound.code(),
        });
    }
    let mut owner: HashMap<(String, i32), usize> = HashMap::new();
    let mut partitions: BTreeSet<(String, i32)> = offsets.keys().cloned().collect();
    for (i, m) in g.members.iter().enumerate() {
        for tp in assigned(&protocol_type, &m.member_assignment) {
            owner.insert(tp.clone(), i);
            partitions.insert(tp);
        }
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut ends = HashMap::new();
    for (t, ps) in &by_topic {
        let meta = client.topic_metadata(t)?;
        for (p, o) in client.list_offsets(&meta, ps, LATEST)? {
            ends.insert((t.clone(), p), o);
        }
    }
    let rows: Vec<OffsetRow> = partitions
        .into_iter()
        .map(|tp| OffsetRow {
            committed: offsets.get(&tp).copied(),
            log_end: ends[&tp],
            member: owner.get(&tp).copied(),
            topic: tp.0,
            partition: tp.1,
        })
        .collect();
    let lag = |r: &OffsetRow| r.committed.map(|c| (r.log_end - c).max(0));
    let total_lag: i64 = rows.iter().filter_map(lag).sum();
    match format {
        Format::Text => {
            output::print(&format!(
                "GROUP        {group}\nSTATE        {}\nPROTOCOL     {}\nMEMBERS      {}\nTOTAL-LAG    {total_lag}\n\n",
                g.group_state,
                if protocol_type.is_empty() {
                    "-".to_string()
                } else {
                    format!("{protocol_type}/{}", g.protocol_data)
                },
                g.members.len()
            ))?;
            if !g.members.is_empty() {
                let members: Vec<Vec<String>> = g
                    .members
                    .iter()
                    .map(|m| {
                        let parts = assigned(&protocol_type, &m.member_assignment)
                            .iter()
                            .map(|(t, p)| format!("{t}/{p}"))
                            .collect::<Vec<_>>()
                            .join(",");
                        vec![
                            m.member_id.to_string(),
                            m.client_id.to_string(),
                            m.client_host.to_string(),
                            parts,
                        ]
                    })
                    .collect();
                output::table(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNED"], &members)?;
                output::print("\n")?;
            }
            let dash = || "-".to_string();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        r.committed.map_or_else(dash, |c| c.to_string()),
                        r.log_end.to_string(),
                        lag(r).map_or_else(dash, |l| l.to_string()),
                        r.member
                            .map_or_else(dash, |i| g.members[i].member_id.to_string()),
                    ]
                })
                .collect();
            output::table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "MEMBER-ID",
                ],
                &table,
            )
        }
        Format::Json => output::json(&json!({
            "group": group,
            "state": g.group_state.to_string(),
            "protocol_type": protocol_type,
            "protocol": g.protocol_data.to_string(),
            "total_lag": total_lag,
            "members": g.members.iter().map(|m| json!({
                "member_id": m.member_id.to_string(),
                "group_instance_id": m.group_instance_id.as_ref().map(|s| s.to_string()),
                "client_id": m.client_id.to_string(),
                "host": m.client_host.to_string(),
                "assigned": assigned(&protocol_type, &m.member_assignment)
                    .into_iter()
                    .map(|(t, p)| json!({"topic": t, "partition": p}))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "offsets": rows.iter().map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "committed_offset": r.committed,
                "log_end_offset": r.log_end,
                "lag": lag(r),
                "member_id": r.member.map(|i| g.members[i].member_id.to_string()),
            })).collect::<Vec<_>>(),
        })),
    }
}

fn delete(client: &mut Client, format: Format, groups: &[String]) -> Result<()> {
    let mut deleted = Vec::new();
    let mut first_err = None;
    for group in groups {
        let deleting = retrying(|| {
            let conn = client.coordinator(group)?;
            let v = conn.version::<DeleteGroupsRequest>()?;
            let req = DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]);
            for r in conn.send(&req, v)?.results {
                check(r.error_code, || format!("delete group {group}"), None)?;
            }
            Ok(())
        });
        match deleting {
            Ok(()) => deleted.push(group.clone()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match format {
        Format::Text => {
            for g in &deleted {
                output::print(&format!("deleted group {g}\n"))?;
            }
        }
        Format::Json => output::json(&json!({ "deleted": deleted }))?,
    }
    first_err.map_or(Ok(()), Err)
}

fn seek(client: &mut Client, format: Format, group: &str, topic: &str, to: StartAt) -> Result<()> {
    let g = describe_group(client, group)?;
    if !IDLE_STATES.contains(&g.group_state.as_str()) {
        return Err(CliError::Usage(format!(
            "group {group} is {} with {} members: seek only works on an empty group \
             (stop its consumers first)",
            g.group_state,
            g.members.len()
        )));
    }
    let meta = client.topic_metadata(topic)?;
    let mut partitions: Vec<i32> = meta.partitions.iter().map(|p| p.partition_index).collect();
    partitions.sort_unstable();
    let target = topic::resolve_start(client, &meta, &partitions, to)?;
    let offsets: Vec<(i32, i64)> = partitions.iter().map(|p| (*p, target[p])).collect();
    let mut progress = Progress::new("committed partitions", Some(offsets.len() as u64));
    let mut done = 0u64;
    for chunk in offsets.chunks(SEEK_COMMIT_PARTITIONS_MAX) {
        commit(client, group, topic, chunk)?;
        done += chunk.len() as u64;
        progress.update(done);
    }
    progress.finish();
    match format {
        Format::Text => {
            output::print(&format!("group {group}: moved offsets of {topic}\n"))?;
            let rows: Vec<Vec<String>> = offsets
                .iter()
                .map(|(p, o)| vec![topic.to_string(), p.to_string(), o.to_string()])
                .collect();
            output::table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
        }
        Format::Json => output::json(&json!({
            "group": group,
            "topic": topic,
            "offsets": offsets.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>(),
        })),
    }
}
