//! Opening a log: list the directory, recover each segment (trusting a whole index, scanning
//! the rest), drop what does not continue the log, and seal the active segment's tail.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::Path;

use glommio::sync::Semaphore;
use tracing::{info, warn};

use super::*;

/// What a partition directory holds, once crash leftovers are removed.
struct Listing {
    /// Segment base offsets, sorted.
    bases: Vec<Offset>,
    snapshots: Vec<Offset>,
}

/// Lists the directory, removing leftovers of crashes: index files without their segment and
/// compaction outputs that were never swapped in.
async fn list_dir(dir: &Path) -> Result<Listing, StorageError> {
    // Listing a directory has no io_uring form; this runs once per partition at open.
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list dir", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list dir", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((stem, ext)) = name.split_once('.') {
            match (stem.parse::<u64>(), ext) {
                (Ok(b), "log") if stem.len() == 20 => bases.push(Offset(b)),
                (Ok(b), "index" | "timeindex") => index_files.push((Offset(b), entry.path())),
                (Ok(b), SNAPSHOT_EXT) if stem.len() == 20 => snapshots.push(Offset(b)),
                // A compaction cut short by a crash: the original segment is intact.
                (Ok(_), compact::CLEANED_EXT) => remove_if_present(&entry.path()).await?,
                _ => {}
            }
        }
    }
    bases.sort();
    for (b, path) in index_files {
        if bases.binary_search(&b).is_err() {
            remove_if_present(&path).await?;
        }
    }
    Ok(Listing { bases, snapshots })
}

/// Loads every segment in order: a sealed one from its index when whole, otherwise (and the
/// active one past its checkpoint) by scanning frames. The first segment that ends early or
/// does not continue the log, and every one after it, is dropped.
async fn recover_segments(
    dir: &Path,
    bases: &[Offset],
    saved_start: Option<LogStart>,
    config: &LogConfig,
) -> Result<Vec<Segment>, StorageError> {
    let max_payload = config.max_batch_bytes.max(MAX_INTERNAL_ENTRY_BYTES);

    let mut segments: Vec<Segment> = Vec::new();
    let mut cut_from: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base, "log");
        if segments
            .last()
            .is_some_and(|p| base < p.summary.next_offset)
        {
            // Compaction merged it into the segment before and a crash came before the
            // merged-away file was deleted; its entries are all in that segment.
            info!(dir = %dir.display(), segment = base.0, "removing a segment a compaction merged away");
            remove_if_present(&segment_path(dir, base, "index")).await?;
            remove_if_present(&segment_path(dir, base, "timeindex")).await?;
            remove_if_present(&path).await?;
            continue;
        }
        // A stat, not an open: a sealed segment with a good index needs no descriptor.
        let file_size = std::fs::metadata(&path)
            .map_err(|e| StorageError::io("stat segment", &path, e))?
            .len();
        let (prev_raft, prev_term) = segments.last().map_or(
            (saved_start.map_or(RaftIndex(0), |s| s.raft_index), 0),
            |p| (p.summary.next_raft_index, p.summary.last_term),
        );
        if let Some(p) = segments.last() {
            if p.summary.next_offset != base {
                warn!(dir = %dir.display(), segment = base.0, expected = p.summary.next_offset.0,
                    "segment does not continue the log; it and later segments are dropped");
                cut_from = Some(i);
                break;
            }
        }
        let mut seg = Segment::empty(dir, base, prev_raft, prev_term);
        let is_last = i + 1 == bases.len();
        let (idx_path, time_path) = seg.index_paths();
        let loaded = match (
            read_small_file(&idx_path).await,
            read_small_file(&time_path).await,
        ) {
            (Some(a), Some(b)) => index::decode(&a, &b),
            _ => None,
        }
        .filter(|(s, _)| s.size <= file_size && s.next_offset >= base);
        let had_index = loaded.is_some();
        if let Some((summary, entries)) = loaded {
            seg.indexed = summary.size;
            seg.summary = summary;
            seg.entries = entries;
            seg.bytes_since_index =
                summary.size - seg.entries.last().map_or(0, |e| e.position as u64);
        }
        if !had_index || is_last {
            // Scan what the checkpoint does not cover (all of it without an index).
            let from = seg.summary.size;
            // The first segment without an index learns its base from its first frame
            // (the log start may lie anywhere inside it); others must continue the log.
            let expected = (!seg.is_empty() || i > 0).then_some(seg.summary.next_raft_index);
            let interval = config.index_interval_bytes;
            let file = seg.file().open().await?;
            let next = seg.summary.next_offset;
            let end = scan(
                &file,
                &path,
                ScanRange {
                    pos: from,
                    end: file_size,
                    next,
                    expected_raft: expected,
                    allow_gaps: !is_last,
                },
                max_payload,
                |_, f| {
                    if seg.is_empty() {
                        seg.summary.base_raft_index = f.header.raft_index;
                    }
                    seg.note_frame(&f, interval);
                    true
                },
            )
            .await?;
            if let ScanEnd::Invalid { position, reason } = end {
                let garbage = file_size - position;
                // Zeros after the last frame are block padding or preallocation.
                let padding_only = all_zero(&file, &path, position, file_size).await?;
                if !padding_only {
                    warn!(dir = %dir.display(), segment = base.0, position, cut_bytes = garbage, reason,
                        "recovery cut a torn or corrupt tail");
                }
                if !is_last && !padding_only {
                    warn!(dir = %dir.display(), segment = base.0,
                        "a sealed segment ended early; later segments are dropped");
                    seg.written = seg.summary.size;
                    segments.push(seg);
                    cut_from = Some(i + 1);
                    break;
                }
            }
            if !had_index && !is_last {
                // Rebuilt: save it so the next open does not scan again.
                write_index(&seg).await?;
                seg.indexed = seg.summary.size;
            }
        }
        seg.written = seg.summary.size;
        segments.push(seg);
    }
    if let Some(from) = cut_from {
        for &base in bases[from..].iter().rev() {
            let s_path = segment_path(dir, base, "log");
            warn!(dir = %dir.display(), segment = base.0, "dropping segment after the recovered end");
            remove_if_present(&segment_path(dir, base, "index")).await?;
            remove_if_present(&segment_path(dir, base, "timeindex")).await?;
            remove_if_present(&s_path).await?;
        }
        sync_dir(dir).await?;
    }
    Ok(segments)
}

