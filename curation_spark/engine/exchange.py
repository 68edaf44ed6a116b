"""Collectives between the tasks of one barrier stage over a full mesh of plain TCP sockets.

Spark's ``BarrierTaskContext.allGather`` polls for completion once a second (measured:
every call takes >= 1.0 s even for tiny messages), which would add a second to every
Lloyd iteration; it also routes every message through the driver. So barrier mode is
used only for what it is good at -- starting all tasks together and failing/retrying
them together -- and for one rendezvous in which every task publishes the address of its
own small server. After that every pair of tasks shares one persistent TCP connection and
the collectives (:meth:`TaskGroup.all_to_all`, :meth:`~TaskGroup.all_gather`,
:meth:`~TaskGroup.gather`, :meth:`~TaskGroup.broadcast`) move bytes directly between the
tasks that need them, so no task has to receive everyone's full message (see
:mod:`curation_spark.method.reduce` for the reduce-scatter built on top).

Messages are length-prefixed frames. All transfers of one collective run in one thread on
non-blocking sockets driven by :mod:`selectors`: a task writes to and reads from all its
peers as each socket becomes ready, so no message size, task count or arrival order can
deadlock (two tasks both blocked in ``send`` of a large message is impossible). Every
task must call the same collectives in the same order; frames on a connection are FIFO,
which pairs each frame with its collective.

Failure semantics stay Spark's: a task that dies closes its sockets, its peers fail with
:class:`ConnectionError` naming it, the barrier stage fails as a whole and Spark retries
it. Every connection starts with a per-job secret (compared with :func:`hmac.compare_digest`)
so stray connections are refused.
"""
from __future__ import annotations

import hmac
import selectors
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any

#: Seconds without any progress before a collective fails the stage (a peer stuck this long is lost).
SOCKET_TIMEOUT_S = 1800.0
_LEN = struct.Struct("<Q")
_RANK = struct.Struct("<i")

#: What a collective accepts as a message: anything exposing a contiguous byte buffer.
BytesLike = bytes | bytearray | memoryview


class _Frame:
    """Incremental reader of one length-prefixed frame from a non-blocking socket.

    Never reads past the end of its frame, so a fast peer may already have queued the
    next collective's frame on the same connection.
    """

    def __init__(self, max_len: int | None = None) -> None:
        self._head = bytearray(_LEN.size)
        self._got_head = 0
        self._max_len = max_len
        self.body: bytearray | None = None
        self._got = 0

    @property
    def done(self) -> bool:
        return self.body is not None and self._got == len(self.body)

    def read(self, sock: socket.socket) -> bool:
        """Read what is available; True once the frame is complete.

        Raises :class:`EOFError` if the peer closed the connection, :class:`ValueError`
        if the announced length exceeds ``max_len``.
        """
        while not self.done:
            if self.body is None:
                view = memoryview(self._head)[self._got_head:]
            else:
                view = memoryview(self.body)[self._got:]
            try:
                n = sock.recv_into(view, len(view))
            except (BlockingIOError, InterruptedError):
                return False
            if n == 0:
                raise EOFError
            if self.body is None:
                self._got_head += n
                if self._got_head == _LEN.size:
                    (size,) = _LEN.unpack(self._head)
                    if self._max_len is not None and size > self._max_len:
                        raise ValueError(f"frame of {size} bytes, at most {self._max_len} expected")
                    self.body = bytearray(size)
            else:
                self._got += n
        return True


class _Outbox:
    """The unsent rest of one length-prefixed frame (the payload is never copied)."""

    def __init__(self, payload: BytesLike) -> None:
        body = memoryview(payload)
        if body.ndim != 1 or body.itemsize != 1:  # e.g. a view of a numpy array: send its raw bytes
            body = body.cast("B") if body.nbytes else memoryview(b"")
        self._parts = [memoryview(_LEN.pack(len(body))), body]

    @property
    def done(self) -> bool:
        return not self._parts

    def write(self, sock: socket.socket) -> bool:
        """Send what the socket takes; True once the frame is fully sent."""
        while self._parts:
            try:
                n = sock.send(self._parts[0])
            except (BlockingIOError, InterruptedError):
                return False
            self._parts[0] = self._parts[0][n:]
            if not len(self._parts[0]):
                self._parts.pop(0)
        return True


