"""A real S3 API server on loopback for tests and benchmarks: moto's server, with every request it answers logged.

It serves the WSGI application moto's ``ThreadedMotoServer`` serves, the same way (werkzeug, threaded), behind
a thin middleware that records each request's method, key, kind and status, so tests can count what reached the
server (object writes, copies, deletes, multipart parts) instead of trusting the client's own account.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

LOG_PATH = "_modelkin-test/requests"

# dummy credentials: moto accepts any, and nothing may ever look for real ones (or ask an instance metadata server)
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "modelkin-test-key",
    "AWS_SECRET_ACCESS_KEY": "modelkin-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
}


@dataclass(frozen=True)
class Request:
    method: str
    bucket: str
    key: str
    kind: str  # write (PUT or completed multipart), part, part-copy, copy, delete, read, head, list, create-upload, ...
    status: int


def _kind(method: str, key: str, query: dict[str, list[str]], environ: dict[str, Any]) -> str:
    if method == "PUT":
        if "partNumber" in query:
            return "part-copy" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else "part"
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            return "copy"
        return "write" if key else "create-bucket"
    if method == "POST":
        if "uploads" in query:
            return "create-upload"
        if "uploadId" in query:
            return "write"  # CompleteMultipartUpload makes the object exist
        if "delete" in query:
            return "delete"
        return "post"
    if method == "DELETE":
        return "abort-upload" if "uploadId" in query else "delete"
    if method == "HEAD":
        return "head"
    if method == "GET":
        return "read" if key and "uploadId" not in query else "list"
    return method.lower()


class _Recorder:
    """WSGI middleware that logs every request with the status moto answered."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._writes = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        if path == LOG_PATH:  # the log itself, for a test or benchmark in another process
            with self._lock:
                body = json.dumps([dataclasses.astuple(r) for r in self.requests]).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        bucket, _, key = path.partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        method = environ["REQUEST_METHOD"]
        kind = _kind(method, key, query, environ)

        def recording_start(status: str, headers: Any, *rest: Any) -> Any:
            with self._lock:
                self.requests.append(Request(method, bucket, key, kind, int(status.split()[0])))
            return start_response(status, headers, *rest)

        if kind != "write":
            return self.app(environ, recording_start)
        # S3 decides a conditional write (If-None-Match) atomically; moto checks, then writes, with no lock
        # between its server threads, so two racing PUTs could both pass. Object writes go one at a time here.
        with self._writes:
            return list(self.app(environ, recording_start))


class _Log:
    """Counting over the request log, wherever the server runs."""

    endpoint: str

    def all_requests(self) -> list[Request]:
        raise NotImplementedError

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=DUMMY_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_ENV["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        )  # fmt: skip

    def requests(self, bucket: str | None = None, blobs_only: bool = False) -> list[Request]:
        """Requests to ``bucket``; ``blobs_only`` leaves out dot-named keys (the probe ``init`` writes)."""
        return [
            r for r in self.all_requests()
            if (bucket is None or r.bucket == bucket) and not (blobs_only and r.key.rsplit("/", 1)[-1].startswith("."))
        ]  # fmt: skip

    def writes_per_key(self, bucket: str) -> Counter[str]:
        """Successful object writes (PUT or completed multipart upload) of each blob key: 1 means written once."""
        return Counter(r.key for r in self.requests(bucket, True) if r.kind == "write" and r.status == 200)

    def count(self, bucket: str, *kinds: str, ok_only: bool = True) -> int:
        """Requests of these kinds to blob keys (successful ones only, unless ``ok_only`` is False)."""
        return sum(1 for r in self.requests(bucket, True) if r.kind in kinds and (r.status < 300 or not ok_only))


class S3Server(_Log):
    """moto's S3 server on 127.0.0.1 and a free port, in this process; ``endpoint`` is for ``AWS_ENDPOINT_URL``."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request would drown the output
        self.recorder = _Recorder(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", port or free_port(), self.recorder, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> S3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def all_requests(self) -> list[Request]:
        return list(self.recorder.requests)


class S3ServerProcess(_Log):
    """The same server in a process of its own, so that its CPU work never competes with a client's threads."""

    def __init__(self) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._proc = subprocess.Popen([sys.executable, __file__, str(port)])
        wait_for_port(port)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait()

    def all_requests(self) -> list[Request]:
        with urllib.request.urlopen(f"{self.endpoint}/{LOG_PATH}") as answer:
            return [Request(*row) for row in json.loads(answer.read())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    """Until a server listens on 127.0.0.1:port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no server came up on port {port}")


if __name__ == "__main__":  # python tests/s3server.py PORT: serve until terminated
    S3Server(int(sys.argv[1]))._server.serve_forever()
