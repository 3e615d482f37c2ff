//! `storage-bench`: the partition log against the raw disk floor, in one run on one machine.
//!
//! 1. Throughput: K producers loop `append` → `flush` (group commit) for a fixed time; then the
//!    raw floor writes the same bytes with O_DIRECT and an fdatasync after exactly the amounts
//!    each of the log's fdatasyncs covered (same fsyncs per byte, same order).
//! 2. Latency: open loop at a fixed rate, one batch per request made durable (log: append +
//!    flush; raw: O_DIRECT write at the next aligned position + fdatasync), latency counted
//!    from each request's due time; log and raw alternate in rounds so disk noise hits both.
//!
//! Everything runs on one glommio executor thread, as a shard would. See benches/README.md.

mod batch;
mod latency;
mod report;
mod throughput;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_storage::LogConfig;

use report::{mb_per_s, ratio, Percentiles, Report, TputRound, TputSide};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Direct-I/O block the raw floor aligns to (the log writes 4 KiB blocks too).
const BLOCK_BYTES: u64 = 4096;

pub fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// The log's configuration for every run: Kafka defaults, no time retention.
pub fn log_config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Measures sluice-storage's PartitionLog against raw O_DIRECT write + fdatasync on the same
/// disk, in one run: group-commit throughput and open-loop durable-append latency.
#[derive(Parser, Debug, Clone)]
#[command(name = "storage-bench", version)]
struct Args {
    /// Directory to put the data in (a fresh subdirectory is made and removed afterwards).
    /// Default: ./target/bench-data.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Batch sizes in bytes for the throughput test (whole RecordBatch v2, header included).
    #[arg(long, value_delimiter = ',', default_value = "1024,16384")]
    sizes: Vec<usize>,
    /// Concurrent producer tasks in the throughput test.
    #[arg(long, default_value_t = 32)]
    producers: usize,
    /// Seconds the log runs in each throughput round (the raw replay takes what it takes).
    #[arg(long, default_value_t = 1.0)]
    tput_secs: f64,
    /// Throughput rounds per batch size (log run, then its raw replay). Short, many rounds
    /// spread the disk's slow spells over both sides.
    #[arg(long, default_value_t = 8)]
    tput_rounds: usize,
    /// Batch size in bytes for the latency test.
    #[arg(long, default_value_t = 1024)]
    lat_size: usize,
    /// Requests per second in the latency test.
    #[arg(long, default_value_t = 1000.0)]
    lat_rate: f64,
    /// Seconds per side in each latency round.
    #[arg(long, default_value_t = 5.0)]
    lat_secs: f64,
    /// Latency rounds; each runs the log and the raw floor, alternating which goes first.
    #[arg(long, default_value_t = 6)]
    lat_rounds: usize,
    /// Unrecorded seconds of latency traffic per side before the first round.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Skip the throughput test.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the latency test.
    #[arg(long)]
    skip_latency: bool,
    /// Pin the executor thread to this CPU (otherwise it runs where the process may run,
    /// e.g. as restricted by `taskset`).
    #[arg(long)]
    cpu: Option<usize>,
    /// Keep the data files instead of removing them.
    #[arg(long)]
    keep: bool,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("storage-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> BenchResult<()> {
    if args.sizes.is_empty() || args.producers == 0 || args.lat_rate <= 0.0 {
        return Err("need at least one size, one producer and a positive rate".into());
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-data"));
    std::fs::create_dir_all(&base)?;
    // Absolute: glommio opens directories relative to no fd, so relative paths fail (EBADF).
    let base = base.canonicalize()?;
    let run_dir = base.join(format!("storage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let placement = match args.cpu {
        Some(c) => Placement::Fixed(c),
        None => Placement::Unbound,
    };
    let (a, d) = (args.clone(), run_dir.clone());
    let outcome = LocalExecutorBuilder::new(placement)
        .name("storage-bench")
        .spawn(move || async move { run(&a, &d).await.map_err(|e| e.to_string()) })
        .map_err(|e| format!("cannot start the glommio executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"));
    if !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
        if args.dir.is_none() {
            let _ = std::fs::remove_dir(&base); // only if empty
        }
    }
    let report = outcome??;
    print!("{}", report::table(&report));
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

async fn run(args: &Args, dir: &Path) -> BenchResult<Report> {
    // glommio probes each device once per thread with the first DMA file opened; this makes
    // that a non-empty file (see sluice_storage::check_direct_io) before the raw files.
    sluice_storage::check_direct_io(dir).await?;
    let mut out = Report {
        tool: "storage-bench",
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: report::machine(dir),
        config: report::Config {
            sizes: args.sizes.clone(),
            producers: args.producers,
            tput_secs: args.tput_secs,
            tput_rounds: args.tput_rounds,
            lat_size: args.lat_size,
            lat_rate: args.lat_rate,
            lat_secs: args.lat_secs,
            lat_rounds: args.lat_rounds,
            warmup_secs: args.warmup_secs,
        },
        throughput: Vec::new(),
        latency: None,
    };
    if !args.skip_throughput {
        for &size in &args.sizes {
            out.throughput.push(throughput_size(args, dir, size).await?);
        }
    }
    if !args.skip_latency && args.lat_rounds > 0 {
        out.latency = Some(latency(args, dir).await?);
    }
    Ok(out)
}

async fn throughput_size(args: &Args, dir: &Path, size: usize) -> BenchResult<report::Throughput> {
    let batch = Rc::new(batch::batch(size));
    let size = batch.len();
    let (mut log_total, mut raw_total) = (TputSide::default(), TputSide::default());
    let mut rounds = Vec::new();
    for r in 0..args.tput_rounds {
        let log_dir = dir.join(format!("tput-{size}-{r}"));
        let lr = throughput::log_run(
            &log_dir,
            batch.clone(),
            args.producers,
            secs(args.tput_secs),
        )
        .await?;
        if !args.keep {
            std::fs::remove_dir_all(&log_dir)?;
        }
        let synced: u64 = lr.groups.iter().sum();
        if synced != lr.batches {
            return Err(format!(
                "fsync accounting is off: {synced} batches seen synced, {} appended",
                lr.batches
            )
            .into());
        }
        let chunks: Vec<u64> = lr.groups.iter().map(|g| g * size as u64).collect();
        let raw_path = dir.join(format!("tput-{size}-{r}.raw"));
        let rr = throughput::raw_replay(&raw_path, &batch, &chunks).await?;
        if !args.keep {
            std::fs::remove_file(&raw_path)?;
        }
        let bytes = lr.batches * size as u64;
        let log = TputSide {
            bytes,
            secs: lr.elapsed.as_secs_f64(),
            mb_per_s: mb_per_s(bytes, lr.elapsed.as_secs_f64()),
            fsyncs: lr.groups.len() as u64,
            device_bytes: None,
        };
        let raw = TputSide {
            bytes,
            secs: rr.elapsed.as_secs_f64(),
            mb_per_s: mb_per_s(bytes, rr.elapsed.as_secs_f64()),
            fsyncs: chunks.len() as u64,
            device_bytes: Some(rr.written),
        };
        eprintln!(
            "throughput {size} B round {}: log {:.1} MB/s, raw {:.1} MB/s, {} fsyncs, {:.1} batches/fsync, per producer {}..{}",
            r + 1,
            log.mb_per_s,
            raw.mb_per_s,
            log.fsyncs,
            lr.batches as f64 / log.fsyncs.max(1) as f64,
            lr.per_producer.iter().min().unwrap_or(&0),
            lr.per_producer.iter().max().unwrap_or(&0),
        );
        rounds.push(TputRound {
            log_mb_per_s: log.mb_per_s,
            raw_mb_per_s: raw.mb_per_s,
            ratio: ratio(log.mb_per_s, raw.mb_per_s),
            fsyncs: log.fsyncs,
            avg_batches_per_fsync: lr.batches as f64 / log.fsyncs.max(1) as f64,
            producer_min_batches: lr.per_producer.iter().copied().min().unwrap_or(0),
            producer_max_batches: lr.per_producer.iter().copied().max().unwrap_or(0),
        });
        log_total.add(&log);
        raw_total.add(&raw);
    }
    // Reference: the raw floor if every fsync carried one batch from each producer, for one
    // round's time. Far above `raw` means the log's groups are smaller than they could be.
    let group = (args.producers * size) as u64;
    let raw_path = dir.join(format!("tput-{size}-full.raw"));
    let (fr, full_bytes) =
        throughput::raw_for(&raw_path, &batch, group, secs(args.tput_secs)).await?;
    if !args.keep {
        std::fs::remove_file(&raw_path)?;
    }
    let raw_full_groups = TputSide {
        bytes: full_bytes,
        secs: fr.elapsed.as_secs_f64(),
        mb_per_s: mb_per_s(full_bytes, fr.elapsed.as_secs_f64()),
        fsyncs: full_bytes / group,
        device_bytes: Some(fr.written),
    };
    Ok(report::Throughput {
        batch_bytes: size,
        producers: args.producers,
        log: log_total,
        raw: raw_total,
        ratio: ratio(log_total.mb_per_s, raw_total.mb_per_s),
        median_round_ratio: report::median(rounds.iter().map(|r| r.ratio).collect()),
        raw_full_groups,
        rounds,
    })
}

async fn latency(args: &Args, dir: &Path) -> BenchResult<report::Latency> {
    use latency::{histogram, open_loop, LogOp, RawOp};
    let batch = Rc::new(batch::batch(args.lat_size));
    let log = LogOp::open(&dir.join("lat-log"), batch.clone()).await?;
    let raw = RawOp::open(&dir.join("lat.raw"), batch.clone()).await?;
    let (rate, per_side) = (args.lat_rate, secs(args.lat_secs));
    if args.warmup_secs > 0.0 {
        let mut scratch = histogram();
        open_loop(&log, rate, secs(args.warmup_secs), &mut scratch).await?;
        open_loop(&raw, rate, secs(args.warmup_secs), &mut scratch).await?;
    }
    let (mut log_all, mut raw_all) = (histogram(), histogram());
    let mut rounds = Vec::new();
    for r in 0..args.lat_rounds {
        let (mut hl, mut hr) = (histogram(), histogram());
        if r % 2 == 0 {
            open_loop(&log, rate, per_side, &mut hl).await?;
            open_loop(&raw, rate, per_side, &mut hr).await?;
        } else {
            open_loop(&raw, rate, per_side, &mut hr).await?;
            open_loop(&log, rate, per_side, &mut hl).await?;
        }
        let round = report::LatRound {
            log: Percentiles::of(&hl),
            raw: Percentiles::of(&hr),
        };
        eprintln!(
            "latency round {}: p99.9 log {:.3} ms, raw {:.3} ms",
            r + 1,
            round.log.p999_us / 1e3,
            round.raw.p999_us / 1e3
        );
        rounds.push(round);
        log_all.add(&hl)?;
        raw_all.add(&hr)?;
    }
    log.close().await?;
    raw.close().await?;
    let (l, w) = (Percentiles::of(&log_all), Percentiles::of(&raw_all));
    Ok(report::Latency {
        batch_bytes: batch.len(),
        rate_per_s: rate,
        log: l,
        raw: w,
        ratio_p999: ratio(l.p999_us, w.p999_us),
        ratio_p99: ratio(l.p99_us, w.p99_us),
        ratio_p50: ratio(l.p50_us, w.p50_us),
        rounds,
    })
}