def _peer_lost(rank: int) -> ConnectionError:
    return ConnectionError(f"peer task {rank} closed the connection (it failed or was killed)")


class TaskGroup:
    """The tasks of one barrier stage, every pair connected by one authenticated socket.

    Building the group is the one ``ctx.allGather`` of the stage: every task listens on a
    server socket and publishes its address. Rank ``i`` then connects to every rank
    ``j > i`` (sending the secret and its rank) and accepts from every rank ``j < i``. A
    connect completes in the peer's listen backlog, before the peer calls ``accept``, and
    the highest rank connects to nobody, so establishing the T(T-1)/2 connections cannot
    deadlock. Pending handshakes are read concurrently: a silent stray connection cannot
    stall the group, and a wrong secret, unknown or duplicate rank is closed and ignored.

    Parameters
    ----------
    ctx
        The task's ``BarrierTaskContext`` (or anything with ``partitionId()``,
        ``getTaskInfos()`` with ``.address`` "host:port", and ``allGather(str)``).
    secret
        Per-job random bytes (created on the driver, shipped in the closure).
    timeout
        Seconds without progress after which connecting or a collective fails.
    """

    def __init__(self, ctx: Any, secret: bytes, timeout: float = SOCKET_TIMEOUT_S) -> None:
        self.rank = int(ctx.partitionId())
        infos = ctx.getTaskInfos()
        self.size = len(infos)
        self._secret = bytes(secret)
        self._timeout = timeout
        self._peers: dict[int, socket.socket] = {}
        server = None
        address = ""
        if self.size > 1:
            server = socket.create_server(("", 0), backlog=self.size)
            host = infos[self.rank].address.rsplit(":", 1)[0]
            address = f"{host}:{server.getsockname()[1]}"
        try:
            # The one Spark all-gather: every task publishes its server's address.
            published = ctx.allGather(address)
            if server is not None:
                self._connect(published, server)
        except BaseException:
            self.close()
            raise
        finally:
            if server is not None:
                server.close()

    def _hello(self) -> bytes:
        return self._secret + _RANK.pack(self.rank)

    def _connect(self, published: Sequence[str], server: socket.socket) -> None:
        for peer in range(self.rank + 1, self.size):
            host, port = published[peer].rsplit(":", 1)
            conn = socket.create_connection((host, int(port)), timeout=self._timeout)
            self._add_peer(peer, conn)
            conn.sendall(_LEN.pack(len(self._hello())) + self._hello())
        self._accept(server)
        for conn in self._peers.values():
            conn.setblocking(False)

    def _accept(self, server: socket.socket) -> None:
        """Accept one authenticated connection from every lower rank."""
        expected = len(self._hello())
        server.setblocking(False)
        pending: dict[socket.socket, _Frame] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ)
            try:
                while len(self._peers) < self.size - 1:
                    events = sel.select(self._timeout)
                    if not events:
                        missing = sorted(set(range(self.rank)) - set(self._peers))
                        raise TimeoutError(f"task {self.rank}: tasks {missing} did not connect within "
                                           f"{self._timeout:.0f} s")
                    for key, _ in events:
                        if key.fileobj is server:
                            try:
                                conn, _ = server.accept()
                            except (BlockingIOError, InterruptedError):
                                continue
                            conn.setblocking(False)
                            pending[conn] = _Frame(max_len=expected)
                            sel.register(conn, selectors.EVENT_READ)
                            continue
                        assert isinstance(key.fileobj, socket.socket)
                        conn = key.fileobj
                        try:
                            if not pending[conn].read(conn):
                                continue
                            hello = bytes(pending.pop(conn).body or b"")
                        except (EOFError, ValueError, OSError):
                            hello = b""
                            pending.pop(conn, None)
                        sel.unregister(conn)
                        rank = self._authenticate(hello)
                        if rank is None:
                            conn.close()
                        else:
                            self._add_peer(rank, conn)
            finally:
                for conn in pending:
                    conn.close()

    def _authenticate(self, hello: bytes) -> int | None:
        """The connecting rank if ``hello`` carries the secret and an expected rank, else None."""
        if len(hello) != len(self._hello()):
            return None
        token, (rank,) = hello[:-_RANK.size], _RANK.unpack(hello[-_RANK.size:])
        if not hmac.compare_digest(token, self._secret) or not 0 <= rank < self.rank or rank in self._peers:
            return None
        return rank

    def _add_peer(self, rank: int, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[rank] = conn

    # ------------------------------------------------------------------ collectives

    def _exchange(self, sends: Mapping[int, BytesLike], receives: Sequence[int]) -> dict[int, bytearray]:
        """Send ``sends[r]`` to each peer r and receive one frame from each rank in
        ``receives``, all concurrently on non-blocking sockets; the core of every collective."""
        outboxes = {r: _Outbox(p) for r, p in sends.items()}
        frames = {r: _Frame() for r in receives}
        with selectors.DefaultSelector() as sel:
            for r in set(outboxes) | set(frames):
                mask = (selectors.EVENT_WRITE if r in outboxes else 0) | (selectors.EVENT_READ if r in frames else 0)
                sel.register(self._peers[r], mask, r)
            while sel.get_map():
                events = sel.select(self._timeout)
                if not events:
                    waiting = sorted({key.data for key in sel.get_map().values()})
                    raise TimeoutError(f"task {self.rank}: no progress with tasks {waiting} for {self._timeout:.0f} s")
                for key, mask in events:
                    r = key.data
                    try:
                        if mask & selectors.EVENT_READ and r in frames:
                            frames[r].read(key.fileobj)  # type: ignore[arg-type]  # a peer's socket
                        if mask & selectors.EVENT_WRITE and r in outboxes:
                            outboxes[r].write(key.fileobj)  # type: ignore[arg-type]  # a peer's socket
                    except (EOFError, OSError) as exc:  # EOF, reset, broken pipe
                        raise _peer_lost(r) from exc
                    left = ((selectors.EVENT_WRITE if r in outboxes and not outboxes[r].done else 0)
                            | (selectors.EVENT_READ if r in frames and not frames[r].done else 0))
                    if not left:
                        sel.unregister(key.fileobj)
                    elif left != key.events:
                        sel.modify(key.fileobj, left, r)
        return {r: f.body for r, f in frames.items() if f.body is not None}

    def all_to_all(self, outgoing: Sequence[BytesLike]) -> list[BytesLike]:
        """Send ``outgoing[r]`` to rank r; return what every rank sent to this one, in rank order.

        The own slot is handed back as given, without a socket. Received messages are
        ``bytearray`` (use ``np.frombuffer`` / ``struct.unpack_from`` on them).
        """
        if len(outgoing) != self.size:
            raise ValueError(f"all_to_all needs {self.size} messages, got {len(outgoing)}")
        peers = [r for r in range(self.size) if r != self.rank]
        got = self._exchange({r: outgoing[r] for r in peers}, peers)
        return [outgoing[r] if r == self.rank else got[r] for r in range(self.size)]

    def all_gather(self, payload: BytesLike) -> list[BytesLike]:
        """Every task's ``payload``, in rank order, on every task."""
        return self.all_to_all([payload] * self.size)

    def gather(self, payload: BytesLike) -> list[BytesLike] | None:
        """Task 0 gets every task's payload in rank order; the others get None."""
        if self.rank == 0:
            got = self._exchange({}, range(1, self.size))
            return [payload] + [got[r] for r in range(1, self.size)]
        self._exchange({0: payload}, ())
        return None

    def broadcast(self, payload: BytesLike | None) -> BytesLike:
        """Task 0's payload, delivered to every task (the others pass None)."""
        if self.rank == 0:
            if payload is None:
                raise ValueError("task 0 must pass the payload to broadcast")
            self._exchange({r: payload for r in range(1, self.size)}, ())
            return payload
        return self._exchange({}, (0,))[0]

    def close(self) -> None:
        """Close every connection (idempotent); peers still exchanging then fail."""
        for conn in self._peers.values():
            conn.close()
        self._peers.clear()

    def __enter__(self) -> TaskGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
