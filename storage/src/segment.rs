//! One segment: a data file of frames plus its in-memory sparse index. Private to the crate.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::batch;
use crate::config::READ_CHUNK_BYTES;
use crate::error::StorageError;
use crate::files::{self, FileId, FileLease};
use crate::frame::{self, Decoded, FrameHeader, FRAME_HEADER_BYTES};
use crate::index::{IndexEntry, SegmentSummary};
use crate::types::{EntryKind, Offset, RaftIndex};

pub(crate) fn segment_path(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{:020}.{ext}", base.0))
}

/// A frame as read back: header, whole frame bytes, and the Kafka offsets it covers.
#[derive(Clone, Debug)]
pub(crate) struct StoredFrame {
    pub header: FrameHeader,
    /// Header and payload.
    pub frame: Bytes,
    /// Kafka offset of the first record (data) or of the next record (internal).
    pub offset: Offset,
    /// One past the last offset covered; equals `offset` for internal entries.
    pub end_offset: Offset,
    /// Batch max timestamp; i64::MIN for internal entries.
    pub max_timestamp: i64,
}

impl StoredFrame {
    pub fn payload(&self) -> Bytes {
        self.frame.slice(FRAME_HEADER_BYTES..)
    }

    /// Interprets a checksummed frame. `next` is the offset the log expects at this frame.
    pub fn from_frame(header: FrameHeader, frame: Bytes, next: Offset) -> Option<Self> {
        let (offset, end_offset, max_timestamp) = match header.kind {
            EntryKind::Internal => (next, next, i64::MIN),
            EntryKind::Data => {
                let h = batch::parse_header(&frame[FRAME_HEADER_BYTES..]).ok()?;
                let base = Offset(h.base_offset as u64);
                (base, Offset(base.0 + h.offset_count()), h.max_timestamp)
            }
        };
        Some(StoredFrame {
            header,
            frame,
            offset,
            end_offset,
            max_timestamp,
        })
    }
}

/// How to reach a segment's file without holding a borrow of the log across an `.await`.
#[derive(Clone, Debug)]
pub(crate) struct FileRef {
    id: FileId,
    pub path: PathBuf,
}

impl FileRef {
    /// The open file, from the shard's cache of open files.
    pub async fn open(&self) -> Result<FileLease, StorageError> {
        files::get(self.id, &self.path, false).await
    }

    /// Like `open`, creating the file if it does not exist.
    pub async fn create(&self) -> Result<FileLease, StorageError> {
        files::get(self.id, &self.path, true).await
    }
}

pub(crate) struct Segment {
    pub base_offset: Offset,
    /// This segment's entry in the cache of open files; it holds no descriptor itself.
    file: FileId,
    pub path: PathBuf,
    /// `size` counts every appended frame, including those still in memory.
    pub summary: SegmentSummary,
    pub entries: Vec<IndexEntry>,
    pub bytes_since_index: u64,
    /// Bytes whose write to the file completed; cold reads stop here.
    pub written: u64,
    /// Wall-clock ms of the first append, for `segment.ms`.
    pub first_append_ms: Option<u64>,
    /// A compaction pass has seen this (sealed) segment since it was opened or sealed.
    pub clean: bool,
    /// Bytes the index checkpoint on disk covered when the log was opened.
    pub indexed: u64,
}

impl Drop for Segment {
    fn drop(&mut self) {
        files::forget(self.file);
    }
}

impl Segment {
    pub fn file(&self) -> FileRef {
        FileRef {
            id: self.file,
            path: self.path.clone(),
        }
    }

    /// A segment with no frames yet; its file is opened (or created) on first use.
    pub fn empty(dir: &Path, base_offset: Offset, base_raft: RaftIndex, last_term: u64) -> Self {
        Segment {
            base_offset,
            file: files::register(),
            path: segment_path(dir, base_offset, "log"),
            summary: SegmentSummary {
                size: 0,
                base_raft_index: base_raft,
                next_offset: base_offset,
                next_raft_index: base_raft,
                max_timestamp: i64::MIN,
                last_term,
            },
            entries: Vec::new(),
            bytes_since_index: 0,
            written: 0,
            first_append_ms: None,
            clean: false,
            indexed: 0,
        }
    }

    /// A new empty segment whose file is created now (emptied, if a stale one is there).
    pub async fn create(
        dir: &Path,
        base_offset: Offset,
        base_raft: RaftIndex,
        last_term: u64,
    ) -> Result<Self, StorageError> {
        let seg = Segment::empty(dir, base_offset, base_raft, last_term);
        seg.file()
            .create()
            .await?
            .truncate(0)
            .await
            .map_err(|e| StorageError::io("truncate segment", &seg.path, e))?;
        Ok(seg)
    }

