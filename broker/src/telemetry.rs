//! Prometheus metrics through the `metrics` crate: the recorder, the handles the hot paths
//! hold, and the gauges set at scrape time.
//!
//! Counters and histograms are updated where things happen, through handles resolved once
//! (per shard and API at start; per shard and topic, or error code, on first use): an
//! update is an atomic add, with no registry lookup and no lock. Gauges describing state (partition offsets and sizes,
//! group lag, shard utilisation) are set on each shard when `/metrics` is scraped, so the
//! hot path never maintains them. Every name and label is defined here; `docs/grafana/`
//! and the metrics test use exactly these names.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use sluice_protocol::kafka_protocol::messages::ApiKey;
use uuid::Uuid;

use crate::partition::Partition;

/// Histogram buckets for every latency, in seconds: 50 µs steps at the bottom because the
/// tail we promise is sub-millisecond-to-milliseconds, up to 10 s for long-polling fetches.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// How often shard 0 folds histogram samples into their buckets; without it samples pile
/// up in memory between scrapes (or forever, if nobody scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A gauge not set for this long disappears from the exposition: that is how a deleted
/// partition's or group's series go away (live ones are set at every scrape).
const STALE_GAUGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most group-lag series set per shard and scrape, so a shard holding offsets of millions of
/// group partitions keeps a bounded scrape.
const GROUP_LAG_SERIES_MAX: usize = 100_000;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder. Called once before any shard starts, so every handle a
/// shard resolves is a real one; only with an admin port, whose task runs `upkeep`.
pub fn install() -> Result<(), String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS_SECONDS)
        .map_err(|e| e.to_string())?
        .idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE_TIMEOUT))
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    HANDLE
        .set(handle)
        .map_err(|_| "metrics recorder installed twice".to_string())
}

/// The exposition in Prometheus text format (empty if the recorder is not installed).
/// Formatting is CPU work proportional to the series (over 100 ms for 10,000 partitions),
/// so it runs on the shard's blocking thread: the kernel time-slices it with the shard
/// (same CPU) instead of the shard's requests waiting for the whole render.
pub async fn render() -> String {
    let Some(h) = HANDLE.get().cloned() else {
        return String::new();
    };
    glommio::executor().spawn_blocking(move || h.render()).await
}

/// Folds pending histogram samples; shard 0 calls it every `UPKEEP_INTERVAL`.
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "sluice_request_duration_seconds",
        Unit::Seconds,
        "Time from a decoded request to its encoded response, by API."
    );
    describe_counter!("sluice_requests_total", "Requests handled, by API.");
    describe_counter!(
        "sluice_request_errors_total",
        "Error codes in responses (top-level and per partition), by API and Kafka error code."
    );
    describe_counter!(
        "sluice_topic_bytes_in_total",
        Unit::Bytes,
        "Record-batch bytes appended, by topic."
    );
    describe_counter!(
        "sluice_topic_records_in_total",
        "Records appended, by topic."
    );
    describe_counter!(
        "sluice_topic_bytes_out_total",
        Unit::Bytes,
        "Record-batch bytes sent to fetchers, by topic."
    );
    describe_counter!(
        "sluice_topic_records_out_total",
        "Records sent to fetchers, by topic."
    );
    describe_counter!(
        "sluice_connections_accepted_total",
        "Kafka connections accepted, by shard."
    );
    describe_gauge!(
        "sluice_connections_open",
        "Kafka connections open, by shard."
    );
    describe_gauge!(
        "sluice_partition_log_end_offset",
        "Next offset to be assigned in a partition."
    );
    describe_gauge!(
        "sluice_partition_high_watermark",
        "Offsets below this are committed (durable) and visible to consumers."
    );
    describe_gauge!(
        "sluice_partition_log_start_offset",
        "First offset still in a partition's log."
    );
    describe_gauge!(
        "sluice_partition_size_bytes",
        Unit::Bytes,
        "A partition's log on disk."
    );
    describe_gauge!(
        "sluice_group_lag",
        "High watermark minus the group's committed offset, per group and partition."
    );
    describe_gauge!(
        "sluice_storage_segments",
        "Log segments of the partitions a shard owns."
    );
    describe_gauge!(
        "sluice_shard_utilisation_ratio",
        "Share of wall time a shard spent running tasks since the previous scrape."
    );
    describe_gauge!(
        "sluice_shard_task_queue_utilisation_ratio",
        "Share of wall time one task queue of a shard ran since the previous scrape."
    );
    describe_counter!("sluice_shard_tasks_total", "Tasks a shard executed.");
    describe_counter!(
        "sluice_rpc_frames_sent_total",
        "Inter-broker RPC request frames a shard sent (each batches many Raft groups' messages)."
    );
    describe_counter!(
        "sluice_rpc_messages_sent_total",
        "Raft group messages (heartbeats, appends, votes) inside those frames."
    );
    describe_counter!(
        "sluice_rpc_sent_bytes_total",
        Unit::Bytes,
        "Bytes of inter-broker RPC request frames a shard sent."
    );
    describe_counter!(
        "sluice_shard_cross_shard_messages_total",
        "Jobs a shard sent to another shard (requests for partitions it does not own, metadata)."
    );
    sluice_storage::describe_metrics();
}

