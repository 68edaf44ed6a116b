"""The task mesh over real sockets: collectives, reduce-scatter, failures, stray connections.

Tasks are threads on 127.0.0.1 with a stand-in for ``BarrierTaskContext``; one test runs a
real Spark barrier stage.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from curation_spark.engine.exchange import TaskGroup
from curation_spark.method.reduce import all_gather_rows, all_gather_values, owner_bounds, reduce_scatter

SECRET = b"0123456789abcdef"


class _Info:
    address = "127.0.0.1:0"


class _Rendezvous:
    """What the tasks share: the one all-gather, as a thread barrier."""

    def __init__(self, n: int, on_published=None) -> None:
        self.n = n
        self.slots = [""] * n
        self.barrier = threading.Barrier(n)
        self.on_published = on_published


class _Context:
    """The part of ``BarrierTaskContext`` that TaskGroup uses."""

    def __init__(self, rank: int, shared: _Rendezvous) -> None:
        self.rank = rank
        self.shared = shared

    def partitionId(self) -> int:
        return self.rank

    def getTaskInfos(self) -> list[_Info]:
        return [_Info() for _ in range(self.shared.n)]

    def allGather(self, message: str) -> list[str]:
        self.shared.slots[self.rank] = message
        self.shared.barrier.wait()
        published = list(self.shared.slots)
        if self.shared.on_published is not None:
            self.shared.on_published(self.rank, published)
        return published


def run_tasks(n: int, body, *, timeout: float = 10.0, secret: bytes = SECRET, on_published=None):
    """Run ``body(group)`` on n threaded tasks; (results, errors) in rank order."""
    shared = _Rendezvous(n, on_published)
    results: list = [None] * n
    errors: list = [None] * n

    def main(rank: int) -> None:
        try:
            with TaskGroup(_Context(rank, shared), secret, timeout=timeout) as group:
                results[rank] = body(group)
        except BaseException as exc:  # noqa: BLE001 -- reported to the test
            errors[rank] = exc

    threads = [threading.Thread(target=main, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a task hung"
    return results, errors


def ok(outcome):
    results, errors = outcome
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def message(src: int, dst: int, size: int) -> bytes:
    return np.random.default_rng([src, dst]).bytes(size)


# Sizes from empty to larger than any socket buffer: blocking send-then-receive would deadlock.
SIZES = [0, 1, 3 * 1024 * 1024, 777, 5 * 1024 * 1024 + 3]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_collectives_in_sequence(n):
    def size(src, dst):
        return SIZES[(3 * src + dst) % len(SIZES)]

    def body(group):
        time.sleep(0.02 * ((group.rank * 7) % 3))  # tasks enter the collectives at different times
        out = {}
        out["a2a"] = group.all_to_all([message(group.rank, r, size(group.rank, r)) for r in range(n)])
        out["a2a_small"] = group.all_to_all([struct.pack("<ii", group.rank, r) for r in range(n)])
        out["all_gather"] = group.all_gather(message(group.rank, 100, 1000 * group.rank))
        out["gather"] = group.gather(struct.pack("<i", group.rank * 10))
        out["broadcast"] = group.broadcast(message(0, 101, 2 * 1024 * 1024) if group.rank == 0 else None)
        return out

    results = ok(run_tasks(n, body))
    for rank, out in enumerate(results):
        assert [bytes(m) for m in out["a2a"]] == [message(r, rank, size(r, rank)) for r in range(n)]
        assert [bytes(m) for m in out["a2a_small"]] == [struct.pack("<ii", r, rank) for r in range(n)]
        assert [bytes(m) for m in out["all_gather"]] == [message(r, 100, 1000 * r) for r in range(n)]
        if rank == 0:
            assert [bytes(m) for m in out["gather"]] == [struct.pack("<i", r * 10) for r in range(n)]
        else:
            assert out["gather"] is None
        assert bytes(out["broadcast"]) == message(0, 101, 2 * 1024 * 1024)


def test_single_task_uses_no_sockets():
    def body(group):
        assert group._peers == {}
        return group.all_to_all([b"x"]), group.all_gather(b"y"), group.gather(b"z"), group.broadcast(b"w")

    assert ok(run_tasks(1, body))[0] == ([b"x"], [b"y"], [b"z"], b"w")


def test_all_to_all_needs_one_message_per_rank():
    def body(group):
        with pytest.raises(ValueError):
            group.all_to_all([b""])
        return group.all_gather(b"still in step")

    ok(run_tasks(2, body))


def _rank_partials(rank: int, k: int, dim: int):
    rng = np.random.default_rng([rank, 99])
    idx = np.sort(rng.choice(k, rng.integers(0, k + 1), replace=False)).astype(np.int32)
    counts = rng.integers(1, 50, len(idx)).astype(np.int64)
    sums = rng.standard_normal((len(idx), dim)) * 10.0 ** rng.integers(-10, 10, (len(idx), dim))
    return idx, counts, sums


def _plain_sum(n: int, k: int, dim: int):
    total, total_counts = np.zeros((k, dim)), np.zeros(k, dtype=np.int64)
    for r in range(n):
        idx, counts, sums = _rank_partials(r, k, dim)
        dense, dense_counts = np.zeros((k, dim)), np.zeros(k, dtype=np.int64)
        dense[idx], dense_counts[idx] = sums, counts
        total, total_counts = total + dense, total_counts + dense_counts
    return total, total_counts


@pytest.mark.parametrize(("n", "k"), [(1, 37), (2, 37), (3, 37), (5, 37), (5, 3)])
def test_reduce_scatter_and_all_gather_rows_match_plain_sum(n, k):
    dim = 5

    def body(group):
        lo, hi, sums, counts = reduce_scatter(group, *_rank_partials(group.rank, k, dim), k, dim)
        bounds = owner_bounds(k, group.size)
        assert (lo, hi) == (bounds[group.rank], bounds[group.rank + 1])
        full_sums = all_gather_rows(group, sums.astype(np.float32), bounds)
        full_counts = all_gather_rows(group, counts[:, None].astype(np.float32), bounds)
        stats = all_gather_values(group, [group.rank * 0.5, -1.0])
        return sums, counts, full_sums, full_counts, stats

    results = ok(run_tasks(n, body))
    ref_sums, ref_counts = _plain_sum(n, k, dim)
    bounds = owner_bounds(k, n)
    for rank, (sums, counts, full_sums, full_counts, stats) in enumerate(results):
        assert np.array_equal(sums, ref_sums[bounds[rank]:bounds[rank + 1]])
        assert np.array_equal(counts, ref_counts[bounds[rank]:bounds[rank + 1]])
        assert full_sums.dtype == np.float32 and np.array_equal(full_sums, ref_sums.astype(np.float32))
        assert np.array_equal(full_counts[:, 0], ref_counts.astype(np.float32))
        assert np.array_equal(stats, [[r * 0.5, -1.0] for r in range(n)])


@pytest.mark.parametrize("how", ["closes", "dies_mid_frame"])
def test_peer_that_goes_away_fails_the_others(how):
    n, lost = 3, 2
    done = threading.Barrier(n)  # survivors keep their sockets open until everyone has failed

    def body(group):
        if group.rank == lost:
            if how == "dies_mid_frame":
                for conn in group._peers.values():
                    conn.setblocking(True)
                    conn.sendall(struct.pack("<Q", 1 << 20) + b"partial")
            group.close()
            done.wait()
            return None
        try:
            group.all_to_all([message(group.rank, r, 4 * 1024 * 1024) for r in range(n)])
        except ConnectionError as exc:
            return exc
        finally:
            done.wait()

    results = ok(run_tasks(n, body, timeout=5.0))
    for rank in range(n):
        if rank != lost:
            assert isinstance(results[rank], ConnectionError)
            assert f"peer task {lost} closed the connection" in str(results[rank])


def test_stuck_peer_times_out_instead_of_hanging():
    n, stuck = 3, 1
    done = threading.Barrier(n)

    def body(group):
        try:
            if group.rank == stuck:
                time.sleep(2.0)
                return None
            started = time.perf_counter()
            with pytest.raises(TimeoutError, match=r"tasks \[1\]"):
                group.all_gather(b"x" * 100)
            return time.perf_counter() - started
        finally:
            done.wait()

    results = ok(run_tasks(n, body, timeout=0.5))
    assert all(0.4 < results[r] < 1.9 for r in range(n) if r != stuck)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_stray_connections_are_refused():
    strays: list[socket.socket] = []
    refused: list[bool] = []

    def stray(rank, published):
        # Rank 0 connects to rank 1 only after strays have hit rank 1's server.
        if rank != 0:
            return
        host, port = published[1].rsplit(":", 1)
        silent = socket.create_connection((host, int(port)), timeout=5)  # says nothing at all
        strays.append(silent)
        for hello in (b"not the secret!!" + struct.pack("<i", 0),   # wrong secret
                      SECRET + struct.pack("<i", 1),                # right secret, rank not below 1
                      SECRET):                                      # truncated
            conn = socket.create_connection((host, int(port)), timeout=5)
            conn.sendall(struct.pack("<Q", len(hello)) + hello)
            refused.append(_closed_by_peer(conn))
            conn.close()
        huge = socket.create_connection((host, int(port)), timeout=5)  # announces a huge frame
        huge.sendall(struct.pack("<Q", 1 << 40))
        refused.append(_closed_by_peer(huge))
        huge.close()

    results = ok(run_tasks(2, lambda group: [bytes(m) for m in group.all_gather(bytes([group.rank]))],
                           on_published=stray))
    assert refused == [True, True, True, True]
    assert results == [[b"\x00", b"\x01"]] * 2
    assert _closed_by_peer(strays[0])  # the silent one is closed once the group is complete
    strays[0].close()


def test_group_with_another_secret_cannot_form():
    shared = _Rendezvous(2)
    errors: list = [None, None]

    def main(rank):
        try:
            TaskGroup(_Context(rank, shared), SECRET if rank == 0 else b"fedcba9876543210", timeout=1.0).close()
        except BaseException as exc:  # noqa: BLE001
            errors[rank] = exc

    threads = [threading.Thread(target=main, args=(r,), daemon=True) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(errors[1], TimeoutError) and "tasks [0] did not connect" in str(errors[1])


def test_in_a_spark_barrier_stage(spark):
    import pyarrow as pa

    k, dim = 41, 7
    secret = b"spark-test-secret"

    def partials(rank):
        rng = np.random.default_rng([rank, 5])
        idx = np.sort(rng.choice(k, rng.integers(1, k + 1), replace=False)).astype(np.int32)
        counts = rng.integers(1, 50, len(idx)).astype(np.int64)
        sums = rng.standard_normal((len(idx), dim)) * 10.0 ** rng.integers(-10, 10, (len(idx), dim))
        return idx, counts, sums

    def run(batches):
        from pyspark import BarrierTaskContext

        from curation_spark.engine.exchange import TaskGroup
        from curation_spark.method.reduce import all_gather_rows, owner_bounds, reduce_scatter

        for _ in batches:
            pass
        ctx = BarrierTaskContext.get()
        with TaskGroup(ctx, secret, timeout=60.0) as group:
            _, _, sums, counts = reduce_scatter(group, *partials(group.rank), k, dim)
            means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
            full = all_gather_rows(group, means, owner_bounds(k, group.size))
            all_counts = b"".join(bytes(p) for p in group.all_gather(counts.tobytes()))
        yield pa.RecordBatch.from_pydict({"rank": pa.array([group.rank], pa.int32()), "full": [full.tobytes()],
                                          "counts": [all_counts]})

    rows = spark.range(0, 2, 1, 2).mapInArrow(run, "rank int, full binary, counts binary", barrier=True).collect()
    total, total_counts = np.zeros((k, dim)), np.zeros(k, dtype=np.int64)
    for r in range(2):
        idx, counts, sums = partials(r)
        dense, dense_counts = np.zeros((k, dim)), np.zeros(k, dtype=np.int64)
        dense[idx], dense_counts[idx] = sums, counts
        total, total_counts = total + dense, total_counts + dense_counts
    expected = (total / np.maximum(total_counts, 1)[:, None]).astype(np.float32)
    assert sorted(r["rank"] for r in rows) == [0, 1]
    for row in rows:
        assert np.array_equal(np.frombuffer(row["full"], dtype=np.float32).reshape(k, dim), expected)
        assert np.array_equal(np.frombuffer(row["counts"], dtype=np.int64), total_counts)
