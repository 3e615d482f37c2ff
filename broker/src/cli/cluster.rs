//! `sluice cluster info|health`, from Metadata and a connection attempt to every broker;
//! `sluice cluster decommission`, through AlterPartitionReassignments and UnregisterBroker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;
use sluice_protocol::kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use sluice_protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, MetadataResponse, UnregisterBrokerRequest,
};

use super::client::{check, name, CliError, Client, Conn, Result};
use super::output;
use super::Format;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller and cluster id.
    Info,
    /// Exits non-zero unless every broker answers and every partition has a leader and a
    /// full ISR.
    Health,
    /// Moves every replica off a broker that joined beyond the seeds, each to the broker
    /// holding fewest replicas, waits for the moves, then has it leave the cluster for good.
    Decommission {
        /// The broker's node id.
        id: i32,
        /// How long the moves may take, in seconds.
        #[arg(long, default_value_t = DECOMMISSION_TIMEOUT_S)]
        timeout_s: u64,
    },
}

/// Default bound of `cluster decommission` for its replicas to move.
const DECOMMISSION_TIMEOUT_S: u64 = 300;
/// Pause between looks at whether the moves are done.
const MOVE_POLL: Duration = Duration::from_millis(500);

pub fn run(client: &mut Client, format: Format, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Info => info(client, format),
        ClusterCommand::Health => health(client, format),
        ClusterCommand::Decommission { id, timeout_s } => {
            decommission(client, format, id, Duration::from_secs(timeout_s))
        }
    }
}

/// (topic, partition) -> new replicas for every partition with a replica on `id`: each
/// replica there is replaced, in place, by the broker holding fewest replicas that the
/// partition is not on; with no such broker the partition keeps its other replicas.
fn plan_moves(md: &MetadataResponse, id: i32) -> Result<BTreeMap<(String, i32), Vec<i32>>> {
    let mut load: BTreeMap<i32, usize> = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, 0))
        .filter(|(b, _)| *b != id)
        .collect();
    let partitions: Vec<(String, i32, Vec<i32>)> = md
        .topics
        .iter()
        .flat_map(|t| {
            let topic = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            t.partitions.iter().map(move |p| {
                let replicas = p.replica_nodes.iter().map(|b| b.0).collect();
                (topic.clone(), p.partition_index, replicas)
            })
        })
        .collect();
    for (_, _, replicas) in &partitions {
        for r in replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut moves = BTreeMap::new();
    for (topic, p, replicas) in partitions {
        if !replicas.contains(&id) {
            continue;
        }
        let spare = load
            .iter()
            .filter(|(b, _)| !replicas.contains(b))
            .min_by_key(|(b, n)| (**n, **b))
            .map(|(b, _)| *b);
        let target: Vec<i32> = match spare {
            Some(s) => {
                *load.get_mut(&s).expect("a known broker") += 1;
                replicas
                    .iter()
                    .map(|&r| if r == id { s } else { r })
                    .collect()
            }
            None => replicas.iter().copied().filter(|&r| r != id).collect(),
        };
        if target.is_empty() {
            return Err(CliError::Missing {
                what: format!(
                    "broker {id} holds the only replica of {topic}-{p} and no other broker can take it"
                ),
                code: sluice_protocol::ResponseError::InvalidReplicaAssignment.code(),
            });
        }
        moves.insert((topic, p), target);
    }
    Ok(moves)
}

fn decommission(client: &mut Client, format: Format, id: i32, timeout: Duration) -> Result<()> {
    let md = client.metadata(None)?;
    if !md.brokers.iter().any(|b| b.node_id.0 == id) {
        return Err(CliError::Missing {
            what: format!("broker {id} is not registered"),
            code: sluice_protocol::ResponseError::BrokerIdNotRegistered.code(),
        });
    }
    let moves = plan_moves(&md, id)?;
    if !moves.is_empty() {
        let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for ((topic, p), target) in &moves {
            by_topic.entry(topic).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(*p)
                    .with_replicas(Some(target.iter().map(|&b| BrokerId(b)).collect())),
            );
        }
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        ReassignableTopic::default()
                            .with_name(name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let conn = client.any()?;
        let v = conn.version::<AlterPartitionReassignmentsRequest>()?;
        let resp = conn.send(&req, v)?;
        check(
            resp.error_code,
            || "moving replicas".into(),
            resp.error_message.as_ref(),
        )?;
        for t in &resp.responses {
            for p in &t.partitions {
                check(
                    p.error_code,
                    || format!("moving {}-{}", t.name.0, p.partition_index),
                    p.error_message.as_ref(),
                )?;
            }
        }
    }
    // Done once no partition lists a replica on it (a move in progress lists both sides).
    let deadline = Instant::now() + timeout;
    loop {
        let md = client.metadata(None)?;
        let left = md
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replica_nodes.contains(&BrokerId(id)))
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(CliError::Missing {
                what: format!(
                    "{left} partitions still have a replica on broker {id} after {timeout:?}"
                ),
                code: sluice_protocol::ResponseError::RequestTimedOut.code(),
            });
        }
        std::thread::sleep(MOVE_POLL);
    }
    let conn = client.any()?;
    let v = conn.version::<UnregisterBrokerRequest>()?;
    let resp = conn.send(
        &UnregisterBrokerRequest::default().with_broker_id(BrokerId(id)),
        v,
    )?;
    check(
        resp.error_code,
        || format!("unregistering broker {id}"),
        resp.error_message.as_ref(),
    )?;
    let moved: Vec<String> = moves
        .iter()
        .map(|((t, p), target)| format!("{t}-{p} -> {target:?}"))
        .collect();
    match format {
        Format::Text => {
            let mut out = format!(
                "broker {id} decommissioned; {} partitions moved\n",
                moved.len()
            );
            for m in &moved {
                out.push_str(&format!("  {m}\n"));
            }
            output::print(&out)
        }
        Format::Json => output::json(&json!({
            "decommissioned": id,
            "moved": moves.iter().map(|((t, p), target)| json!({
                "topic": t, "partition": p, "replicas": target,
            })).collect::<Vec<_>>(),
        })),
    }
}

