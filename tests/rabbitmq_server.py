"""
A throw-away RabbitMQ broker on loopback for the finish watcher's queue source (tests/events, the
deployment suite and benchmarks/events.py), owned by the test session.

Uses Debian's ``rabbitmq-server`` package, installed with ``apt-get`` when missing and running as root
(CI), like the deployment suite's PostgreSQL. The node gets its own name, ports (AMQP, Erlang
distribution, and an ``epmd`` of its own) and directories under a temporary folder; no systemd, no
plugins, and the broker's default ``guest`` user, which RabbitMQ admits only from loopback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _install() -> None:
    if not SERVER.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", "rabbitmq-server"], env=env, **quiet)
    if not SERVER.exists():
        raise RuntimeError("RabbitMQ is not installed (apt-get install rabbitmq-server)")


async def publish(channel: Any, queue: str, *bodies: bytes) -> None:
    """Publish persistent messages to ``queue`` on ``channel`` as EventBridge's RabbitMQ target does."""
    import aiormq

    for body in bodies:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2)
        await channel.basic_publish(body, routing_key=queue, properties=properties)


class RabbitMQServer:
    """One RabbitMQ node; :attr:`url` reaches its default virtual host as ``guest``."""

    #: The broker's default user, admitted from loopback only.
    login = password = "guest"

    def __init__(self) -> None:
        _install()
        self.root = Path(tempfile.mkdtemp(prefix="dashscope-rabbitmq-"))
        self.port, self.dist_port, self.epmd_port = _free_port(), _free_port(), _free_port()
        self.url = f"amqp://{self.login}:{self.password}@127.0.0.1:{self.port}/"
        self._procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> bool:
        """Whether a broker can run here without installing anything (the server and ``aiormq``)."""
        return SERVER.exists() and importlib.util.find_spec("aiormq") is not None

    def start(self) -> None:
        """Start ``epmd`` and the node, and wait until the broker accepts AMQP connections."""
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        env = {
            **os.environ,
            "HOME": str(self.root),  # the Erlang cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": f"dashscope-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
        }
        with (self.root / "server.log").open("wb") as log:
            for command in (["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"], [str(SERVER)]):
                self._procs.append(
                    subprocess.Popen(
                        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + 90
        while not self._accepts():
            if time.monotonic() > deadline or self._procs[-1].poll() is not None:
                raise RuntimeError(f"RabbitMQ did not start; see {self.root / 'server.log'}")
            time.sleep(0.5)

    def declare(self, queue: str) -> None:
        """Create the durable queue ``queue`` (what the ApsaraMQ console does for EventBridge's target)."""
        asyncio.run(self._on_channel(lambda channel: channel.queue_declare(queue, durable=True)))

    def publish(self, queue: str, *bodies: bytes) -> None:
        """Publish persistent messages to ``queue`` (:func:`publish`) on a connection of their own."""
        asyncio.run(self._on_channel(lambda channel: publish(channel, queue, *bodies)))

    def waiting(self, queue: str) -> int:
        """Messages in ``queue`` that no consumer holds."""

        async def count(channel: Any) -> int:
            return (await channel.queue_declare(queue, passive=True)).message_count

        return asyncio.run(self._on_channel(count))

    async def _on_channel(self, use: Callable[[Any], Awaitable[T]]) -> T:
        import aiormq

        connection = await aiormq.connect(self.url)
        try:
            return await use(await connection.channel())
        finally:
            await connection.close()

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return bool(sock.recv(1))  # connection.start: the broker is up, not just the port
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the node and its ``epmd``, and delete its files."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
