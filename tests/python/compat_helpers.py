"""Test data and small utilities shared by the Python client suites."""

import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

NUM_PARTITIONS = 4
NUM_MESSAGES = 10_000


def _replication_factor() -> int:
    v = os.environ.get("SLUICE_TEST_REPLICATION_FACTOR", "1")
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"SLUICE_TEST_REPLICATION_FACTOR={v!r} is not a positive number")
    return n


# The replication factor of every topic the tests create (SLUICE_TEST_REPLICATION_FACTOR,
# default 1; 3 against a three-broker cluster).
REPLICATION_FACTOR = _replication_factor()

# How long a new topic may take until every partition is led by its preferred replica (the
# first one). Kafka elects it at creation; a Sluice cluster elects any replica first and hands
# leadership to the preferred one about ten election timeouts (~10 s) later, so the tests wait
# for that before they produce, to test the steady state rather than the handover.
TOPIC_READY_S = 45.0


@dataclass
class Msg:
    index: int
    key: bytes
    value: bytes
    headers: List[Tuple[str, bytes]]
    ts: int  # CreateTime, milliseconds


def make_messages(n: int, base: int, tag: str = "") -> List[Msg]:
    """n keyed messages with two headers each and strictly increasing timestamps from base."""
    out = []
    for i in range(n):
        filler = chr(ord("a") + i % 26) * (20 + i % 50)
        out.append(Msg(
            index=i,
            key=b"key-%06d" % i,
            value=f"value-{i:06d}-{filler}{tag}".encode(),
            headers=[("seq", str(i).encode()), ("bin", bytes([i & 0xFF, (i >> 8) & 0xFF, 0x00, 0xFF]))],
            ts=base + i,
        ))
    return out


def base_timestamp() -> int:
    """One hour ago in whole milliseconds: clear of future-timestamp checks and time retention."""
    return int(time.time() * 1000) - 3_600_000


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def key_index(key: bytes) -> int:
    return int(key[len(b"key-"):])


def first_at_or_after(msgs: List[Msg], ts: int) -> int:
    for i, m in enumerate(msgs):
        if m.ts >= ts:
            return i
    return len(msgs)


def wait_for(cond: Callable[[], Optional[str]], timeout: float = 20.0, interval: float = 0.1) -> None:
    """Poll cond until it returns None (success); it returns a reason string while not ready."""
    deadline = time.monotonic() + timeout
    reason = None
    while True:
        try:
            reason = cond()
        except Exception as e:  # transient client/broker errors while metadata settles
            reason = f"{type(e).__name__}: {e}"
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {reason}")
        time.sleep(interval)
