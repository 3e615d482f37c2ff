//! What it costs to make many partitions' appends durable at once on one disk, by three
//! ways of syncing, measured in interleaved rounds of one run.
//!
//! Each round writes one 4 KiB block to each of `--files` O_DIRECT files (preallocated and
//! synced first, so the writes change no file size), then waits until all are durable:
//! - `each`: one fdatasync per file, all in flight at once (today: every partition
//!   flushes on its own);
//! - `syncfs`: one syncfs of the file system (one flush round per shard);
//! - `one`: a single fdatasync of one file, the floor a device cache flush sets (not a
//!   durability strategy: shown only to say what the disk itself costs).
//!
//! `fsync-share --files 48 --rounds 600 --dir D` prints JSON with p50/p99/p99.9/max per mode.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use glommio::io::OpenOptions;
use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;

const BLOCK: usize = 4096;
/// Blocks preallocated per file; rounds wrap around inside them.
const BLOCKS_PER_FILE: u64 = 1024;

#[derive(Parser)]
struct Args {
    /// Files written per round (16 partitions × 3 replicas on one disk is 48).
    #[arg(long, default_value_t = 48)]
    files: usize,
    /// Rounds per mode.
    #[arg(long, default_value_t = 600)]
    rounds: usize,
    /// Directory on the disk to measure [default: ./target/bench-data].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn sync_fs(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).expect("open dir");
    // SAFETY: syncfs on a descriptor owned by `f`, alive for the call.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0, "syncfs");
}

fn main() {
    let args = Args::parse();
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-data"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("tempdir");
    let dir = std::path::absolute(tmp.path()).expect("absolute dir");
    let out = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut files = Vec::new();
            for i in 0..args.files {
                let f = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .write(true)
                    .dma_open(dir.join(format!("f{i}")))
                    .await
                    .expect("open");
                let mut zeros = f.alloc_dma_buffer(BLOCK * BLOCKS_PER_FILE as usize);
                zeros.as_bytes_mut().fill(0);
                f.write_at(zeros, 0).await.expect("preallocate");
                f.fdatasync().await.expect("sync");
                files.push(f);
            }
            sync_fs(&dir);
            let modes = ["each", "syncfs", "one"];
            let mut hists: Vec<Histogram<u64>> = modes
                .iter()
                .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"))
                .collect();
            for round in 0..args.rounds {
                for m in 0..modes.len() {
                    // Interleaved, rotating the order, so slow spells of the disk fall on
                    // every mode alike.
                    let mode = (m + round) % modes.len();
                    let pos =
                        ((round * modes.len() + mode) as u64 % BLOCKS_PER_FILE) * BLOCK as u64;
                    let t = Instant::now();
                    let writes: Vec<_> = files
                        .iter()
                        .map(|f| {
                            let mut b = f.alloc_dma_buffer(BLOCK);
                            b.as_bytes_mut().fill(0xab);
                            f.write_at(b, pos)
                        })
                        .collect();
                    for w in writes {
                        w.await.expect("write");
                    }
                    match modes[mode] {
                        "each" => {
                            let syncs: Vec<_> = files.iter().map(|f| f.fdatasync()).collect();
                            for s in syncs {
                                s.await.expect("fdatasync");
                            }
                        }
                        "syncfs" => {
                            let d = dir.clone();
                            glommio::executor()
                                .spawn_blocking(move || sync_fs(&d))
                                .await;
                        }
                        _ => files[0].fdatasync().await.expect("fdatasync"),
                    }
                    hists[mode]
                        .record(t.elapsed().as_nanos() as u64)
                        .expect("record");
                }
            }
            let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
            let results: Vec<serde_json::Value> = modes
                .iter()
                .zip(&hists)
                .map(|(m, h)| {
                    serde_json::json!({
                        "mode": m,
                        "rounds": h.len(),
                        "p50_ms": ms(h, 0.5),
                        "p99_ms": ms(h, 0.99),
                        "p999_ms": ms(h, 0.999),
                        "max_ms": h.max() as f64 / 1e6,
                    })
                })
                .collect();
            serde_json::json!({
                "bench": "fsync-share",
                "files": args.files,
                "block_bytes": BLOCK,
                "results": results,
            })
        })
        .expect("executor")
        .join()
        .expect("bench");
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
