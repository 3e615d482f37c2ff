//! Durable-append latency at a fixed rate, open loop: request i is due at `t0 + i / rate`
//! whatever happened to earlier ones, and its latency runs from that due time, so a stall
//! shows up in every request it delays (no coordinated omission).

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use glommio::{spawn_local, timer::sleep};
use hdrhistogram::Histogram;
use sluice_storage::{PartitionLog, Term};

use crate::{align_up, log_config, BenchResult};

/// Largest latency the histograms hold (longer ones are clamped to it): 10 minutes in ns.
const MAX_LATENCY_NS: u64 = 600_000_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// One side of the comparison: something that makes one batch durable.
pub trait DurableOp {
    fn start(&self) -> impl Future<Output = BenchResult<()>> + 'static;
}

/// `append` then `flush` on a `PartitionLog`.
pub struct LogOp {
    log: Rc<PartitionLog>,
    batch: Rc<Vec<u8>>,
}

impl LogOp {
    pub async fn open(dir: &Path, batch: Rc<Vec<u8>>) -> BenchResult<Self> {
        let log = Rc::new(PartitionLog::open(dir, log_config()).await?);
        Ok(LogOp { log, batch })
    }

    pub async fn close(self) -> BenchResult<()> {
        let log = Rc::try_unwrap(self.log).map_err(|_| "log still shared after the run")?;
        log.close().await?;
        Ok(())
    }
}

impl DurableOp for LogOp {
    fn start(&self) -> impl Future<Output = BenchResult<()>> + 'static {
        let (log, batch) = (self.log.clone(), self.batch.clone());
        async move {
            log.append(&batch, Term(1)).await?;
            log.flush().await?;
            Ok(())
        }
    }
}

/// The floor: an O_DIRECT write of the same size at the next aligned position, then
/// fdatasync. Requests do not wait for each other (no grouping, no lock).
pub struct RawOp {
    file: Rc<DmaFile>,
    batch: Rc<Vec<u8>>,
    next: Cell<u64>,
}

impl RawOp {
    pub async fn open(path: &Path, batch: Rc<Vec<u8>>) -> BenchResult<Self> {
        let file = Rc::new(DmaFile::create(path).await?);
        Ok(RawOp {
            file,
            batch,
            next: Cell::new(0),
        })
    }

    pub async fn close(self) -> BenchResult<()> {
        let file = Rc::try_unwrap(self.file).map_err(|_| "raw file still shared after the run")?;
        file.close().await?;
        Ok(())
    }
}

impl DurableOp for RawOp {
    fn start(&self) -> impl Future<Output = BenchResult<()>> + 'static {
        let padded = align_up(self.batch.len() as u64);
        let pos = self.next.get();
        self.next.set(pos + padded);
        let (file, batch) = (self.file.clone(), self.batch.clone());
        async move {
            let mut buf = file.alloc_dma_buffer(padded as usize);
            let b = buf.as_bytes_mut();
            b[..batch.len()].copy_from_slice(&batch);
            b[batch.len()..].fill(0);
            let n = file.write_at(buf, pos).await?;
            if n as u64 != padded {
                return Err(format!("short direct write: {n} of {padded} bytes").into());
            }
            file.fdatasync().await?;
            Ok(())
        }
    }
}

/// Issues `rate` requests a second for `duration` and records each latency (ns, from its due
/// time to durable) into `hist`.
pub async fn open_loop(
    op: &impl DurableOp,
    rate: f64,
    duration: Duration,
    hist: &mut Histogram<u64>,
) -> BenchResult<()> {
    let n = (rate * duration.as_secs_f64()).round() as u64;
    let interval_ns = 1e9 / rate;
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = t0 + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let now = Instant::now();
        if due > now {
            sleep(due - now).await;
        }
        let fut = op.start();
        tasks.push(spawn_local(async move {
            fut.await?;
            Ok::<u64, Box<dyn std::error::Error>>(due.elapsed().as_nanos() as u64)
        }));
    }
    for t in tasks {
        hist.saturating_record(t.await?);
    }
    Ok(())
}
