//! Storage's own metrics, through the `metrics` crate's global recorder (whoever embeds the
//! log installs one; without it these are no-ops). Handles are resolved once per thread, so
//! recording is an atomic add. Names are generic: nothing here knows about Kafka.

use std::time::Duration;

use metrics::{counter, histogram, Counter, Histogram};

pub(crate) struct StorageMetrics {
    pub fdatasync: Histogram,
    pub written_bytes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
}

thread_local! {
    static METRICS: StorageMetrics = StorageMetrics {
        fdatasync: histogram!("sluice_storage_fdatasync_seconds"),
        written_bytes: counter!("sluice_storage_written_bytes_total"),
        cache_hits: counter!("sluice_storage_cache_hits_total"),
        cache_misses: counter!("sluice_storage_cache_misses_total"),
    };
}

pub(crate) fn with<R>(f: impl FnOnce(&StorageMetrics) -> R) -> R {
    METRICS.with(f)
}

pub(crate) fn fdatasync(took: Duration) {
    with(|m| m.fdatasync.record(took.as_secs_f64()));
}

/// Help texts for the exposition; call once after installing a recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(
        "sluice_storage_fdatasync_seconds",
        Unit::Seconds,
        "fdatasync of a log segment (one per group commit)."
    );
    describe_counter!(
        "sluice_storage_written_bytes_total",
        Unit::Bytes,
        "Bytes written to log segments with direct I/O (data blocks and preallocated zeros)."
    );
    describe_counter!(
        "sluice_storage_cache_hits_total",
        "Log reads served from the in-memory cache of recent entries."
    );
    describe_counter!(
        "sluice_storage_cache_misses_total",
        "Log reads that went to a segment file on disk."
    );
}
