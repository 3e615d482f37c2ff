//! Idle cost of Raft groups on one shard: memory per group and CPU while nothing is
//! written, with openraft's own per-group timer and with the shard's `Ticker`, in one run.
//!
//! `raft-idle --groups 1000 --idle-s 5` opens that many single-voter partition groups (a
//! one-node broker's partitions) on real logs in a temporary directory, lets them elect
//! themselves, then measures the process's CPU seconds over the idle window. Prints JSON.

use std::collections::BTreeSet;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use openraft::AsyncRuntime;
use openraft_rt::WatchReceiver;
use sluice_raft::{
    default_group_config, GlommioRuntime, Group, LogStore, Network, PartitionRaftNode, RaftRequest,
    RaftResponse, StateMachine, Ticker, Transport, ELECTION_TIMEOUT_MIN,
};
use sluice_storage::{LogConfig, PartitionLog};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    /// Seconds of idleness measured per mode.
    #[arg(long, default_value_t = 5)]
    idle_s: u64,
}

/// Single-voter groups send nothing.
#[derive(Clone)]
struct NoPeers;

impl Transport for NoPeers {
    async fn call(&self, to: u64, _: RaftRequest, _: Duration) -> Result<RaftResponse, String> {
        Err(format!("no broker {to} in a one-node cluster"))
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn measure(root: &Path, groups: usize, idle: Duration, own_timer: bool) -> serde_json::Value {
    let rss0 = rss_bytes();
    let ticker = Ticker::new(ELECTION_TIMEOUT_MIN);
    ticker.spawn();
    let mut held = Vec::with_capacity(groups);
    let opened = Instant::now();
    for i in 0..groups {
        let dir = root.join(format!("{}-{i}", if own_timer { "tick" } else { "ticker" }));
        std::fs::create_dir_all(&dir).expect("partition dir");
        let log = Rc::new(
            PartitionLog::open(&dir, LogConfig::default())
                .await
                .expect("log"),
        );
        let store = LogStore::open(&dir, log.clone()).await.expect("store");
        let sm = StateMachine::open(&dir, log).await.expect("state machine");
        let config = openraft::Config {
            enable_tick: own_timer,
            ..default_group_config()
        };
        let raft = PartitionRaftNode::new(1, Arc::new(config), Network::new(NoPeers), store, sm)
            .await
            .expect("raft");
        raft.initialize(BTreeSet::from([1u64]))
            .await
            .expect("initialize");
        let group = Group::new(raft, ELECTION_TIMEOUT_MIN);
        if !own_timer {
            ticker.register(&group);
        }
        held.push(group);
    }
    let open_s = opened.elapsed().as_secs_f64();
    for g in &held {
        g.raft()
            .wait(Some(Duration::from_secs(30)))
            .current_leader(1, "self-elected")
            .await
            .expect("leader");
    }
    let rss1 = rss_bytes();
    let cpu0 = cpu_seconds();
    GlommioRuntime::sleep(idle).await;
    let idle_cpu = cpu_seconds() - cpu0;
    let leaders = held
        .iter()
        .filter(|g| g.raft().metrics().borrow_watched().current_leader == Some(1))
        .count();
    for g in &held {
        g.raft().shutdown().await.expect("shutdown");
    }
    serde_json::json!({
        "timer": if own_timer { "openraft tick per group" } else { "shard Ticker" },
        "groups": groups,
        "leaders": leaders,
        "open_seconds": open_s,
        "rss_bytes_per_group": (rss1.saturating_sub(rss0)) / groups as u64,
        "idle_seconds": idle.as_secs_f64(),
        "idle_cpu_seconds": idle_cpu,
        "idle_cpu_share_of_a_core": idle_cpu / idle.as_secs_f64(),
    })
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let idle = Duration::from_secs(args.idle_s);
    let out = GlommioRuntime::run(async move {
        let ticker = measure(&root, args.groups, idle, false).await;
        let own = measure(&root, args.groups, idle, true).await;
        serde_json::json!({ "bench": "raft-idle", "runs": [ticker, own] })
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
