//! A small durable record that survives torn writes: two slots, written alternately, each with
//! a sequence number and a CRC32C. Loading takes the valid slot with the highest sequence, so a
//! crash in the middle of a write leaves the previous value readable.
//!
//! Used for the log-start checkpoint, Raft's vote / hard state and its snapshot record.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use crate::error::StorageError;

/// Each slot is one direct-I/O block.
const SLOT_BYTES: usize = 4096;
const SLOT_HEADER_BYTES: usize = 16;
/// Largest payload a checkpoint record holds.
pub const MAX_CHECKPOINT_BYTES: usize = SLOT_BYTES - SLOT_HEADER_BYTES - 4;
const MAGIC: u32 = 0x4b434c53; // "SLCK"

/// Holds no descriptor between stores: there is one per partition, and stores are rare
/// (DeleteRecords, retention, a Raft vote).
pub struct Checkpoint {
    path: PathBuf,
    seq: u64,
}

async fn open_file(path: &Path) -> Result<DmaFile, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::io("open checkpoint", path, e))
}

fn decode_slot(b: &[u8]) -> Option<(u64, Vec<u8>)> {
    if b.len() < SLOT_BYTES || u32::from_le_bytes(b[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    if len > MAX_CHECKPOINT_BYTES {
        return None;
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let end = SLOT_HEADER_BYTES + len;
    let crc = u32::from_le_bytes(b[end..end + 4].try_into().ok()?);
    (crc32c::crc32c(&b[..end]) == crc).then(|| (seq, b[SLOT_HEADER_BYTES..end].to_vec()))
}

impl Checkpoint {
    /// Opens (creating if needed) and returns the last value stored, if any.
    pub async fn open(path: &Path) -> Result<(Self, Option<Vec<u8>>), StorageError> {
        let file = open_file(path).await?;
        let data = file
            .read_at(0, 2 * SLOT_BYTES)
            .await
            .map_err(|e| StorageError::io("read checkpoint", path, e))?;
        file.close()
            .await
            .map_err(|e| StorageError::io("close checkpoint", path, e))?;
        let best = data
            .chunks(SLOT_BYTES)
            .filter_map(decode_slot)
            .max_by_key(|(seq, _)| *seq);
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        Ok((
            Checkpoint {
                path: path.to_path_buf(),
                seq,
            },
            best.map(|(_, v)| v),
        ))
    }

    /// Durably replaces the value: returns after fdatasync.
    pub async fn store(&mut self, value: &[u8]) -> Result<(), StorageError> {
        if value.len() > MAX_CHECKPOINT_BYTES {
            return Err(StorageError::TooLarge {
                size: value.len(),
                max: MAX_CHECKPOINT_BYTES,
            });
        }
        let seq = self.seq + 1;
        let path = &self.path;
        let file = open_file(path).await?;
        let mut buf = file.alloc_dma_buffer(SLOT_BYTES);
        let b = buf.as_bytes_mut();
        b.fill(0);
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        let end = SLOT_HEADER_BYTES + value.len();
        b[SLOT_HEADER_BYTES..end].copy_from_slice(value);
        let crc = crc32c::crc32c(&b[..end]);
        b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        let pos = (seq % 2) * SLOT_BYTES as u64;
        file.write_at(buf, pos)
            .await
            .map_err(|e| StorageError::io("write checkpoint", path, e))?;
        crate::faults::before_sync().await;
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("sync checkpoint", path, e))?;
        file.close()
            .await
            .map_err(|e| StorageError::io("close checkpoint", path, e))?;
        self.seq = seq;
        Ok(())
    }
}

/// Raft's durable vote / hard state: an opaque value that must survive crashes.
/// Storage does not interpret it; the Raft layer serializes its own vote into it.
pub struct HardState(Checkpoint);

impl HardState {
    /// File name inside a partition directory.
    pub const FILE: &'static str = "raft-vote";

    pub async fn open(dir: &Path) -> Result<(Self, Option<Vec<u8>>), StorageError> {
        crate::check_direct_io(dir).await?;
        let (c, v) = Checkpoint::open(&dir.join(Self::FILE)).await?;
        Ok((HardState(c), v))
    }

    /// Returns once the value is durable.
    pub async fn save(&mut self, value: &[u8]) -> Result<(), StorageError> {
        self.0.store(value).await
    }
}
