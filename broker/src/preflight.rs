//! Start-up checks that run on the main thread before any executor starts, and the watch
//! that turns a shard thread's death into the whole process's exit.
//!
//! glommio sets up three io_uring rings per executor on the executor's own thread. When a
//! container's seccomp profile blocks io_uring (Docker's, containerd's and podman's default
//! profiles do), glommio panics there with a message about old kernels, and the main thread,
//! waiting for SIGTERM, would wait forever. So the same system calls are tried here first,
//! where a refusal can be named: `check` makes a ring, registers a probe and enters it, and
//! checks the locked-memory limit glommio refuses to start below.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// glommio's own floor for `RLIMIT_MEMLOCK` (checked by every executor's reactor).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// Entries of the probe ring; small, it is closed at once.
const PROBE_RING_ENTRIES: u32 = 8;
/// `IORING_REGISTER_PROBE` (linux/io_uring.h).
const IORING_REGISTER_PROBE: libc::c_uint = 8;
/// Opcodes a probe has room for (the kernel fills up to this many).
const PROBE_OPS: usize = 256;

/// Signal a shard thread sends the process when it ends; the main thread waits for it
/// beside SIGTERM and SIGINT (`block_shutdown_signals`).
pub const SHARD_EXITED: libc::c_int = libc::SIGUSR1;
/// Set to the shard id + 1 by the first shard thread that ended.
static FIRST_SHARD_EXITED: AtomicUsize = AtomicUsize::new(0);

/// Why the broker cannot run here, with what to change.
#[derive(Debug)]
pub struct PreflightError(String);

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the executors need from the kernel that a container can take away.
pub fn check() -> Result<(), PreflightError> {
    check_memlock()?;
    check_io_uring()
}

/// Each listener's address must not be another socket's listening one: the shards bind with
/// SO_REUSEPORT (one socket per shard), so a second process on the same port would bind it
/// too and silently take part of the first one's connections. A test bind cannot tell (the
/// old connections of a broker restarted on its ports also hold them), so the kernel's table
/// of listening sockets is read. A broker that just exited can leave its listening sockets
/// there for a moment (io_uring tears its ring down after the process is gone), so a port
/// is refused only if it stays taken for `PORT_RELEASE_WAIT`. Port 0 (any free port) needs
/// no check; without /proc there is none.
pub fn check_ports_free(listeners: &[(&str, std::net::SocketAddr)]) -> Result<(), PreflightError> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        let Some((what, addr)) = taken_port(listeners) else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(PreflightError(format!(
                "{what} {addr} is already in use by another process (another broker?); give \
                 this one a port of its own"
            )));
        }
        std::thread::sleep(PORT_RECHECK);
    }
}

/// How long a listening port may stay taken at start before the broker refuses it, and how
/// often it looks again meanwhile.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const PORT_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// The first of `listeners` another socket listens on, if any.
fn taken_port<'a>(
    listeners: &'a [(&'a str, std::net::SocketAddr)],
) -> Option<&'a (&'a str, std::net::SocketAddr)> {
    let listening: Vec<std::net::SocketAddr> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(listening_socket)
                .collect::<Vec<_>>()
        })
        .collect();
    listeners.iter().find(|(_, addr)| {
        addr.port() != 0
            && listening.iter().any(|l| {
                l.port() == addr.port()
                    && (l.ip() == addr.ip()
                        || l.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            })
    })
}

/// The local address of a `/proc/net/tcp{,6}` line in the LISTEN state (`0A`).
fn listening_socket(line: &str) -> Option<std::net::SocketAddr> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    if fields.nth(1)? != "0A" {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is the kernel's in-memory bytes, printed as 32-bit words in hex.
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|w| u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// glommio's reactor refuses to start when the soft `RLIMIT_MEMLOCK` is under 512 KiB. The
/// soft limit is raised to the hard one first, as for open files.
fn check_memlock() -> Result<(), PreflightError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return Ok(()); // glommio would fail to read it too, and say so
        }
        if lim.rlim_cur < MIN_MEMLOCK_BYTES && lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                lim.rlim_cur = before;
            }
        }
    }
    if lim.rlim_cur >= MIN_MEMLOCK_BYTES {
        return Ok(());
    }
    Err(PreflightError(format!(
        "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB (hard {}); the io_uring \
         executors need at least {} KiB. Raise it for the broker's process: `ulimit -l` / \
         systemd LimitMEMLOCK=, `--ulimit memlock=-1:-1` for docker/podman, or on Kubernetes \
         the container runtime's default (containerd and CRI-O take it from their own service's \
         LimitMEMLOCK; set it to infinity on the nodes).",
        lim.rlim_cur / 1024,
        if lim.rlim_max == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", lim.rlim_max / 1024)
        },
        MIN_MEMLOCK_BYTES / 1024
    )))
}

