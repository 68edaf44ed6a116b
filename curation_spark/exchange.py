"""Gather/broadcast between the tasks of one barrier stage over plain TCP sockets.

Spark's ``BarrierTaskContext.allGather`` polls for completion once a second (measured:
every call takes >= 1.0 s even for tiny messages), which would add a second to every
Lloyd iteration. So barrier mode is used only for what it is good at -- starting all
tasks together and failing/retrying them together -- and for one rendezvous in which
task 0 publishes the address of a small server. Each iteration the other tasks send their
partial sums to task 0 over a persistent connection and receive the new centroids back.

Failure semantics stay Spark's: a task that dies closes its socket, its peers fail with
an error, the barrier stage fails as a whole and Spark retries it. Every connection
starts with a per-job secret so stray connections are refused.
"""
from __future__ import annotations

import hmac
import socket
import struct
from typing import Any

#: Seconds a task waits on a peer before failing the stage (a peer stuck this long is lost).
SOCKET_TIMEOUT_S = 1800.0
_LEN = struct.Struct("<Q")


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], n - got)
        if r == 0:
            raise ConnectionError("peer task closed the connection (it failed or was killed)")
        got += r
    return bytes(buf)


def _recv(sock: socket.socket) -> bytes:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    return _recv_exact(sock, n)


class TaskGroup:
    """The tasks of one barrier stage, connected in a star around task 0.

    Parameters
    ----------
    ctx
        The task's ``BarrierTaskContext``.
    secret
        Per-job random bytes (created on the driver, shipped in the closure).
    """

    def __init__(self, ctx: Any, secret: bytes, timeout: float = SOCKET_TIMEOUT_S) -> None:
        self.rank = int(ctx.partitionId())
        infos = ctx.getTaskInfos()
        self.size = len(infos)
        self._secret = secret
        self._peers: dict[int, socket.socket] = {}
        self._root: socket.socket | None = None
        server = None
        address = ""
        if self.rank == 0 and self.size > 1:
            server = socket.create_server(("", 0), backlog=self.size)
            server.settimeout(timeout)
            host = infos[0].address.rsplit(":", 1)[0]
            address = f"{host}:{server.getsockname()[1]}"
        # The one Spark all-gather: task 0 publishes its server's address.
        published = ctx.allGather(address)
        if self.size == 1:
            return
        if self.rank == 0:
            assert server is not None
            try:
                while len(self._peers) < self.size - 1:
                    conn, _ = server.accept()
                    conn.settimeout(timeout)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    hello = _recv(conn)
                    token, rank = hello[:-4], struct.unpack("<i", hello[-4:])[0]
                    if not hmac.compare_digest(token, secret) or not 0 < rank < self.size or rank in self._peers:
                        conn.close()
                        continue
                    self._peers[rank] = conn
            finally:
                server.close()
        else:
            host, port = published[0].rsplit(":", 1)
            self._root = socket.create_connection((host, int(port)), timeout=timeout)
            self._root.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _send(self._root, secret + struct.pack("<i", self.rank))

    def gather(self, payload: bytes) -> list[bytes] | None:
        """Task 0 gets every task's payload in rank order; the others get None."""
        if self.size == 1:
            return [payload]
        if self.rank == 0:
            return [payload] + [_recv(self._peers[r]) for r in range(1, self.size)]
        assert self._root is not None
        _send(self._root, payload)
        return None

    def broadcast(self, payload: bytes | None) -> bytes:
        """Task 0's payload, delivered to every task."""
        if self.size == 1:
            assert payload is not None
            return payload
        if self.rank == 0:
            assert payload is not None
            for r in range(1, self.size):
                _send(self._peers[r], payload)
            return payload
        assert self._root is not None
        return _recv(self._root)

    def close(self) -> None:
        for conn in self._peers.values():
            conn.close()
        if self._root is not None:
            self._root.close()