fn info(client: &mut Client, format: Format) -> Result<()> {
    let md = client.metadata(Some(&[]))?;
    let mut brokers = md.brokers.clone();
    brokers.sort_by_key(|b| b.node_id);
    let cluster_id = md.cluster_id.as_ref().map(|c| c.to_string());
    let controller = md.controller_id.0;
    match format {
        Format::Text => {
            output::print(&format!(
                "CLUSTER-ID  {}\nCONTROLLER  {controller}\n\n",
                cluster_id.as_deref().unwrap_or("-")
            ))?;
            let rows: Vec<Vec<String>> = brokers
                .iter()
                .map(|b| {
                    vec![
                        b.node_id.0.to_string(),
                        format!("{}:{}", b.host, b.port),
                        b.rack.as_ref().map_or("-".into(), |r| r.to_string()),
                        if b.node_id.0 == controller { "*" } else { "" }.to_string(),
                    ]
                })
                .collect();
            output::table(&["ID", "ADDRESS", "RACK", "CONTROLLER"], &rows)
        }
        Format::Json => output::json(&json!({
            "cluster_id": cluster_id,
            "controller": controller,
            "brokers": brokers.iter().map(|b| json!({
                "id": b.node_id.0,
                "host": b.host.to_string(),
                "port": b.port,
                "rack": b.rack.as_ref().map(|r| r.to_string()),
            })).collect::<Vec<_>>(),
        })),
    }
}

fn health(client: &mut Client, format: Format) -> Result<()> {
    let md = client.metadata(None)?;
    let mut down = Vec::new();
    let mut brokers: Vec<_> = md.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    for b in &brokers {
        // A fresh connection each, so a broker that died since Metadata counts as down.
        if Conn::connect(&format!("{}:{}", b.host, b.port)).is_err() {
            down.push(b.node_id.0);
        }
    }
    let mut leaderless = Vec::new();
    let mut under_replicated = Vec::new();
    for t in &md.topics {
        let tname = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        for p in &t.partitions {
            let tp = format!("{tname}/{}", p.partition_index);
            if p.leader_id.0 < 0 {
                leaderless.push(tp);
            } else if p.isr_nodes.len() < p.replica_nodes.len() {
                under_replicated.push(tp);
            }
        }
    }
    leaderless.sort();
    under_replicated.sort();
    let healthy = down.is_empty() && leaderless.is_empty() && under_replicated.is_empty();
    match format {
        Format::Text => output::print(&format!(
            "HEALTHY                     {healthy}\nCONTROLLER                  {}\nBROKERS                     {:?}\nBROKERS-DOWN                {down:?}\nLEADERLESS-PARTITIONS       {}\nUNDER-REPLICATED-PARTITIONS {}\n",
            md.controller_id.0,
            brokers.iter().map(|b| b.node_id.0).collect::<Vec<_>>(),
            leaderless.len(),
            under_replicated.len(),
        ))?,
        Format::Json => output::json(&json!({
            "healthy": healthy,
            "controller": md.controller_id.0,
            "brokers": brokers.iter().map(|b| b.node_id.0).collect::<Vec<_>>(),
            "brokers_down": down,
            "leaderless_partitions": leaderless,
            "under_replicated_partitions": under_replicated,
        }))?,
    }
    if healthy {
        return Ok(());
    }
    Err(CliError::Unhealthy(format!(
        "{} brokers down, {} leaderless and {} under-replicated partitions",
        down.len(),
        leaderless.len(),
        under_replicated.len()
    )))
}
