//! Start-up failures end the process, with a diagnostic that names the cause.
//!
//! Each test starts `sluice` under a seccomp filter of its own (installed in the child
//! between fork and exec, as a container runtime would) that refuses some system calls with
//! EPERM (or with a low locked-memory limit), then requires a non-zero exit within a bound: a
//! broker that hangs fails the test.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the broker's own bound after a shard dies (4 × the 5 s shutdown grace).
const EXIT_BOUND: Duration = Duration::from_secs(30);

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A classic-BPF seccomp program: EPERM for `denied`, everything else allowed.
fn deny_filter(denied: &[libc::c_long]) -> Vec<libc::sock_filter> {
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut f = vec![
        stmt(ld, 4), // seccomp_data.arch
        jump(jeq, AUDIT_ARCH, 1, 0),
        stmt(ret, SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
    ];
    for nr in denied {
        f.push(jump(jeq, *nr as u32, 0, 1));
        f.push(stmt(ret, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    f.push(stmt(ret, SECCOMP_RET_ALLOW));
    f
}

struct Exit {
    code: Option<i32>,
    /// stderr, then stdout.
    stderr: String,
}

/// Runs a one-shard broker under a filter denying `denied`; panics if it outlives the bound.
fn start_denying(denied: &[libc::c_long]) -> Exit {
    start_with(denied, None)
}

/// As `start_denying`, with RLIMIT_MEMLOCK (soft and hard) set to `memlock` bytes if given.
fn start_with(denied: &[libc::c_long], memlock: Option<u64>) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    let filter = deny_filter(denied);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args([
        "start",
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: between fork and exec only prctl runs, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if let Some(bytes) = memlock {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // The broker's log goes to stdout, its one-line diagnostics to stderr: keep both.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > EXIT_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice still running {EXIT_BOUND:?} after start; stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Exit {
        code: status.code(),
        stderr: reader.join().unwrap(),
    }
}

#[test]
fn blocked_io_uring_setup_exits_naming_seccomp_and_the_fix() {
    let exit = start_denying(&[libc::SYS_io_uring_setup]);
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("io_uring_setup failed"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("seccomp"), "{}", exit.stderr);
    assert!(exit.stderr.contains("Unconfined"), "{}", exit.stderr);
    assert!(!exit.stderr.contains("panicked"), "{}", exit.stderr);
}

#[test]
fn blocked_io_uring_register_is_caught_before_glommio_panics() {
    // What glommio's "Failed to register a probe … kernel should be at least 5.8" was about.
    let exit = start_denying(&[libc::SYS_io_uring_register]);
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("io_uring_register failed"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("seccomp"), "{}", exit.stderr);
    assert!(!exit.stderr.contains("panicked"), "{}", exit.stderr);
}

#[test]
fn a_shard_that_cannot_start_ends_the_process() {
    // Pinning the shard to its core fails inside glommio's executor set-up, on the shard's
    // thread, after every start-up check passed: the process used to wait for SIGTERM forever.
    let exit = start_denying(&[libc::SYS_sched_setaffinity]);
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("a shard stopped unexpectedly"),
        "{}",
        exit.stderr
    );
}

#[test]
fn a_memlock_limit_under_glommios_floor_is_named() {
    // glommio's reactor refuses to start under 512 KiB; the hard limit can't be raised.
    let exit = start_with(&[], Some(64 * 1024));
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains("RLIMIT_MEMLOCK"), "{}", exit.stderr);
    assert!(exit.stderr.contains("64 KiB"), "{}", exit.stderr);
    assert!(exit.stderr.contains("512 KiB"), "{}", exit.stderr);
}
