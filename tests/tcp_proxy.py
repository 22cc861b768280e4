"""A small thread-based TCP proxy for fault injection: loopback listener -> a target.

``pause()`` holds bytes (nothing is forwarded in either direction until ``resume()``;
what was held is then delivered, late, like a network that stalled), ``drop()`` closes
every connection and refuses new ones (accepted, then closed at once) until
``resume()``, ``close()`` ends it all. ``pause()`` and ``drop()`` take effect before they
return: no byte is forwarded after ``pause()`` returns.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress

_CHUNK = 65536
_SEND_TIMEOUT = 5.0  # a peer that stops reading must not wedge the proxy forever


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that close() is noticed by the accept loop
        self.port: int = self._listener.getsockname()[1]
        # One condition guards the state and every forward: pause() taking it means no
        # pump is between its gate check and its send.
        self._cond = threading.Condition()
        self._paused = False
        self._dropped = False
        self._closed = False
        self._epoch = 0  # bumped by drop(): connections of an older epoch are dead
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._accepter.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """Stop forwarding in both directions (bytes are held, not lost)."""
        with self._cond:
            self._paused = True

    def drop(self) -> None:
        """Close every connection (held bytes are lost) and refuse new ones until resume()."""
        with self._cond:
            self._dropped = True
            self._epoch += 1
            conns, self._conns = self._conns, set()
            self._cond.notify_all()
        for s in conns:
            _kill(s)

    def resume(self) -> None:
        """Forward again (held bytes first) and accept connections again."""
        with self._cond:
            self._paused = False
            self._dropped = False
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            conns, self._conns = self._conns, set()
            self._cond.notify_all()
        for s in conns:
            _kill(s)
        self._accepter.join()
        self._listener.close()
        for t in list(self._threads):
            t.join()

    # -- internals -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                with self._cond:
                    if self._closed:
                        return
                continue
            except OSError:
                return
            client.settimeout(None)
            _send_timeout(client)
            with self._cond:
                refuse = self._closed or self._dropped
                epoch = self._epoch
            if refuse:
                _kill(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=_SEND_TIMEOUT)
            except OSError:
                _kill(client)
                continue
            upstream.settimeout(None)
            _send_timeout(upstream)
            with self._cond:
                if self._closed or self._epoch != epoch:
                    dead = True
                else:
                    dead = False
                    self._conns.update((client, upstream))
            if dead:
                _kill(client)
                _kill(upstream)
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, epoch), name="tcp-proxy-pump", daemon=True
                )
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, epoch: int) -> None:
        try:
            while True:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    return
                with self._cond:
                    # Hold the bytes while paused; a drop or close discards them.
                    while self._paused and not self._closed and self._epoch == epoch:
                        self._cond.wait()
                    if self._closed or self._epoch != epoch:
                        return
                    if not data:
                        return
                    try:
                        dst.sendall(data)
                    except OSError:
                        return
        finally:
            # Either side gone: end the pair (the other pump wakes up from its recv).
            with self._cond:
                self._conns.discard(src)
                self._conns.discard(dst)
            _kill(src)
            _kill(dst)


def _send_timeout(s: socket.socket) -> None:
    # A send timeout only (SO_SNDTIMEO): a receive may wait as long as the peer is idle.
    tv = struct.pack("ll", int(_SEND_TIMEOUT), 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _kill(s: socket.socket) -> None:
    with suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        s.close()