/// The handles of one API on one shard.
struct ApiHandles {
    latency: Histogram,
    requests: Counter,
}

/// A shard's metric handles, resolved when the shard starts (per API) or on first use (per
/// topic, per error code): after that every update is an atomic add.
pub struct ShardMetrics {
    shard: String,
    /// Indexed by API key; `None` for APIs not served.
    apis: Vec<Option<ApiHandles>>,
    errors: RefCell<HashMap<(i16, i16), Counter>>,
    topics: RefCell<HashMap<Uuid, Rc<TopicHandles>>>,
    pub connections_accepted: Counter,
    pub connections_open: Cell<u64>,
    pub cross_shard_messages: Counter,
    tasks: Counter,
    last_scrape: Cell<Instant>,
}

/// Bytes and records in and out of one topic, as counted on one shard.
pub struct TopicHandles {
    pub bytes_in: Counter,
    pub records_in: Counter,
    pub bytes_out: Counter,
    pub records_out: Counter,
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        let id = shard.to_string();
        let mut apis: Vec<Option<ApiHandles>> = Vec::new();
        for (key, _) in crate::handlers::ROUTES {
            let i = *key as usize;
            if apis.len() <= i {
                apis.resize_with(i + 1, || None);
            }
            let api = api_name(*key);
            apis[i] = Some(ApiHandles {
                latency: histogram!("sluice_request_duration_seconds", "api" => api.clone(), "shard" => id.clone()),
                requests: counter!("sluice_requests_total", "api" => api, "shard" => id.clone()),
            });
        }
        ShardMetrics {
            connections_accepted: counter!("sluice_connections_accepted_total", "shard" => id.clone()),
            cross_shard_messages: counter!("sluice_shard_cross_shard_messages_total", "shard" => id.clone()),
            tasks: counter!("sluice_shard_tasks_total", "shard" => id.clone()),
            connections_open: Cell::new(0),
            apis,
            errors: RefCell::new(HashMap::new()),
            topics: RefCell::new(HashMap::new()),
            last_scrape: Cell::new(Instant::now()),
            shard: id,
        }
    }

    /// One handled request: its latency and, for each error code in its response, an error.
    pub fn request(&self, api: ApiKey, started: Instant, errors: &[i16]) {
        if let Some(Some(h)) = self.apis.get(api as usize) {
            h.requests.increment(1);
            h.latency.record(started.elapsed().as_secs_f64());
        }
        if errors.is_empty() {
            return;
        }
        // Errors are the cold path: a shard-local map, resolved once per (API, code).
        let mut map = self.errors.borrow_mut();
        for &code in errors {
            map.entry((api as i16, code))
                .or_insert_with(|| {
                    counter!("sluice_request_errors_total",
                        "api" => api_name(api), "code" => code.to_string(), "shard" => self.shard.clone())
                })
                .increment(1);
        }
    }

    /// The counters of a topic on this shard, resolved on its first use here.
    pub fn topic(&self, id: Uuid, name: &str) -> Rc<TopicHandles> {
        if let Some(t) = self.topics.borrow().get(&id) {
            return t.clone();
        }
        let labels = [("topic", name.to_string()), ("shard", self.shard.clone())];
        let t = Rc::new(TopicHandles {
            bytes_in: counter!("sluice_topic_bytes_in_total", &labels),
            records_in: counter!("sluice_topic_records_in_total", &labels),
            bytes_out: counter!("sluice_topic_bytes_out_total", &labels),
            records_out: counter!("sluice_topic_records_out_total", &labels),
        });
        self.topics.borrow_mut().insert(id, t.clone());
        t
    }

    /// Sets this shard's RPC counters from what its peers link counted: (frames, group
    /// messages, bytes) sent.
    pub fn set_rpc_sent(&self, (frames, messages, bytes): (u64, u64, u64)) {
        let shard = self.shard.clone();
        counter!("sluice_rpc_frames_sent_total", "shard" => shard.clone()).absolute(frames);
        counter!("sluice_rpc_messages_sent_total", "shard" => shard.clone()).absolute(messages);
        counter!("sluice_rpc_sent_bytes_total", "shard" => shard).absolute(bytes);
    }

    /// Sets this shard's gauges: executor utilisation since the last scrape, connections,
    /// and the offsets and size of every partition it owns. Work is one map walk and a few
    /// atomic stores per partition (no I/O), so 10,000 partitions cost a few milliseconds.
    /// Returns each owned partition's high watermark for the group-lag pass.
    pub fn scrape(&self, partitions: &[Rc<Partition>]) -> HashMap<(String, i32), i64> {
        let now = Instant::now();
        let wall = now
            .duration_since(self.last_scrape.replace(now))
            .as_secs_f64();
        let ex = glommio::executor();
        // glommio hands out its counters since the previous read, so this is the only reader.
        let stats = ex.executor_stats();
        self.tasks.increment(stats.tasks_executed());
        if wall > 0.0 {
            gauge!("sluice_shard_utilisation_ratio", "shard" => self.shard.clone())
                .set(stats.executor_runtime().as_secs_f64() / wall);
            for q in ex.all_task_queue_stats(Vec::new()) {
                gauge!("sluice_shard_task_queue_utilisation_ratio",
                    "shard" => self.shard.clone(), "queue" => q.index().index().to_string())
                .set(q.runtime().as_secs_f64() / wall);
            }
        }
        gauge!("sluice_connections_open", "shard" => self.shard.clone())
            .set(self.connections_open.get() as f64);
        let mut segments = 0;
        let mut marks = HashMap::with_capacity(partitions.len());
        for p in partitions {
            let (m, g) = (p.watermarks(), p.gauges());
            g.log_end.set(p.log_end().0 as f64);
            g.high_watermark.set(m.high_watermark.0 as f64);
            g.log_start.set(m.log_start.0 as f64);
            g.size.set(p.size_bytes() as f64);
            segments += p.segment_count();
            marks.insert((p.topic.clone(), p.index), m.high_watermark.0 as i64);
        }
        gauge!("sluice_storage_segments", "shard" => self.shard.clone()).set(segments as f64);
        marks
    }
}