/// A start checkpoint past the recovered end means unflushed data below a durable
/// DeleteRecords was lost: the log restarts empty at that start, as Kafka does, so offsets
/// clients saw never go backwards. An empty log gets its first segment.
async fn restart_if_start_past_end(
    dir: &Path,
    segments: &mut Vec<Segment>,
    saved_start: Option<LogStart>,
) -> Result<(), StorageError> {
    let recovered_end = segments
        .last()
        .map(|s| (s.summary.next_offset, s.summary.next_raft_index));
    if let (Some(s), Some((end, end_raft))) = (saved_start, recovered_end) {
        if s.offset > end || s.raft_index > end_raft {
            warn!(dir = %dir.display(), start = s.offset.0, end = end.0,
                "log start is past the recovered end; the log restarts empty at its start");
            for seg in segments.drain(..).rev() {
                delete_segment_files(&seg).await?;
            }
        }
    }
    if segments.is_empty() {
        let s = saved_start.unwrap_or_default();
        segments.push(Segment::create(dir, s.offset, s.raft_index, 0).await?);
        sync_dir(dir).await?;
    }
    Ok(())
}

/// Makes the active segment's file end exactly at its last valid frame: the tail block is
/// rewritten zero padded and anything after it removed, so stale bytes never revive. Returns
/// the partly filled tail block, which the log keeps in memory. With `sync` the frames kept
/// are made durable here; without, the caller syncs the whole file system once.
async fn seal_active_tail(active: &Segment, sync: bool) -> Result<Vec<u8>, StorageError> {
    // An empty file of an empty segment (a new or idle partition) has nothing to make
    // durable: no descriptor, no sync.
    let file_len = std::fs::metadata(&active.path)
        .map_err(|e| StorageError::io("stat segment", &active.path, e))?
        .len();
    if active.summary.size == 0 && file_len == 0 {
        return Ok(Vec::new());
    }
    let size = active.summary.size;
    let tail_start = align_down(size);
    let active_file = active.file().open().await?;
    let tail = active_file
        .read_at(tail_start, (size - tail_start) as usize)
        .await
        .map_err(|e| StorageError::io("read segment", &active.path, e))?
        .to_vec();
    let mut buf = active_file.alloc_dma_buffer(BLOCK_BYTES as usize);
    buf.as_bytes_mut().fill(0);
    buf.as_bytes_mut()[..tail.len()].copy_from_slice(&tail);
    let io = |what| {
        let p = active.path.clone();
        move |e: glommio::GlommioError<()>| StorageError::io(what, &p, e)
    };
    if !tail.is_empty() {
        active_file
            .write_at(buf, tail_start)
            .await
            .map_err(io("write segment"))?;
    }
    active_file
        .truncate(align_up(size))
        .await
        .map_err(io("truncate segment"))?;
    if sync {
        active_file.fdatasync().await.map_err(io("sync segment"))?;
    }
    Ok(tail)
}

