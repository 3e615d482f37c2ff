//! Fault injection for the fault suite (`tests/faults`): a slow disk. Every log's
//! group-commit fdatasync and every checkpoint's waits `sync_delay` first. Zero (the only
//! value outside tests) costs one relaxed load per sync; the broker sets it only through
//! its admin port, and only when started with `SLUICE_TEST_FAULTS=1`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest delay accepted: a stalled disk, not a dead one.
pub const SYNC_DELAY_MAX: Duration = Duration::from_secs(10);

static SYNC_DELAY_US: AtomicU64 = AtomicU64::new(0);

/// Delays every later fdatasync of this process by `d` (at most `SYNC_DELAY_MAX`).
pub fn set_sync_delay(d: Duration) {
    let d = d.min(SYNC_DELAY_MAX);
    SYNC_DELAY_US.store(d.as_micros() as u64, Ordering::Relaxed);
}

/// Waits out the injected delay, if any, before a sync.
pub(crate) async fn before_sync() {
    let us = SYNC_DELAY_US.load(Ordering::Relaxed);
    if us > 0 {
        glommio::timer::sleep(Duration::from_micros(us)).await;
    }
}