/// Tries io_uring_setup, io_uring_register (a probe, what glommio does first) and
/// io_uring_enter on a throwaway ring.
fn check_io_uring() -> Result<(), PreflightError> {
    // struct io_uring_params is 120 bytes; zeroed asks for nothing special.
    let mut params = [0u64; 15];
    // SAFETY: the kernel writes at most sizeof(io_uring_params) into `params`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            PROBE_RING_ENTRIES,
            params.as_mut_ptr(),
        )
    };
    if fd < 0 {
        return Err(io_uring_refused(
            "io_uring_setup",
            std::io::Error::last_os_error(),
        ));
    }
    let fd = fd as libc::c_int;
    let result = (|| {
        // struct io_uring_probe: a 16-byte header and 8 bytes per opcode.
        let mut probe = [0u64; 2 + PROBE_OPS];
        // SAFETY: `probe` holds the header and PROBE_OPS entries, as nr_args says.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                fd,
                IORING_REGISTER_PROBE,
                probe.as_mut_ptr(),
                PROBE_OPS as libc::c_uint,
            )
        };
        if r < 0 {
            return Err(io_uring_refused(
                "io_uring_register",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: nothing to submit and nothing to wait for; the ring is only entered.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                0 as libc::c_uint,
                0 as libc::c_uint,
                0 as libc::c_uint,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if r < 0 {
            return Err(io_uring_refused(
                "io_uring_enter",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    })();
    // SAFETY: `fd` is the ring made above and nothing else holds it.
    unsafe { libc::close(fd) };
    result
}

fn io_uring_refused(call: &str, err: std::io::Error) -> PreflightError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    explain(call, err, disabled)
}

/// The diagnostic for `call` failing with `err`, given `kernel.io_uring_disabled`.
fn explain(call: &str, err: std::io::Error, disabled: u32) -> PreflightError {
    let errno = err.raw_os_error().unwrap_or(0);
    let cause = match errno {
        libc::EPERM | libc::ENOSYS | libc::EACCES if disabled != 0 => format!(
            "the kernel has io_uring disabled (sysctl kernel.io_uring_disabled = {disabled}); \
             set it to 0 on this host"
        ),
        libc::EPERM | libc::ENOSYS | libc::EACCES => {
            "a seccomp filter blocks io_uring: the default seccomp profiles of Docker, containerd, \
             CRI-O and podman do. Run the broker with a profile that allows io_uring_setup, \
             io_uring_enter and io_uring_register (the Helm chart ships one: \
             helm/sluice/files/seccomp-sluice.json, installed on the nodes as a Localhost \
             profile), or unconfined (`--security-opt seccomp=unconfined`, or the chart's \
             `securityContext.seccompProfile.type: Unconfined`)"
                .to_string()
        }
        libc::ENOMEM => {
            "the kernel could not allocate the ring: on kernels before 5.12 rings count against \
             the locked-memory limit (`ulimit -l`); raise it"
                .to_string()
        }
        _ => "io_uring needs Linux 5.8 or newer".to_string(),
    };
    PreflightError(format!(
        "io_uring is not available ({call} failed: {err}): {cause}"
    ))
}

/// The CPUs this process may run on, in order: shard `i` is pinned to the `i`-th. A container
/// given CPUs by a cpuset (Kubernetes' static CPU manager, `--cpuset-cpus`) may not be on
/// CPU 0 at all, and pinning outside the cpuset fails with EINVAL inside glommio. Falls back
/// to 0, 1, ... if the mask can't be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let max = libc::CPU_SETSIZE as usize;
    if r != 0 {
        return (0..max).collect();
    }
    // SAFETY: `set` was filled by the kernel above; `cpu` is below CPU_SETSIZE.
    (0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Held by a shard thread for as long as it runs: dropped when the shard's future ends, when
/// the thread unwinds from a panic, or when glommio fails to build the executor and drops the
/// closure that holds it. Any of these tells the main thread, which stops the broker.
pub struct ShardExitGuard(pub usize);

impl Drop for ShardExitGuard {
    fn drop(&mut self) {
        let _ =
            FIRST_SHARD_EXITED.compare_exchange(0, self.0 + 1, Ordering::SeqCst, Ordering::SeqCst);
        // SAFETY: a process-directed signal; every thread has it blocked and the main
        // thread takes it with sigwait, so it never interrupts anything.
        unsafe { libc::kill(libc::getpid(), SHARD_EXITED) };
    }
}

/// The shard that ended first, if one did.
pub fn first_shard_exited() -> Option<usize> {
    FIRST_SHARD_EXITED.load(Ordering::SeqCst).checked_sub(1)
}

/// After a shard died the others are stopped in order, but nothing may hold the process up:
/// if they have not stopped by `after`, exit anyway.
pub fn exit_after(after: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        eprintln!(
            "sluice: shards did not stop within {}s after a shard died; exiting",
            after.as_secs()
        );
        // SAFETY: ends the process without running destructors other threads may hold.
        unsafe { libc::_exit(1) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_kernels_table() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            listening_socket(v4),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let connected = "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(listening_socket(connected), None);
        let v6_any = "   0: 00000000000000000000000000000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_socket(v6_any), Some("[::]:9092".parse().unwrap()));
    }

    #[test]
    fn io_uring_and_memlock_pass_on_the_test_machine() {
        // The test suite itself runs glommio, so the machine allows both.
        check().unwrap();
    }

    #[test]
    fn allowed_cpus_are_as_many_as_the_parallelism() {
        let cpus = allowed_cpus();
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(cpus.len() >= n, "{cpus:?} for {n} cores");
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }

    #[test]
    fn a_seccomp_refusal_names_seccomp_and_the_fix() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let err = std::io::Error::from_raw_os_error(errno);
            let msg = explain("io_uring_setup", err, 0).to_string();
            assert!(msg.contains("io_uring_setup failed"), "{msg}");
            assert!(msg.contains("seccomp"), "{msg}");
            assert!(msg.contains("Unconfined"), "{msg}");
        }
        let err = std::io::Error::from_raw_os_error(libc::EPERM);
        let msg = explain("io_uring_setup", err, 2).to_string();
        assert!(msg.contains("io_uring_disabled = 2"), "{msg}");
    }
}
