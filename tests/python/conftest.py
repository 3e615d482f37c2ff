"""Broker harness for the Python real-client compatibility suites.

If SLUICE_BOOTSTRAP is set, the tests use that address (or comma-separated
addresses), and SLUICE_ADMIN names the brokers' admin HTTP addresses. Otherwise a
session-scoped fixture starts the Sluice broker (binary from SLUICE_BIN,
default target/release/sluice under the repo root) on free loopback ports,
waits for it and stops it at the end. A missing binary fails the run; it is
never a skip.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BROKER_WAIT_S = 30
# The admin port of the broker this session started (none for SLUICE_BOOTSTRAP).
_STARTED = {}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent():
    """In the broker child: ask Linux to SIGKILL it if this test process dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(path, limit=4000):
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


@pytest.fixture(scope="session")
def admin_addrs(bootstrap):
    """host:port of the admin HTTP listener of every broker under test: the one this session
    started, or SLUICE_ADMIN (comma-separated) beside SLUICE_BOOTSTRAP."""
    if "admin_port" in _STARTED:
        return [f"127.0.0.1:{_STARTED['admin_port']}"]
    addrs = [a for a in os.environ.get("SLUICE_ADMIN", "").split(",") if a]
    if not addrs:
        pytest.fail("SLUICE_BOOTSTRAP is set without SLUICE_ADMIN: set SLUICE_ADMIN to the "
                    "brokers' admin addresses (tests/cluster/cluster.sh writes them to D/admin)")
    return addrs


@pytest.fixture(scope="session")
def bootstrap():
    """host:port of the broker under test."""
    addr = os.environ.get("SLUICE_BOOTSTRAP")
    if addr:
        yield addr
        return

    binary = pathlib.Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "release" / "sluice")
    if not binary.is_file():
        pytest.fail(
            f"sluice binary not found at {binary}: run `cargo build --release -p sluice-broker` "
            "(or set SLUICE_BIN, or point SLUICE_BOOTSTRAP at a running broker)",
            pytrace=False,
        )

    port = _free_port()
    admin_port = _free_port()
    for _ in range(10):
        if admin_port != port:
            break
        admin_port = _free_port()
    data_dir = tempfile.mkdtemp(prefix="sluice-py-compat-")
    addr = f"127.0.0.1:{port}"
    log_path = os.path.join(data_dir, "broker.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(binary), "start",
            "--listen", addr,
            "--advertised-listener", addr,
            "--admin-listen", f"127.0.0.1:{admin_port}",
            "--data-dir", os.path.join(data_dir, "data"),
            "--cores", "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + BROKER_WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sluice exited with {proc.returncode} before listening on {addr}; log:\n{_tail(log_path)}",
                            pytrace=False)
            if _port_open(port):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"sluice did not listen on {addr} within {BROKER_WAIT_S}s; log:\n{_tail(log_path)}",
                            pytrace=False)
            time.sleep(0.1)
        _STARTED["admin_port"] = admin_port
        yield addr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        if os.environ.get("SLUICE_KEEP_DATA"):
            print(f"sluice data and log kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