/// Makes everything written on the file system holding `dir` durable (`syncfs`): one call
/// covers every log opened there with `PartitionLog::open_unsynced`. It blocks, so it runs on
/// glommio's blocking-thread pool, not on the shard.
pub async fn sync_file_system(dir: &Path) -> Result<(), StorageError> {
    let d = dir.to_path_buf();
    let r = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&d)?;
            // SAFETY: syncfs on a descriptor owned by `f`, alive for the call.
            match unsafe { libc::syncfs(f.as_raw_fd()) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
        .await;
    r.map_err(|e| StorageError::io("syncfs", dir, e))
}

impl PartitionLog {
    /// Opens or creates the log in `dir`, recovering from any crash: indexes of sealed
    /// segments are trusted when whole, the active segment is validated frame by frame from
    /// its last checkpoint, and everything from the first torn or corrupt frame on is cut.
    /// What it recovered is durable when it returns.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Self, StorageError> {
        Self::open_with(dir, config, true).await
    }

    /// Like `open`, but the recovered frames are made durable only by a later
    /// `sync_file_system` on this file system, which the caller must await before reading
    /// the log as durable. Opening thousands of partitions then costs one sync, not one each.
    pub async fn open_unsynced(dir: &Path, config: LogConfig) -> Result<Self, StorageError> {
        Self::open_with(dir, config, false).await
    }

    async fn open_with(dir: &Path, config: LogConfig, sync: bool) -> Result<Self, StorageError> {
        let config = config.sanitized();
        // glommio opens directories by absolute path only (a relative one fails with EBADF).
        let dir = &std::path::absolute(dir).map_err(|e| StorageError::io("resolve dir", dir, e))?;
        crate::check_direct_io(dir).await?;
        let Listing {
            bases,
            mut snapshots,
        } = list_dir(dir).await?;
        let (start_checkpoint, saved_start) =
            Checkpoint::open(&dir.join(START_CHECKPOINT_FILE)).await?;
        let saved_start = saved_start.as_deref().and_then(decode_start);
        let mut segments = recover_segments(dir, &bases, saved_start, &config).await?;
        restart_if_start_past_end(dir, &mut segments, saved_start).await?;
        let active = segments.last().expect("at least one segment");
        let size = active.summary.size;
        let indexed = active.indexed;
        let tail_start = align_down(size);
        let tail = seal_active_tail(active, sync).await?;

        let first = &segments[0];
        let mut start = LogStart {
            offset: first.base_offset,
            raft_index: first.summary.base_raft_index,
        };
        // A purge of internal entries moves only the Raft index, a DeleteRecords inside a
        // batch only the offset: either makes the saved start the real one.
        if let Some(s) = saved_start {
            if s.offset > start.offset || s.raft_index > start.raft_index {
                start = s;
            }
        }
        let mut inner = Inner {
            config,
            segments,
            tail,
            tail_start,
            durable_size: size,
            prealloc_end: align_up(size),
            prealloc_step: PREALLOCATE_MIN_BYTES,
            durable: LogEnd::default(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            start,
            start_checkpoint: Some(start_checkpoint),
            checkpointed_size: indexed,
            snapshots: Vec::new(),
        };
        inner.durable = inner.end();
        // A snapshot past the recovered end describes entries a crash took away.
        snapshots.sort();
        for &at in &snapshots {
            if at > inner.durable.next_offset {
                remove_if_present(&segment_path(dir, at, SNAPSHOT_EXT)).await?;
            } else {
                inner.snapshots.push(at);
            }
        }
        info!(dir = %dir.display(), start = start.offset.0, end = inner.durable.next_offset.0,
            segments = inner.segments.len(), "partition log opened");
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            inner: RefCell::new(inner),
            io_lock: Semaphore::new(1),
            flushing: Cell::new(false),
            flush_done: Event::default(),
        })
    }
}
