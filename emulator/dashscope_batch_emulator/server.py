"""Run the emulator: :class:`EmulatorServer` (a background thread) and the ``dashscope-emulator`` script."""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from dashscope_batch_emulator.app import ADMIN_PREFIX, create_app
from dashscope_batch_emulator.faults import API_PREFIX, FaultKind
from dashscope_batch_emulator.ratelimit import RateLimitSettings
from dashscope_batch_emulator.state import EmulatorConfig

_BACKLOG = 4096


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        backlog=_BACKLOG,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
    )


class EmulatorServer:
    """
    The emulator served by uvicorn on a real loopback socket, in a background thread with its own loop.

    Use it as a context manager; the helper methods drive the admin API over HTTP, so they behave the
    same as a separate process would.

    :param host: interface to bind.
    :param port: TCP port; ``0`` picks a free one.
    :param api_key: the accepted key; ``None`` mints a random one (see :attr:`api_key`).
    :param accept_any_key: accept every non-empty Bearer key instead of exactly ``api_key``.
    :param config: initial :class:`~dashscope_batch_emulator.state.EmulatorConfig`; keyword overrides
        below are applied on top.
    :param root: directory for stored file bytes (a temporary directory by default).
    :param seed: seed for probabilistic faults.
    :param log_level: uvicorn log level.
    :param overrides: :class:`~dashscope_batch_emulator.state.EmulatorConfig` fields, e.g. ``time_scale=60``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        accept_any_key: bool = False,
        config: EmulatorConfig | None = None,
        root: str | Path | None = None,
        seed: int | None = None,
        log_level: str = "warning",
        **overrides: Any,
    ) -> None:
        self.host = host
        self.api_key = api_key or f"sk-emulator-{secrets.token_hex(16)}"
        config = (config or EmulatorConfig()).model_copy(update=overrides)
        self._app = create_app(
            EmulatorConfig.model_validate(config.model_dump()),
            api_key=None if accept_any_key else self.api_key,
            root=Path(root) if root is not None else None,
            seed=seed,
        )
        self._sock = _listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self._app, log_level))
        self._thread: threading.Thread | None = None
        self._admin: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"EmulatorServer(base_url={self.base_url!r})"

    @property
    def root_url(self) -> str:
        """``http://host:port`` without any path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/compatible-mode/v1``."""
        return self.root_url + API_PREFIX

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API (``/_emulator``)."""
        return self.root_url + ADMIN_PREFIX

    def start(self, timeout: float = 30.0) -> EmulatorServer:
        """Start serving and wait until the server accepts requests."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="dashscope-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The DashScope emulator failed to start on {self.root_url}.")
            time.sleep(0.01)
        self._admin = httpx.Client(base_url=self.admin_url, timeout=60.0)
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        if self._admin is None:
            raise RuntimeError("The emulator is not running; use it as a context manager or call start().")
        response = self._admin.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Drop all files, batches, faults, request counts and callbacks; restore config and clock."""
        self._call("POST", "/reset")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change :class:`~.state.EmulatorConfig` fields; return the new configuration."""
        return self._call("PATCH", "/config", changes)

    def set_clock(self, *, time_scale: float) -> dict[str, Any]:
        """Set emulated seconds per real second (``0`` freezes the clock)."""
        return self.configure(time_scale=time_scale)

    def advance(self, seconds: float) -> float:
        """Jump the emulated clock forward, run all work now due, and return the emulated time."""
        return self._call("POST", "/clock/advance", {"seconds": seconds})["now"]

    def now(self) -> float:
        """Current emulated Unix time."""
        return self._call("GET", "/clock")["now"]

    def fail_requests(
        self, custom_id_pattern: str | None, *, status: int = 400, attempts: int | None = None
    ) -> None:
        """
        Make requests whose ``custom_id`` matches the regex fail (``None`` turns this off).

        :param status: The failures' HTTP status (their code is the status's).
        :param attempts: Fail only each request's first ``attempts`` executions (``None``: always).
        """
        self.configure(fail_custom_id_pattern=custom_id_pattern, fail_status=status, fail_attempts=attempts)

    def add_fault(
        self,
        kind: FaultKind = "status",
        *,
        method: str = "*",
        path: str = "*",
        status: int = 500,
        retry_after: float | None = 1,
        latency: float = 0.0,
        truncate_at: int | None = None,
        count: int | None = None,
        probability: float = 1.0,
        after_processing: bool = False,
        echo_headers: bool = False,
    ) -> dict[str, Any]:
        """
        Inject a fault into matching API requests; see :class:`~.faults.FaultRule`. Returns the rule.

        ``path`` is an ``fnmatch`` pattern below ``/compatible-mode/v1``, e.g. ``/batches/*``.
        """
        return self._call(
            "POST",
            "/faults",
            {
                "kind": kind,
                "method": method,
                "path": path,
                "status": status,
                "retry_after": retry_after,
                "latency": latency,
                "truncate_at": truncate_at,
                "count": count,
                "probability": probability,
                "after_processing": after_processing,
                "echo_headers": echo_headers,
            },
        )

    def remove_fault(self, fault_id: str) -> None:
        """Remove one fault rule by id."""
        self._call("DELETE", f"/faults/{fault_id}")

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._call("DELETE", "/faults")

    def faults(self) -> list[dict[str, Any]]:
        """Active fault rules, with how often each has fired."""
        return self._call("GET", "/faults")["faults"]

    def request_counts(self, *, per_path: bool = False) -> dict[str, int]:
        """
        API requests received per route, e.g. ``{"POST /batches": 1, "GET /batches/{batch_id}": 7}``.

        :param per_path: Count per concrete path instead (``{"GET /batches/batch_1": 3, ...}``): the reads
            of one batch while other clients read others.
        """
        return self._call("GET", "/requests?per=path" if per_path else "/requests")["counts"]

    def clear_request_counts(self) -> None:
        """Zero the per-route request counters."""
        self._call("DELETE", "/requests")

    def set_rate_limits(
        self, limits: dict[str, float] | None = None, *, period_scale: float = 1.0
    ) -> dict[str, Any]:
        """Enforce the account rate limits (documented ones, ``limits`` per minute on top) with 429s."""
        return self._call("PUT", "/rate-limits", {"limits": limits or {}, "period_scale": period_scale})

    def clear_rate_limits(self) -> None:
        """Stop enforcing rate limits."""
        self._call("DELETE", "/rate-limits")

    def rate_limits(self) -> dict[str, Any]:
        """Rate-limit windows and the requests admitted / refused (429) per kind."""
        return self._call("GET", "/rate-limits")

    def callbacks(self) -> list[dict[str, Any]]:
        """Finish notifications sent so far (url, batch_id, status, kind, sent_at, status_code|error)."""
        return self._call("GET", "/callbacks")["callbacks"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``dashscope-emulator``: print the base URL, then serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="dashscope-emulator",
        description="Local emulator of the DashScope OpenAI-compatible Files and Batches API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="emulated seconds per real second")
    parser.add_argument("--processing-rate", type=float, default=100.0, help="requests per emulated second")
    parser.add_argument("--validating-seconds", type=float, default=1.0)
    parser.add_argument("--finalizing-seconds", type=float, default=1.0)
    parser.add_argument("--cancelling-seconds", type=float, default=1.0)
    parser.add_argument("--fail-custom-id-pattern", default=None, help="regex of custom_ids that fail")
    parser.add_argument("--storage-dir", default=None, help="where file bytes are kept (default: temp dir)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--rate-limits", action="store_true", help="answer 429 above the documented account rate limits"
    )
    parser.add_argument(
        "--rate-period-scale", type=float, default=1.0, help="with --rate-limits: scale every window"
    )
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        time_scale=args.time_scale,
        processing_rate=args.processing_rate,
        validating_seconds=args.validating_seconds,
        finalizing_seconds=args.finalizing_seconds,
        cancelling_seconds=args.cancelling_seconds,
        fail_custom_id_pattern=args.fail_custom_id_pattern,
    )
    app = create_app(
        config,
        api_key=args.api_key,
        root=Path(args.storage_dir) if args.storage_dir else None,
        rate_limits=RateLimitSettings(period_scale=args.rate_period_scale) if args.rate_limits else None,
    )
    sock = _listen(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    sys.stdout.write(f"http://{host}:{sock.getsockname()[1]}{API_PREFIX}\n")
    sys.stdout.flush()
    uvicorn.Server(_uvicorn_config(app, args.log_level)).run(sockets=[sock])


if __name__ == "__main__":
    main()
