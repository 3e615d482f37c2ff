//! Floors measured in the same run, right before the targets: what the hardware alone costs.
//!
//! - **fdatasync**: an O_DIRECT `pwrite` of one aligned buffer (the workload's message size
//!   rounded up to [`ALIGN`]) at the next aligned position of a fresh file, then
//!   `fdatasync`, one at a time. No broker can make a write durable faster on this disk.
//! - **TCP round trip**: 64 B sent over loopback TCP (`TCP_NODELAY` both ends) to a thread
//!   that echoes it, one at a time.
//!
//! Both are closed loop (one request at a time) and recorded in µs HDR histograms.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::stats::{new_histogram, Summary, MAX_LATENCY_US};
use crate::BenchResult;

/// Alignment of O_DIRECT buffers, offsets and lengths (covers 512 B and 4 KiB sectors).
pub const ALIGN: usize = 4096;
/// Bytes per loopback round trip.
pub const RTT_BYTES: usize = 64;
/// Unrecorded requests before each floor's measurement.
const WARMUP: usize = 20;

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Floors {
    /// Directory the fdatasync floor wrote into (a fresh subdirectory of it, removed after).
    pub dir: String,
    /// Payload size the floor stands for (the workload's message size).
    pub message_size: usize,
    /// Bytes per O_DIRECT write: `message_size` rounded up to the alignment.
    pub write_bytes: usize,
    /// O_DIRECT pwrite + fdatasync latency; `None` if it could not run (see `fdatasync_error`).
    pub fdatasync: Option<Summary>,
    pub fdatasync_error: Option<String>,
    pub tcp_rtt_bytes: usize,
    /// Loopback TCP round trip of `tcp_rtt_bytes`.
    pub tcp_rtt: Option<Summary>,
    pub tcp_rtt_error: Option<String>,
}

fn micros(start: Instant) -> u64 {
    (start.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// A heap buffer aligned for O_DIRECT, filled with a non-zero pattern.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> BenchResult<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN)?;
        // SAFETY: `len` is a non-zero multiple of ALIGN, so the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err("out of memory for the O_DIRECT buffer".into());
        }
        // SAFETY: `ptr` points to `len` writable bytes just allocated.
        unsafe { std::ptr::write_bytes(ptr, 0x5a, len) };
        Ok(AlignedBuf { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Removes the floor's scratch directory however the measurement ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `samples` O_DIRECT pwrites of `write_bytes` at successive aligned offsets of a fresh
/// file in a fresh subdirectory of `dir`, each followed by fdatasync.
pub fn fdatasync_floor(dir: &Path, write_bytes: usize, samples: usize) -> BenchResult<Summary> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let sub = dir.join(format!("floor-{}-{}", std::process::id(), crate::unix_ms()));
    std::fs::create_dir(&sub).map_err(|e| format!("create {}: {e}", sub.display()))?;
    let _cleanup = RemoveOnDrop(sub.clone());
    let path = sub.join("fdatasync.bin");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("open {} with O_DIRECT: {e}", path.display()))?;
    let fd = file.as_raw_fd();
    let buf = AlignedBuf::new(write_bytes)?;
    let mut hist = new_histogram();
    let mut offset: i64 = 0;
    for i in 0..WARMUP + samples {
        let t = Instant::now();
        // SAFETY: `buf` holds `write_bytes` initialised bytes, aligned to ALIGN; `fd` is open.
        let n = unsafe { libc::pwrite(fd, buf.ptr as *const libc::c_void, write_bytes, offset) };
        if n < 0 {
            return Err(format!("O_DIRECT pwrite: {}", std::io::Error::last_os_error()).into());
        }
        if n as usize != write_bytes {
            return Err(format!("short O_DIRECT pwrite: {n} of {write_bytes} bytes").into());
        }
        // SAFETY: plain syscall on an open descriptor.
        if unsafe { libc::fdatasync(fd) } != 0 {
            return Err(format!("fdatasync: {}", std::io::Error::last_os_error()).into());
        }
        let us = micros(t);
        if i >= WARMUP {
            hist.saturating_record(us);
        }
        offset += write_bytes as i64;
    }
    Ok(Summary::of(&hist))
}

/// `samples` round trips of [`RTT_BYTES`] over loopback TCP to an echoing thread.
pub fn tcp_rtt_floor(samples: usize) -> BenchResult<Summary> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; RTT_BYTES];
        loop {
            match s.read_exact(&mut b) {
                Ok(()) => s.write_all(&b)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let out = [0xa5u8; RTT_BYTES];
    let mut back = [0u8; RTT_BYTES];
    let mut hist = new_histogram();
    for i in 0..WARMUP + samples {
        let t = Instant::now();
        c.write_all(&out)?;
        c.read_exact(&mut back)?;
        let us = micros(t);
        if i >= WARMUP {
            hist.saturating_record(us);
        }
    }
    drop(c);
    echo.join()
        .map_err(|_| "echo thread panicked")?
        .map_err(|e| format!("echo thread: {e}"))?;
    Ok(Summary::of(&hist))
}

/// Both floors; a floor that cannot run (no O_DIRECT on tmpfs, say) is reported as an
/// error in the result instead of failing the whole run.
pub fn measure(dir: &Path, message_size: usize, samples: usize) -> Floors {
    let write_bytes = message_size.max(1).div_ceil(ALIGN) * ALIGN;
    eprintln!(
        "floors: {samples} x O_DIRECT pwrite {write_bytes} B + fdatasync in {}",
        dir.display()
    );
    let (fdatasync, fdatasync_error) = match fdatasync_floor(dir, write_bytes, samples) {
        Ok(s) => (Some(s), None),
        Err(e) => {
            eprintln!("floors: fdatasync floor failed: {e}");
            (None, Some(e.to_string()))
        }
    };
    eprintln!("floors: {samples} x loopback TCP round trip of {RTT_BYTES} B");
    let (tcp_rtt, tcp_rtt_error) = match tcp_rtt_floor(samples) {
        Ok(s) => (Some(s), None),
        Err(e) => {
            eprintln!("floors: TCP round trip floor failed: {e}");
            (None, Some(e.to_string()))
        }
    };
    Floors {
        dir: dir.display().to_string(),
        message_size,
        write_bytes,
        fdatasync,
        fdatasync_error,
        tcp_rtt_bytes: RTT_BYTES,
        tcp_rtt,
        tcp_rtt_error,
    }
}

/// `p99_9_us` as a multiple of the fdatasync floor's p99.9, if both are known.
pub fn over_fdatasync_p99_9(f: &Floors, p99_9_us: u64) -> Option<f64> {
    let floor = f.fdatasync.as_ref()?.p99_9_us;
    (floor > 0 && p99_9_us > 0).then(|| p99_9_us as f64 / floor as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_rtt_floor_records_every_sample() {
        let s = tcp_rtt_floor(50).expect("loopback round trips");
        assert_eq!(s.count, 50);
        assert!(s.min_us >= 1 && s.p50_us <= s.p99_9_us && s.p99_9_us <= s.max_us);
    }

    #[test]
    fn ratio_to_the_fdatasync_floor() {
        let mut f = Floors::default();
        assert_eq!(over_fdatasync_p99_9(&f, 1000), None);
        f.fdatasync = Some(Summary {
            p99_9_us: 400,
            ..Summary::default()
        });
        assert_eq!(over_fdatasync_p99_9(&f, 1000), Some(2.5));
        assert_eq!(over_fdatasync_p99_9(&f, 0), None);
    }
}