/// The gauges of one partition, resolved when it opens.
pub struct PartitionGauges {
    log_end: Gauge,
    high_watermark: Gauge,
    log_start: Gauge,
    size: Gauge,
}

impl PartitionGauges {
    pub fn new(topic: &str, partition: i32) -> Self {
        let labels = [
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        PartitionGauges {
            log_end: gauge!("sluice_partition_log_end_offset", &labels),
            high_watermark: gauge!("sluice_partition_high_watermark", &labels),
            log_start: gauge!("sluice_partition_log_start_offset", &labels),
            size: gauge!("sluice_partition_size_bytes", &labels),
        }
    }
}

/// Sets `sluice_group_lag` for the groups this shard coordinates, against the high
/// watermarks gathered from every shard. One gauge lookup per committed partition (at
/// most `GROUP_LAG_SERIES_MAX`): groups are few next to partitions, so handles are not kept.
pub fn set_group_lag(
    groups: &crate::groups::Coordinator,
    high_watermarks: &HashMap<(String, i32), i64>,
) {
    let groups = groups.groups.borrow();
    let committed = groups.iter().flat_map(|(name, g)| {
        g.offsets
            .iter()
            .map(move |((topic, p), c)| (name, topic, *p, c.offset))
    });
    for (name, topic, p, offset) in committed.take(GROUP_LAG_SERIES_MAX) {
        let Some(hw) = high_watermarks.get(&(topic.clone(), p)) else {
            continue;
        };
        let labels = [
            ("group", name.clone()),
            ("topic", topic.clone()),
            ("partition", p.to_string()),
        ];
        // Kafka's `--describe` lag: what the group has yet to consume, never negative.
        gauge!("sluice_group_lag", &labels).set((hw - offset).max(0) as f64);
    }
}

/// The API's name as Kafka's documentation spells it (`Produce`, `OffsetCommit`):
/// kafka-protocol's variant names are Kafka's names. Called only when handles are resolved.
fn api_name(key: ApiKey) -> String {
    format!("{key:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_are_kafkas() {
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(api_name(ApiKey::OffsetCommit), "OffsetCommit");
    }

    #[test]
    fn buckets_increase() {
        assert!(LATENCY_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
