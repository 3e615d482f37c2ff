//! `micro-bench`: the CPU cost of the pieces on Sluice's produce and fetch paths, one at a
//! time, on one thread: protocol decode/encode of Produce and Fetch (through
//! `sluice-protocol`, as the broker calls it), CRC32C over batch-sized buffers, and the
//! storage append (`PartitionLog::append`, in memory, and append + flush on the data disk).
//!
//! Each case runs `--reps` repetitions of a timed loop of at least `--min-ms`; the median
//! repetition is reported as ns per operation and MB/s of payload. Numbers are for comparing
//! changes on one machine, not across machines.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use serde::Serialize;
use sluice_protocol::{decode_request, encode_response_message, VersionRange, VersionTable};
use sluice_storage::{LogConfig, PartitionLog, Term};

// The storage benchmark's batch builder: valid v2 batches of an exact size.
#[path = "storage-bench/batch.rs"]
mod batch;

#[derive(Parser, Debug)]
#[command(about = "CPU cost of protocol decode/encode, CRC32C and storage append")]
struct Args {
    /// Repetitions per case; the median is reported.
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Minimum duration of one repetition, ms.
    #[arg(long, default_value_t = 200)]
    min_ms: u64,
    /// Directory for the storage cases (on the data disk; not tmpfs).
    #[arg(long, default_value = "target/micro-bench-data")]
    dir: std::path::PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Install the Prometheus recorder the broker installs, so storage records its metrics
    /// and the produce-path case does the broker's per-request metric updates for real
    /// (without it those handles are the `metrics` crate's no-ops).
    #[arg(long)]
    metrics: bool,
}

/// The broker's latency buckets (`broker/src/telemetry.rs`), so histogram recording costs
/// the same here.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Operations between two histogram folds in the metrics-only case: bounds the pending
/// samples (8 bytes each) while amortizing the fold, as the broker's 5 s upkeep does.
const UPKEEP_EVERY_OPS: u32 = 1 << 20;

/// What the broker updates per produced partition: the request's latency histogram and
/// counter (per API) and the topic's bytes and records in, each handle resolved once.
struct ProduceMetrics {
    latency: metrics::Histogram,
    requests: metrics::Counter,
    bytes_in: metrics::Counter,
    records_in: metrics::Counter,
}

impl ProduceMetrics {
    fn new() -> Self {
        let topic = [("topic", "bench"), ("shard", "0")];
        ProduceMetrics {
            latency: metrics::histogram!("sluice_request_duration_seconds", "api" => "Produce", "shard" => "0"),
            requests: metrics::counter!("sluice_requests_total", "api" => "Produce", "shard" => "0"),
            bytes_in: metrics::counter!("sluice_topic_bytes_in_total", &topic),
            records_in: metrics::counter!("sluice_topic_records_in_total", &topic),
        }
    }
}

#[derive(Serialize)]
struct CaseResult {
    name: String,
    /// Payload bytes one operation handles.
    bytes_per_op: usize,
    ns_per_op: f64,
    mb_per_s: f64,
}

/// Runs `op` in a loop for at least `min`, `reps` times; the median ns per call.
fn time(reps: usize, min: Duration, mut op: impl FnMut()) -> f64 {
    let mut per_op: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < min {
                for _ in 0..16 {
                    op();
                }
                n += 16;
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op[per_op.len() / 2]
}

/// The body of a Produce v9 request: one topic, `partitions` partitions, one batch each.
fn produce_frame(partitions: i32, batch: &Bytes) -> Bytes {
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("bench"));
    t.partition_data = (0..partitions)
        .map(|p| {
            let mut d = PartitionProduceData::default();
            d.index = p;
            d.records = Some(batch.clone());
            d
        })
        .collect();
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 30_000;
    r.topic_data = vec![t];
    request_body(ApiKey::Produce, 9, |b| {
        r.encode(b, 9).expect("encode produce")
    })
}

fn fetch_frame(partitions: i32) -> Bytes {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("bench"));
    t.partitions = (0..partitions)
        .map(|p| {
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = 1_000_000;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    let mut r = FetchRequest::default();
    r.max_wait_ms = 500;
    r.max_bytes = 50 << 20;
    r.topics = vec![t];
    request_body(ApiKey::Fetch, 12, |b| {
        r.encode(b, 12).expect("encode fetch")
    })
}

fn request_body(key: ApiKey, version: i16, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("micro-bench")));
    let mut b = BytesMut::new();
    encode_request_header_into_buffer(&mut b, &header).expect("encode header");
    encode(&mut b);
    b.freeze()
}

