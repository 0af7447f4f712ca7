"""An S3-compatible server that enforces what OSS enforces, in front of moto's real S3 server."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1Auth
from botocore.credentials import Credentials

from tests.fs.oss_helpers import ACCESS_KEY

#: The strict server's domain: ``<bucket>.oss.test`` is a virtual-hosted request for ``<bucket>``.
OSS_DOMAIN = "oss.test"


@dataclass
class StrictOSS:
    """The running strict server: its endpoint, and the error code of every request it refused."""

    endpoint: str
    refused: list[str] = field(default_factory=list)


def _error(handler: StrictOSSHandler, status: int, code: str, message: str) -> None:
    handler.refused.append(code)
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class StrictOSSHandler(BaseHTTPRequestHandler):
    """
    OSS's rules on the S3-compatible API, then a path-style forward to moto.

    * Virtual-hosted addressing only: a request whose Host is not ``<bucket>.oss.test`` is refused
      with ``SecondLevelDomainForbidden`` (OSS's answer to path-style requests).
    * Signature V2 (``Authorization: AWS <id>:<signature>``) checked against the one AccessKey pair;
      V4 and ``aws-chunked`` bodies are refused, a wrong signature is ``SignatureDoesNotMatch``.
    """

    moto: str = ""
    refused: list[str]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _handle(self) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        bucket, _, domain = host.partition(".")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if domain != OSS_DOMAIN or not bucket:
            return _error(
                self, 403, "SecondLevelDomainForbidden", "Please use virtual hosted style to access."
            )
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("AWS "):
            return _error(self, 400, "InvalidArgument", f"Unsupported Authorization: {auth.split(' ')[0]!r}")
        if "aws-chunked" in (self.headers.get("Content-Encoding") or ""):
            return _error(self, 400, "InvalidArgument", "aws-chunked encoding is not supported")
        split = urlsplit(f"http://{host}{self.path}")
        expected = HmacV1Auth(Credentials(*ACCESS_KEY)).get_signature(
            self.command, split, self.headers, auth_path=f"/{bucket}{split.path}"
        )
        if auth != f"AWS {ACCESS_KEY[0]}:{expected}":
            return _error(
                self, 403, "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        upstream = http.client.HTTPConnection(self.moto, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, f"/{bucket}{self.path}", body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        # a HEAD answer has no body but the object's length
        self.send_header("Content-Length", response.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def strict_oss(moto_endpoint: str, s3_bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[StrictOSS]:
    """
    The strict server on loopback, at the endpoint ``http://oss.test:<port>``.

    There is no DNS server here, and /etc/hosts belongs to the machine, so ``*.oss.test`` is made to
    resolve to the loopback in this process only (``socket.getaddrinfo``, which aiohttp's resolver uses);
    everything after the name lookup is real HTTP.
    """
    refused: list[str] = []
    handler = type(
        "Handler", (StrictOSSHandler,), {"moto": urlsplit(moto_endpoint).netloc, "refused": refused}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and (host == OSS_DOMAIN or host.endswith("." + OSS_DOMAIN)):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StrictOSS(f"http://{OSS_DOMAIN}:{port}", refused)
    finally:
        server.shutdown()
        server.server_close()
