//! Broker configuration: CLI flags over a TOML file over defaults. Keys that mean what a
//! Kafka broker config means carry Kafka's name (quoted in TOML, e.g. `"num.partitions" = 3`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_storage::LogConfig;

use crate::partition::RecordRules;

/// Kafka's `socket.request.max.bytes` default.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize =
    sluice_protocol::SOCKET_REQUEST_MAX_BYTES_DEFAULT;
/// Default for `queued.max.request.bytes`, per shard: request bytes read but not yet answered
/// before the shard stops reading sockets. At least one maximum-size frame must fit.
pub const QUEUED_MAX_REQUEST_BYTES_DEFAULT: usize = 200 << 20;
/// Requests one connection may have in flight before its reader waits (pipelining depth).
pub const MAX_INFLIGHT_REQUESTS_PER_CONNECTION: usize = 128;
/// Longest a Fetch may be parked waiting for data, whatever the client asks.
pub const FETCH_MAX_WAIT_MS_LIMIT: u64 = 30_000;
/// Cross-shard queue depth; a full queue makes the sender wait (backpressure).
pub const SHARD_QUEUE_DEPTH: usize = 1024;
/// Grace period for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// Largest partition count of one topic.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;
/// Default of `topic.partitions.per.shard`. An idle partition costs a few KiB and no
/// descriptor, so the bound is start-up time and memory under traffic (each partition's
/// read cache), not descriptors.
pub const TOPIC_PARTITIONS_PER_SHARD_DEFAULT: usize = 20_000;
/// Partition logs a shard opens at once at start-up and on a metadata change.
pub const PARTITION_OPEN_CONCURRENCY: usize = 32;
/// Kafka's `fetch.max.bytes` default (55 MiB).
pub const FETCH_MAX_BYTES_DEFAULT: usize = 55 << 20;
/// Kafka 4's `log.message.timestamp.before.max.ms`: any age is accepted.
pub const MESSAGE_TIMESTAMP_BEFORE_MAX_MS_DEFAULT: i64 = i64::MAX;
/// Kafka 4's `log.message.timestamp.after.max.ms`: one hour into the future.
pub const MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT: i64 = 3_600_000;
/// Kafka's `broker.heartbeat.interval.ms` default.
pub const BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Kafka's `broker.session.timeout.ms` default.
pub const BROKER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 9_000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "node.id")]
    pub node_id: i32,
    #[serde(rename = "data.dir")]
    pub data_dir: PathBuf,
    /// Kafka listener, `HOST:PORT`.
    pub listen: SocketAddr,
    /// What clients are told to connect to; defaults to `listen`.
    #[serde(rename = "advertised.listener")]
    pub advertised_listener: Option<String>,
    /// Inter-broker RPC listener (Raft traffic), `HOST:PORT`; off when unset.
    #[serde(rename = "rpc.listen")]
    pub rpc_listen: Option<SocketAddr>,
    /// What peer brokers are told to connect to for RPC; defaults to `rpc.listen`.
    #[serde(rename = "advertised.rpc.listener")]
    pub advertised_rpc_listener: Option<String>,
    /// RPC addresses of the initial voters, the same list on every initial broker.
    pub seeds: Vec<String>,
    /// HTTP port for /metrics, /health, /ready.
    #[serde(rename = "admin.listen")]
    pub admin_listen: Option<SocketAddr>,
    /// Shards (one per core); defaults to every available core.
    pub cores: Option<usize>,
    #[serde(rename = "auto.create.topics.enable")]
    pub auto_create_topics_enable: bool,
    #[serde(rename = "num.partitions")]
    pub num_partitions: i32,
    /// Replicas of a topic created without a replication factor (auto-created ones too).
    #[serde(rename = "default.replication.factor")]
    pub default_replication_factor: i16,
    /// Replicas of `__consumer_offsets`, at most the brokers registered when it is created.
    #[serde(rename = "offsets.topic.replication.factor")]
    pub offsets_topic_replication_factor: i16,
    /// A replica that has not caught up with its leader for this long leaves the ISR that
    /// Metadata reports (it keeps its vote: Raft's quorum is what acks=all waits for).
    #[serde(rename = "replica.lag.time.max.ms")]
    pub replica_lag_time_max_ms: u64,
    /// How often a broker tells the controller leader it is alive.
    #[serde(rename = "broker.heartbeat.interval.ms")]
    pub broker_heartbeat_interval_ms: u64,
    /// A broker the controller leader has not heard from for this long is fenced: no new
    /// replica is placed on it until it is heard from again.
    #[serde(rename = "broker.session.timeout.ms")]
    pub broker_session_timeout_ms: u64,
    /// This broker's rack: placement spreads a partition's replicas over racks.
    #[serde(rename = "broker.rack")]
    pub broker_rack: Option<String>,
    #[serde(rename = "message.max.bytes")]
    pub message_max_bytes: usize,
    #[serde(rename = "socket.request.max.bytes")]
    pub socket_request_max_bytes: usize,
    #[serde(rename = "queued.max.request.bytes")]
    pub queued_max_request_bytes: usize,
    #[serde(rename = "log.segment.bytes")]
    pub log_segment_bytes: u64,
    #[serde(rename = "log.roll.ms")]
    pub log_roll_ms: u64,
    #[serde(rename = "log.retention.ms")]
    pub log_retention_ms: i64,
    #[serde(rename = "log.retention.bytes")]
    pub log_retention_bytes: i64,
    #[serde(rename = "log.retention.check.interval.ms")]
    pub log_retention_check_interval_ms: u64,
    #[serde(rename = "log.index.interval.bytes")]
    pub log_index_interval_bytes: u64,
    #[serde(rename = "offsets.topic.num.partitions")]
    pub offsets_topic_num_partitions: i32,
    #[serde(rename = "group.initial.rebalance.delay.ms")]
    pub group_initial_rebalance_delay_ms: u64,
    /// Members per group. Kafka's default is unbounded; a bound keeps a group's memory finite.
    #[serde(rename = "group.max.size")]
    pub group_max_size: usize,
    #[serde(rename = "offsets.retention.minutes")]
    pub offsets_retention_minutes: u64,
    /// `segment.bytes` of the consumer-offsets topic when it is created.
    #[serde(rename = "offsets.topic.segment.bytes")]
    pub offsets_topic_segment_bytes: u64,
    #[serde(rename = "log.cleaner.enable")]
    pub log_cleaner_enable: bool,
    /// Pause between two looks of a shard's cleaner at its compacted partitions.
    #[serde(rename = "log.cleaner.backoff.ms")]
    pub log_cleaner_backoff_ms: u64,
    /// Default `min.cleanable.dirty.ratio`.
    #[serde(rename = "log.cleaner.min.cleanable.ratio")]
    pub log_cleaner_min_cleanable_ratio: f64,
    /// Default `delete.retention.ms`: how long tombstones outlive their key.
    #[serde(rename = "log.cleaner.delete.retention.ms")]
    pub log_cleaner_delete_retention_ms: u64,
    /// Memory bound of one compaction pass's key map (Kafka shares it among cleaner threads;
    /// here each pass runs alone on its shard).
    #[serde(rename = "log.cleaner.dedupe.buffer.size")]
    pub log_cleaner_dedupe_buffer_size: usize,
    /// Segment files each shard keeps open; others are opened on demand (capped at start so
    /// every shard's share fits the process's descriptor limit).
    #[serde(rename = "log.open.files.max")]
    pub log_open_files_max: usize,
    /// Partitions the broker holds per shard on average (Redpanda's
    /// `topic_partitions_per_shard`): CreateTopics and CreatePartitions past
    /// this × shards are refused with INVALID_PARTITIONS instead of being accepted.
    #[serde(rename = "topic.partitions.per.shard")]
    pub topic_partitions_per_shard: usize,
    /// The most a Fetch answer carries, whatever the client asks (the first batch of the
    /// first partition with data still comes whole).
    #[serde(rename = "fetch.max.bytes")]
    pub fetch_max_bytes: usize,
    /// Default `message.timestamp.before.max.ms`.
    #[serde(rename = "log.message.timestamp.before.max.ms")]
    pub log_message_timestamp_before_max_ms: i64,
    /// Default `message.timestamp.after.max.ms`.
    #[serde(rename = "log.message.timestamp.after.max.ms")]
    pub log_message_timestamp_after_max_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        let log = LogConfig::default();
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./sluice-data"),
            listen: "127.0.0.1:9092".parse().expect("valid default address"),
            advertised_listener: None,
            rpc_listen: None,
            advertised_rpc_listener: None,
            seeds: Vec::new(),
            admin_listen: None,
            cores: None,
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            replica_lag_time_max_ms: sluice_raft::REPLICA_LAG_TIME_MAX_DEFAULT.as_millis() as u64,
            broker_heartbeat_interval_ms: BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT,
            broker_session_timeout_ms: BROKER_SESSION_TIMEOUT_MS_DEFAULT,
            broker_rack: None,
            message_max_bytes: log.max_batch_bytes,
            socket_request_max_bytes: SOCKET_REQUEST_MAX_BYTES_DEFAULT,
            queued_max_request_bytes: QUEUED_MAX_REQUEST_BYTES_DEFAULT,
            log_segment_bytes: log.segment_bytes,
            log_roll_ms: log.segment_ms,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 5 * 60 * 1000,
            log_index_interval_bytes: log.index_interval_bytes,
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: 1_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_topic_segment_bytes: 100 << 20,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_delete_retention_ms: 24 * 3600 * 1000,
            log_cleaner_dedupe_buffer_size: 128 << 20,
            log_open_files_max: sluice_storage::OPEN_FILES_MAX_DEFAULT,
            topic_partitions_per_shard: TOPIC_PARTITIONS_PER_SHARD_DEFAULT,
            fetch_max_bytes: FETCH_MAX_BYTES_DEFAULT,
            log_message_timestamp_before_max_ms: MESSAGE_TIMESTAMP_BEFORE_MAX_MS_DEFAULT,
            log_message_timestamp_after_max_ms: MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.socket_request_max_bytes > i32::MAX as usize || self.socket_request_max_bytes < 64 {
            return Err(ConfigError::Invalid(
                "socket.request.max.bytes must be in 64..=2^31-1".into(),
            ));
        }
        if self.queued_max_request_bytes < self.socket_request_max_bytes {
            return Err(ConfigError::Invalid(
                "queued.max.request.bytes must be at least socket.request.max.bytes".into(),
            ));
        }
        if self.num_partitions < 1 || self.num_partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ConfigError::Invalid("num.partitions out of range".into()));
        }
        if self.default_replication_factor < 1 || self.offsets_topic_replication_factor < 1 {
            return Err(ConfigError::Invalid(
                "default.replication.factor and offsets.topic.replication.factor must be at \
                 least 1"
                    .into(),
            ));
        }
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&self.offsets_topic_num_partitions) {
            return Err(ConfigError::Invalid(
                "offsets.topic.num.partitions out of range".into(),
            ));
        }
        if self.group_max_size == 0 {
            return Err(ConfigError::Invalid(
                "group.max.size must be at least 1".into(),
            ));
        }
        if self.topic_partitions_per_shard == 0 {
            return Err(ConfigError::Invalid(
                "topic.partitions.per.shard must be at least 1".into(),
            ));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return Err(ConfigError::Invalid(
                "broker.heartbeat.interval.ms must be at least 1 and below \
                 broker.session.timeout.ms"
                    .into(),
            ));
        }
        if self.cores == Some(0) {
            return Err(ConfigError::Invalid("cores must be at least 1".into()));
        }
        self.validate_seeds()
    }

    /// The seeds are the initial voters' RPC addresses, the same list on every initial
    /// broker; a broker whose own address is not among them joins the cluster they formed.
    fn validate_seeds(&self) -> Result<(), ConfigError> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        if self.advertised_rpc().is_none() {
            return Err(ConfigError::Invalid(
                "seeds need rpc.listen (--rpc-listen): a seed is a broker's RPC address".into(),
            ));
        }
        for seed in &self.seeds {
            if seed
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ConfigError::Invalid(format!(
                    "seed {seed:?} is not HOST:PORT"
                )));
            }
        }
        Ok(())
    }

    /// Whether this broker is one of the controller's voters: it is among the seeds, or
    /// there are none (a one-node cluster).
    pub fn is_seed(&self) -> bool {
        self.seeds.is_empty()
            || self
                .advertised_rpc()
                .is_some_and(|own| self.seeds.contains(&own))
    }

    /// This broker's RPC address as peers reach it, if it listens for RPC.
    pub fn advertised_rpc(&self) -> Option<String> {
        match (&self.advertised_rpc_listener, self.rpc_listen) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(l)) => Some(l.to_string()),
            (None, None) => None,
        }
    }

    /// This broker as it registers with the controller.
    pub fn broker_info(&self) -> crate::metadata::BrokerInfo {
        let (host, port) = self.advertised();
        crate::metadata::BrokerInfo {
            id: self.node_id,
            host,
            port,
            rpc: self.advertised_rpc().unwrap_or_default(),
            rack: self.broker_rack.clone(),
        }
    }

    /// (host, port) clients should connect to.
    pub fn advertised(&self) -> (String, i32) {
        if let Some(a) = &self.advertised_listener {
            if let Some((h, p)) = a.rsplit_once(':') {
                if let Ok(p) = p.parse() {
                    return (h.trim_matches(|c| c == '[' || c == ']').to_string(), p);
                }
            }
        }
        (self.listen.ip().to_string(), self.listen.port() as i32)
    }

    /// Topic-level defaults, as Kafka reports them in DescribeConfigs.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("cleanup.policy".into(), "delete".into());
        m.insert("retention.ms".into(), self.log_retention_ms.to_string());
        m.insert(
            "retention.bytes".into(),
            self.log_retention_bytes.to_string(),
        );
        m.insert("segment.bytes".into(), self.log_segment_bytes.to_string());
        m.insert("segment.ms".into(), self.log_roll_ms.to_string());
        m.insert(
            "max.message.bytes".into(),
            self.message_max_bytes.to_string(),
        );
        m.insert(
            "index.interval.bytes".into(),
            self.log_index_interval_bytes.to_string(),
        );
        m.insert("message.timestamp.type".into(), "CreateTime".into());
        m.insert(
            "message.timestamp.before.max.ms".into(),
            self.log_message_timestamp_before_max_ms.to_string(),
        );
        m.insert(
            "message.timestamp.after.max.ms".into(),
            self.log_message_timestamp_after_max_ms.to_string(),
        );
        m.insert("min.insync.replicas".into(), "1".into());
        m.insert("compression.type".into(), "producer".into());
        m.insert(
            "delete.retention.ms".into(),
            self.log_cleaner_delete_retention_ms.to_string(),
        );
        m.insert(
            "min.cleanable.dirty.ratio".into(),
            self.log_cleaner_min_cleanable_ratio.to_string(),
        );
        m
    }

    /// The record-level rules of a topic: its overrides over the broker defaults.
    pub fn record_rules(&self, overrides: &BTreeMap<String, String>) -> RecordRules {
        let get = |k: &str| overrides.get(k).and_then(|v| v.parse::<i64>().ok());
        RecordRules {
            log_append_time: overrides
                .get("message.timestamp.type")
                .is_some_and(|v| v == "LogAppendTime"),
            // Kafka checks keys whenever compaction is on, with or without `delete`.
            keys_required: overrides
                .get("cleanup.policy")
                .is_some_and(|p| p.contains("compact")),
            timestamp_before_max_ms: get("message.timestamp.before.max.ms")
                .unwrap_or(self.log_message_timestamp_before_max_ms),
            timestamp_after_max_ms: get("message.timestamp.after.max.ms")
                .unwrap_or(self.log_message_timestamp_after_max_ms),
        }
    }

    /// The storage config of a topic: its overrides over the broker defaults.
    /// `broker.heartbeat.interval.ms`.
    pub fn broker_heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.broker_heartbeat_interval_ms)
    }

    /// `broker.session.timeout.ms`.
    pub fn broker_session_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.broker_session_timeout_ms)
    }

    /// `replica.lag.time.max.ms`.
    pub fn replica_lag(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.replica_lag_time_max_ms)
    }

    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let get = |k: &str| overrides.get(k).and_then(|v| v.parse::<i64>().ok());
        // A compact-only topic (`__consumer_offsets` among them) is never cut by age or size,
        // as in Kafka: that would lose the latest value of a key. The cleaner compacts it.
        let compact_only = overrides
            .get("cleanup.policy")
            .is_some_and(|p| p.contains("compact") && !p.contains("delete"));
        let retention = |v: i64| (v >= 0 && !compact_only).then_some(v as u64);
        LogConfig {
            max_batch_bytes: get("max.message.bytes")
                .map_or(self.message_max_bytes, |v| v.max(0) as usize),
            segment_bytes: get("segment.bytes").map_or(self.log_segment_bytes, |v| v.max(0) as u64),
            segment_ms: get("segment.ms").map_or(self.log_roll_ms, |v| v.max(1) as u64),
            index_interval_bytes: get("index.interval.bytes")
                .map_or(self.log_index_interval_bytes, |v| v.max(1) as u64),
            retention_ms: retention(get("retention.ms").unwrap_or(self.log_retention_ms)),
            retention_bytes: retention(get("retention.bytes").unwrap_or(self.log_retention_bytes)),
            ..LogConfig::default()
        }
    }
}