fn fetch_response(partitions: i32, batch: &Bytes) -> FetchResponse {
    let mut t = FetchableTopicResponse::default();
    t.topic = TopicName(StrBytes::from_static_str("bench"));
    t.partitions = (0..partitions)
        .map(|p| {
            let mut d = PartitionData::default();
            d.partition_index = p;
            d.high_watermark = 2_000_000;
            d.last_stable_offset = 2_000_000;
            d.records = Some(batch.clone());
            d
        })
        .collect();
    let mut r = FetchResponse::default();
    r.responses = vec![t];
    r
}

fn main() {
    let args = Args::parse();
    let prometheus = args.metrics.then(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS_SECONDS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("install recorder");
        handle
    });
    let min = Duration::from_millis(args.min_ms);
    let mut results = Vec::new();
    let mut report = |name: &str, bytes: usize, ns: f64| {
        let mb_per_s = bytes as f64 / ns * 1e3;
        println!("{name:<44} {ns:>12.0} ns/op {mb_per_s:>10.0} MB/s");
        results.push(CaseResult {
            name: name.to_string(),
            bytes_per_op: bytes,
            ns_per_op: ns,
            mb_per_s,
        });
    };

    let table = VersionTable::new([
        (ApiKey::Produce, VersionRange::new(3, 13)),
        (ApiKey::Fetch, VersionRange::new(4, 17)),
    ])
    .expect("version table");

    // Produce: 16 partitions × one 16 KiB batch, as a busy client sends.
    let batch16k = Bytes::from(batch::batch(16 << 10));
    let produce = produce_frame(16, &batch16k);
    let payload = 16 * batch16k.len();
    let ns = time(args.reps, min, || {
        let r = decode_request(produce.clone(), &table).expect("decode produce");
        std::hint::black_box(r);
    });
    report("protocol: decode Produce v9 (16 × 16 KiB)", payload, ns);

    let fetch = fetch_frame(16);
    let ns = time(args.reps, min, || {
        let r = decode_request(fetch.clone(), &table).expect("decode fetch");
        std::hint::black_box(r);
    });
    report(
        "protocol: decode Fetch v12 (16 partitions)",
        fetch.len(),
        ns,
    );

    // Fetch response: 16 partitions × 64 KiB of stored batches, as a catching-up consumer gets.
    let batch64k = Bytes::from(batch::batch(64 << 10));
    let resp = fetch_response(16, &batch64k);
    let ns = time(args.reps, min, || {
        let b = encode_response_message(12, 1, &resp).expect("encode fetch response");
        std::hint::black_box(b);
    });
    report(
        "protocol: encode Fetch v12 response (16 × 64 KiB)",
        16 * batch64k.len(),
        ns,
    );

    for size in [1024usize, 16 << 10, 1 << 20] {
        let buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let ns = time(args.reps, min, || {
            std::hint::black_box(crc32c::crc32c(std::hint::black_box(&buf)));
        });
        report(&format!("crc32c: {} KiB", size >> 10), size, ns);
    }
    let batch1k = batch::batch(1 << 10);
    let ns = time(args.reps, min, || {
        std::hint::black_box(sluice_storage::validate_batch(&batch16k, 1 << 20).expect("valid"));
    });
    report(
        "storage: validate 16 KiB batch (CRC32C)",
        batch16k.len(),
        ns,
    );

    // The broker folds histogram samples every few seconds (telemetry::UPKEEP_INTERVAL);
    // without it they pile up in memory, so the cases below fold too.
    let upkeep = {
        let h = prometheus.clone();
        move || {
            if let Some(h) = &h {
                h.run_upkeep();
            }
        }
    };
    // The metric updates alone, as the broker does them per produced partition, with the
    // fold amortized over them as it would be.
    let m = ProduceMetrics::new();
    let mut since_upkeep = 0u32;
    let ns = time(args.reps, min, || {
        since_upkeep += 1;
        if since_upkeep == UPKEEP_EVERY_OPS {
            since_upkeep = 0;
            upkeep();
        }
        m.bytes_in.increment(std::hint::black_box(1024));
        m.records_in.increment(std::hint::black_box(1));
        m.requests.increment(1);
        m.latency.record(std::hint::black_box(0.000_3));
    });
    report(
        "metrics: one produce's updates (3 counters, 1 histogram)",
        0,
        ns,
    );

    // The produce path on the owner shard without the network: decode a one-partition
    // Produce, append its batch and the broker's metric updates for it (an untimed
    // fdatasync every 256). Run with and without `--metrics` to see what metrics cost.
    let produce1k = produce_frame(1, &Bytes::from(batch1k.clone()));
    let produce_table = table;
    // Storage: append (validation, frame, CRC, cache) with a flush every 256 appends.
    let batch16k = batch16k.to_vec();
    let dir = args.dir.clone();
    let reps = args.reps;
    let storage = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create bench dir");
            let mut out = Vec::new();
            for (label, batch) in [("1 KiB", &batch1k), ("16 KiB", &batch16k)] {
                let path = dir.join(format!("append-{}", batch.len()));
                let log = PartitionLog::open(&path, LogConfig::default())
                    .await
                    .expect("open log");
                // Appends are memory work; the fdatasync every 256 keeps the unflushed
                // bytes bounded and shows what a group commit costs per batch.
                let mut samples = Vec::new();
                for _ in 0..reps {
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < min {
                        log.append(batch, Term(1)).await.expect("append");
                        n += 1;
                        if n.is_multiple_of(256) {
                            log.flush().await.expect("flush");
                        }
                    }
                    samples.push(start.elapsed().as_nanos() as f64 / n as f64);
                }
                samples.sort_by(f64::total_cmp);
                out.push((
                    format!("storage: append {label}, flush every 256"),
                    batch.len(),
                    samples[samples.len() / 2],
                ));
                log.close().await.expect("close");
            }
            let log = PartitionLog::open(&dir.join("produce-path"), LogConfig::default())
                .await
                .expect("open log");
            let m = ProduceMetrics::new();
            let mut samples = Vec::new();
            for _ in 0..reps {
                let start = Instant::now();
                let (mut n, mut busy) = (0u64, Duration::ZERO);
                while start.elapsed() < min {
                    let began = Instant::now();
                    let req = decode_request(produce1k.clone(), &produce_table).expect("decode");
                    let sluice_protocol::RequestKind::Produce(r) = req.body else {
                        unreachable!("a produce frame")
                    };
                    let records = r.topic_data[0].partition_data[0]
                        .records
                        .clone()
                        .expect("records");
                    let h = sluice_storage::parse_header(&records).expect("header");
                    log.append(&records, Term(1)).await.expect("append");
                    m.bytes_in.increment(records.len() as u64);
                    m.records_in.increment(h.records_count as u64);
                    m.requests.increment(1);
                    m.latency.record(began.elapsed().as_secs_f64());
                    busy += began.elapsed();
                    n += 1;
                    // Outside the timed part: the disk's fdatasync tail would drown the CPU
                    // cost this case is for (one histogram record per flush is amortized
                    // over 256 appends anyway).
                    if n.is_multiple_of(256) {
                        log.flush().await.expect("flush");
                        upkeep();
                    }
                }
                samples.push(busy.as_nanos() as f64 / n as f64);
            }
            samples.sort_by(f64::total_cmp);
            out.push((
                "produce path: decode + append 1 KiB + metric updates".to_string(),
                batch1k.len(),
                samples[samples.len() / 2],
            ));
            log.close().await.expect("close");
            let _ = std::fs::remove_dir_all(&dir);
            out
        })
        .expect("spawn executor")
        .join()
        .expect("storage cases");
    for (name, bytes, ns) in storage {
        report(&name, bytes, ns);
    }
    if let Some(h) = prometheus {
        // Proves the recorder was live: the produce-path samples are in the exposition.
        let text = h.render();
        assert!(text.contains("sluice_requests_total{api=\"Produce\",shard=\"0\"}"));
    }

    if let Some(path) = args.json {
        let json = serde_json::json!({
            "metrics": args.metrics,
            "reps": args.reps,
            "min_ms": args.min_ms,
            "results": results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
    }
}
