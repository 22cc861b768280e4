"""A real ``redis-server`` on loopback, started and stopped by the tests themselves.

``./scripts/check.sh`` installs the Debian package when it is missing. Never the packaged
service on 6379: each server gets a free port, no persistence, its own directory. Also
used by ``benchmarks/leases.py`` (so: no pytest here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or next(
        (c for c in _CANDIDATES if os.access(c, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(
            "redis-server is not installed; ./scripts/check.sh installs it "
            "(apt-get install -y redis-server)"
        )
    return found


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 6379:  # never the packaged service's port
            return port


class RedisServer:
    """One redis-server process: ``start()``, ``kill()`` (SIGKILL), ``restart()`` (same
    port, empty: no persistence), ``pause()``/``resume()`` (SIGSTOP/SIGCONT)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--enable-debug-command", "local", "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # poll for the port: the server gives no other readiness signal
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (code {self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server must still die
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.kill()

    def version(self) -> str:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