/// Topic configs a client may set, with a check of each value. Unknown keys are refused
/// with INVALID_CONFIG, as Kafka does.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| match value.parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(format!("{key} must be an integer >= {min}")),
    };
    match key {
        "retention.ms" | "retention.bytes" => int(-1),
        "delete.retention.ms" => int(0),
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err("min.cleanable.dirty.ratio must be a number in [0, 1]".into()),
        },
        "segment.bytes" => int(sluice_storage::SEGMENT_BYTES_MIN as i64),
        "segment.ms" | "index.interval.bytes" | "max.message.bytes" => int(1),
        "min.insync.replicas" => int(1),
        "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => int(0),
        "cleanup.policy" => match value {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err("cleanup.policy must be delete, compact or both".into()),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("message.timestamp.type must be CreateTime or LogAppendTime".into()),
        },
        "compression.type" => match value {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err("unknown compression.type".into()),
        },
        _ => Err(format!("unknown topic config {key}")),
    }
}

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_MAX_CHARS
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_only_topics_are_never_deleted_by_retention() {
        let c = Config::default();
        let compact: BTreeMap<String, String> =
            [("cleanup.policy".to_string(), "compact".to_string())].into();
        let lc = c.log_config(&compact);
        assert_eq!((lc.retention_ms, lc.retention_bytes), (None, None));
        let both: BTreeMap<String, String> = [
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]
        .into();
        assert_eq!(c.log_config(&both).retention_ms, Some(1000));
        assert_eq!(
            c.log_config(&BTreeMap::new()).retention_ms,
            Some(7 * 24 * 3600 * 1000)
        );
    }
}
