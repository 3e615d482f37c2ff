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
            let _ = std::fs::remove_dir_all(&dir);
            out
        })
        .expect("spawn executor")
        .join()
        .expect("storage cases");
    for (name, bytes, ns) in storage {
        report(&name, bytes, ns);
    }

    if let Some(path) = args.json {
        let json = serde_json::json!({
            "reps": args.reps,
            "min_ms": args.min_ms,
            "results": results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write json");
    }
}
