//! `sluice cluster info|health`, from Metadata and a connection attempt to every broker.

use clap::Subcommand;
use serde_json::json;

use super::client::{CliError, Client, Conn, Result};
use super::output;
use super::Format;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller and cluster id.
    Info,
    /// Exits non-zero unless every broker answers and every partition has a leader and a
    /// full ISR.
    Health,
}

pub fn run(client: &mut Client, format: Format, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Info => info(client, format),
        ClusterCommand::Health => health(client, format),
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
