//! The log cleaner: compacts the partitions of `cleanup.policy=compact` topics, the
//! consumer-offsets topic among them, on a low-share task queue of each shard.
//!
//! Every `log.cleaner.backoff.ms` a shard looks at its compacted partitions and runs a pass
//! (`PartitionLog::compact`) on each whose dirty ratio reached `min.cleanable.dirty.ratio`.
//! Compaction only touches sealed segments, and on one node everything sealed is durable and
//! below the high watermark, so nothing a client has not been acknowledged is ever compacted.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use sluice_storage::CompactionOptions;
use tracing::{info, warn};

use crate::metadata::Topic;
use crate::shard::Shard;

/// Whether a topic's `cleanup.policy` includes compaction.
pub fn compacts(t: &Topic) -> bool {
    t.configs
        .get("cleanup.policy")
        .is_some_and(|p| p.contains("compact"))
}

/// Starts the shard's cleaner, unless `log.cleaner.enable` is off.
pub fn start(shard: &Rc<Shard>) {
    if !shard.config.log_cleaner_enable {
        return;
    }
    let tq = glommio::executor().create_task_queue(
        glommio::Shares::Static(50),
        glommio::Latency::NotImportant,
        "cleaner",
    );
    let s = shard.clone();
    let every = Duration::from_millis(s.config.log_cleaner_backoff_ms.max(1));
    let spawned = glommio::spawn_local_into(
        async move {
            while !s.shutting_down.get() {
                glommio::timer::sleep(every).await;
                clean_once(&s).await;
            }
        },
        tq,
    );
    match spawned {
        Ok(t) => {
            t.detach();
        }
        Err(e) => warn!(error = %e, "cannot start the log cleaner"),
    }
}

async fn clean_once(s: &Rc<Shard>) {
    let image = s.metadata();
    for t in image.topics.values().filter(|t| compacts(t)) {
        let ratio = t
            .configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(s.config.log_cleaner_min_cleanable_ratio);
        let delete_retention_ms = t
            .configs
            .get("delete.retention.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(s.config.log_cleaner_delete_retention_ms);
        for p in 0..t.partitions {
            if s.shutting_down.get() {
                return;
            }
            let Some(part) = s.local_partition(&t.id, p) else {
                continue;
            };
            let dirty = part.dirty_ratio();
            if dirty == 0.0 || dirty < ratio {
                continue;
            }
            let opts = CompactionOptions {
                now_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                delete_retention_ms,
                max_key_map_bytes: s.config.log_cleaner_dedupe_buffer_size,
            };
            match part.compact(&opts, &decompress).await {
                Ok(st) if st.segments_rewritten > 0 => {
                    info!(topic = %t.name, partition = p, segments = st.segments_rewritten,
                        records_removed = st.records_removed, bytes_before = st.bytes_before,
                        bytes_after = st.bytes_after, "compacted")
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(topic = %t.name, partition = p, error = %e, "compaction failed")
                }
            }
            glommio::yield_if_needed().await;
        }
    }
}

/// Kafka's codecs, by the batch attributes' compression bits.
fn decompress(attributes: i16, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut b = Bytes::copy_from_slice(data);
    let copy = |out: &mut Bytes| Ok(out.to_vec());
    let r = match attributes & 0x07 {
        1 => Gzip::decompress(&mut b, copy),
        2 => Snappy::decompress(&mut b, copy),
        3 => Lz4::decompress(&mut b, copy),
        4 => Zstd::decompress(&mut b, copy),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| e.to_string())
}
