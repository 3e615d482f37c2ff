//! Start-up check of direct I/O on a data directory, on the calling executor thread.
//!
//! glommio decides once per thread and device whether reads may use the io_uring poll ring,
//! by reading block 0 of the first DMA file opened there. If that file is empty the read
//! "succeeds" at EOF, the device is wrongly marked pollable, and every later read of real data
//! fails with EOPNOTSUPP on devices without poll support (virtio disks, most cloud volumes).
//! Opening a non-empty file first makes the probe see the truth, and doubles as the check
//! that O_DIRECT writes and reads work at all on this file system.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use glommio::io::OpenOptions;

use crate::error::StorageError;

const PROBE_FILE: &str = ".direct-io-probe";
const PROBE_BYTES: usize = 4096;

thread_local! {
    static CHECKED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// Verifies that an O_DIRECT write and read round trip works in `dir` (created if missing),
/// once per executor thread and device. Every log and hard-state open calls it.
pub async fn check_direct_io(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
    let dev = std::fs::metadata(dir)
        .map_err(|e| StorageError::io("stat dir", dir, e))?
        .dev();
    if CHECKED_DEVICES.with(|c| c.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(PROBE_FILE);
    // Written through the page cache so the first DMA open below probes a non-empty file.
    let pattern: Vec<u8> = (0..PROBE_BYTES).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &pattern).map_err(|e| StorageError::io("write probe", &path, e))?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(|e| StorageError::io("open with O_DIRECT", &path, e))?;
    let mut buf = f.alloc_dma_buffer(PROBE_BYTES);
    buf.as_bytes_mut().copy_from_slice(&pattern);
    f.write_at(buf, 0)
        .await
        .map_err(|e| StorageError::io("O_DIRECT write", &path, e))?;
    let back = f
        .read_at(0, PROBE_BYTES)
        .await
        .map_err(|e| StorageError::io("O_DIRECT read", &path, e))?;
    if back[..] != pattern[..] {
        return Err(StorageError::io(
            "O_DIRECT read",
            &path,
            std::io::Error::other("read back differs from what was written"),
        ));
    }
    f.close()
        .await
        .map_err(|e| StorageError::io("close probe", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| StorageError::io("remove probe", &path, e))?;
    CHECKED_DEVICES.with(|c| c.borrow_mut().insert(dev));
    Ok(())
}