    pub fn is_empty(&self) -> bool {
        self.summary.size == 0
    }

    /// Records a frame appended at the end (in memory or during a recovery scan).
    pub fn note_frame(&mut self, f: &StoredFrame, interval: u64) {
        let position = self.summary.size;
        if self.entries.is_empty() || self.bytes_since_index >= interval {
            self.entries.push(IndexEntry {
                offset: f.offset,
                raft_index: f.header.raft_index,
                position: position as u32,
                max_ts_before: self.summary.max_timestamp,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += f.frame.len() as u64;
        self.summary.size += f.frame.len() as u64;
        self.summary.next_offset = f.end_offset;
        self.summary.next_raft_index = RaftIndex(f.header.raft_index.0 + 1);
        self.summary.max_timestamp = self.summary.max_timestamp.max(f.max_timestamp);
        self.summary.last_term = f.header.term.0;
    }

    pub fn index_paths(&self) -> (PathBuf, PathBuf) {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        (
            segment_path(dir, self.base_offset, "index"),
            segment_path(dir, self.base_offset, "timeindex"),
        )
    }
}

/// Why a scan stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The visitor asked to stop.
    Stopped,
    /// Reached `end` cleanly.
    End,
    /// Bytes at `position` are not a valid frame continuing the log.
    Invalid { position: u64, reason: &'static str },
}

/// Bytes `[pos, end)` of a segment, the offset expected at `pos`, and the Raft index expected
/// there if known.
pub(crate) struct ScanRange {
    pub pos: u64,
    pub end: u64,
    pub next: Offset,
    pub expected_raft: Option<RaftIndex>,
    /// Raft indexes may skip forward (a sealed segment that compaction rewrote). The active
    /// segment is never compacted and is scanned strictly, so a stale frame there still ends it.
    pub allow_gaps: bool,
}

/// Reads frames of `file` from `pos` up to `end`, calling `visit` with each one in order.
/// Frames are checked for CRC and for continuing the Raft index sequence, so stale bytes
/// after a crash or truncation are reported as `Invalid`, never handed out.
pub(crate) async fn scan(
    file: &DmaFile,
    path: &Path,
    range: ScanRange,
    max_payload: usize,
    mut visit: impl FnMut(u64, StoredFrame) -> bool,
) -> Result<ScanEnd, StorageError> {
    let ScanRange {
        mut pos,
        end,
        mut next,
        mut expected_raft,
        allow_gaps,
    } = range;
    let mut buf = Bytes::new();
    let mut buf_pos = pos;
    while pos < end {
        let at = (pos - buf_pos) as usize;
        let avail = &buf[at.min(buf.len())..];
        match frame::decode(avail, max_payload) {
            Decoded::Frame(h) => {
                let len = h.frame_len();
                let frame_bytes = buf.slice(at..at + len);
                let continues =
                    |r: RaftIndex| h.raft_index == r || (allow_gaps && h.raft_index > r);
                if expected_raft.is_some_and(|r| !continues(r)) {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "raft index does not continue the log",
                    });
                }
                let Some(f) = StoredFrame::from_frame(h, frame_bytes, next) else {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "data frame without a batch header",
                    });
                };
                if f.offset < next {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "offset goes backwards",
                    });
                }
                if pos + len as u64 > end {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "frame crosses the end",
                    });
                }
                next = f.end_offset;
                expected_raft = Some(RaftIndex(h.raft_index.0 + 1));
                pos += len as u64;
                if !visit(pos - len as u64, f) {
                    return Ok(ScanEnd::Stopped);
                }
            }
            Decoded::NeedMore(need) => {
                let remaining = end - pos;
                if need as u64 > remaining {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "frame cut short",
                    });
                }
                let want = need.max(READ_CHUNK_BYTES).min(remaining as usize);
                let r = file
                    .read_at(pos, want)
                    .await
                    .map_err(|e| StorageError::io("read segment", path, e))?;
                if r.len() < need {
                    return Ok(ScanEnd::Invalid {
                        position: pos,
                        reason: "file shorter than the frame",
                    });
                }
                buf = Bytes::copy_from_slice(&r);
                buf_pos = pos;
            }
            Decoded::Invalid(reason) => {
                return Ok(ScanEnd::Invalid {
                    position: pos,
                    reason,
                })
            }
        }
    }
    Ok(ScanEnd::End)
}
