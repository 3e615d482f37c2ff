//! A cluster of `sluice` brokers on loopback, for the replication tests.
//!
//! Node ids are 1..=n, each broker runs one shard (`--cores 1`: the machine has two cores
//! and three brokers share them), and every broker is an initial voter: the seeds are all
//! the RPC addresses, the same list on each. Topics created without a replication factor
//! get n replicas (`default.replication.factor`), and so does `__consumer_offsets`.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;

use super::{
    admin_get, connect, consumer, free_port_pair, read_until, send_request, send_retrying, Broker,
    BrokerOpts, DeliveryLog, LoggedProducer, CALL_TIMEOUT,
};

/// How long a cluster may take until every broker answers and Metadata lists all of them.
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Cluster {
    /// `brokers[i]` is node `i + 1`.
    pub brokers: Vec<Broker>,
    /// The initial brokers' RPC addresses.
    pub seeds: Vec<String>,
    config: std::path::PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` brokers and waits until each lists all `n` in its Metadata.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, "")
    }

    /// As `start`, with `extra` (TOML lines of config keys) in every broker's config file.
    pub fn start_with(n: usize, extra: &str) -> Cluster {
        let config_dir = tempfile::tempdir().expect("config dir");
        let config = config_dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                "\"default.replication.factor\" = {n}\n\
                 \"offsets.topic.replication.factor\" = {n}\n\
                 \"offsets.topic.num.partitions\" = 6\n{extra}"
            ),
        )
        .expect("write cluster config");
        let mut rpc = Vec::new();
        while rpc.len() < n {
            let (a, b) = free_port_pair();
            rpc.extend([a, b]);
        }
        rpc.truncate(n);
        let seeds: Vec<String> = rpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let brokers: Vec<Broker> = (0..n)
            .map(|i| {
                Broker::spawn_with(BrokerOpts {
                    cores: 1,
                    extra_args: vec![
                        "--config".into(),
                        config.display().to_string(),
                        "--node-id".into(),
                        (i + 1).to_string(),
                        "--rpc-listen".into(),
                        seeds[i].clone(),
                        "--seeds".into(),
                        seeds.join(","),
                    ],
                    ..BrokerOpts::default()
                })
            })
            .collect();
        let cluster = Cluster {
            brokers,
            seeds,
            config,
            _config_dir: config_dir,
        };
        for b in &cluster.brokers {
            b.wait_ready();
        }
        cluster.wait_brokers_listed();
        cluster.wait_all_ready();
        cluster
    }

    /// Starts a broker that is not among the seeds, as node `node` (it serves once the
    /// controller admitted and registered it; `wait_ready` waits). Not added to `brokers`.
    pub fn spawn_joiner(&self, node: i32) -> Broker {
        let (rpc, _) = free_port_pair();
        Broker::spawn_with(BrokerOpts {
            cores: 1,
            extra_args: vec![
                "--config".into(),
                self.config.display().to_string(),
                "--node-id".into(),
                node.to_string(),
                "--rpc-listen".into(),
                format!("127.0.0.1:{rpc}"),
                "--seeds".into(),
                self.seeds.join(","),
            ],
            ..BrokerOpts::default()
        })
    }

    /// Waits until every broker's `/ready` answers 200: joined, the image current, every
    /// local replica open and led.
    pub fn wait_all_ready(&self) {
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        for b in &self.brokers {
            loop {
                let answer = admin_get(b.admin_port(), "/ready");
                if matches!(&answer, Ok((status, _)) if status.starts_with("HTTP/1.0 200")) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "broker {} is not ready: {answer:?}",
                    b.bootstrap()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Every broker's Kafka address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.bootstrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The Kafka addresses of the brokers that are running.
    pub fn live_bootstrap(&self) -> String {
        self.brokers
            .iter()
            .filter(|b| b.is_alive())
            .map(|b| b.bootstrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, id: i32) -> &Broker {
        &self.brokers[(id - 1) as usize]
    }

    fn wait_brokers_listed(&self) {
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        for b in &self.brokers {
            wait_listed(b, self.brokers.len(), deadline);
        }
    }

    /// The leader of `topic`/`partition` as a running broker's Metadata names it (`None`
    /// while it has none).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let c = consumer(&self.live_bootstrap());
        let md = c.fetch_metadata(Some(topic), CALL_TIMEOUT).ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0 && p.error().is_none()).then_some(p.leader())
    }

    /// Waits (at most `timeout`) until the partition has a leader other than `not`, and
    /// returns it with how long that took.
    pub fn wait_new_leader(
        &self,
        topic: &str,
        partition: i32,
        not: i32,
        timeout: Duration,
    ) -> (i32, Duration) {
        let start = Instant::now();
        loop {
            if let Some(l) = self.leader(topic, partition).filter(|l| *l != not) {
                return (l, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "{topic}/{partition} has no leader other than {not} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `b`'s Metadata lists `n` brokers, at most until `deadline`.
pub fn wait_listed(b: &Broker, n: usize, deadline: Instant) {
    let c = consumer(b.bootstrap());
    loop {
        let listed = c
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|md| md.brokers().len())
            .unwrap_or(0);
        if listed == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker {} lists {listed} of {n} brokers",
            b.bootstrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `count` keyed records numbered from `first` (value `key:n`), keys round-robin.
pub fn send_keyed(p: &LoggedProducer, topic: &str, first: usize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in first..first + count {
        let key = format!("k{}", n % 64);
        let value = format!("{key}:{n}");
        send_retrying(
            p,
            BaseRecord::with_opaque_to(topic, n)
                .key(key.as_bytes())
                .payload(value.as_bytes()),
            deadline,
        );
    }
}

/// Checks what the cluster holds against what was acknowledged: every acknowledged record
/// at its offset, each value at most once, values of one key in send order.
pub fn check_read_back(bootstrap: &str, topic: &str, partitions: i32, log: &DeliveryLog) -> usize {
    let acked = log.acked() as usize;
    let read = read_until(
        bootstrap,
        topic,
        partitions,
        Duration::from_secs(120),
        |r| r.values().map(Vec::len).sum::<usize>() >= acked,
    );
    let mut at: HashMap<(i32, i64), String> = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut last_of_key: HashMap<String, usize> = HashMap::new();
    for (p, msgs) in &read {
        for m in msgs {
            let v = String::from_utf8(m.payload().expect("value").to_vec()).unwrap();
            let (key, n) = v.split_once(':').expect("key:n");
            let n: usize = n.parse().unwrap();
            assert_eq!(m.key(), Some(key.as_bytes()), "key of {v}");
            *seen.entry(v.clone()).or_default() += 1;
            if let Some(prev) = last_of_key.insert(key.to_string(), n) {
                assert!(prev < n, "key {key}: {n} after {prev} in partition {p}");
            }
            at.insert((*p, m.offset()), v);
        }
    }
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dup.is_empty(), "records stored more than once: {dup:?}");
    let mut acked = 0;
    for d in log.snapshot() {
        if let Ok(offset) = d.result {
            acked += 1;
            let want = format!("k{}:{}", d.id % 64, d.id);
            assert_eq!(
                at.get(&(d.partition, offset)),
                Some(&want),
                "acknowledged record {want} missing at {}/{offset}",
                d.partition
            );
        }
    }
    acked
}

/// `topic`/`partition` as broker `at`'s Metadata (v12) describes it.
pub fn partition_metadata(
    at: &str,
    topic: &str,
    partition: i32,
) -> kafka_protocol::messages::metadata_response::MetadataResponsePartition {
    let mut s = connect(at.parse().unwrap(), Duration::from_secs(10)).expect("connect");
    let r = send_request(
        &mut s,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(topic.to_string())))),
        ])),
        12,
    );
    r.topics[0]
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .cloned()
        .expect("partition listed")
}

/// The replicas of `topic`/`partition`, preferred first, as broker `at` reports them.
pub fn replicas_of(at: &str, topic: &str, partition: i32) -> Vec<i32> {
    let p = partition_metadata(at, topic, partition);
    p.replica_nodes.iter().map(|b| b.0).collect()
}

/// The ISR of `topic`/`partition` as broker `at`'s Metadata reports it, sorted.
pub fn isr_of(at: &str, topic: &str, partition: i32) -> Vec<i32> {
    let p = partition_metadata(at, topic, partition);
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    isr
}
