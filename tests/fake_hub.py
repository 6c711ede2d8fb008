"""A small stand-in for the Hugging Face Hub on 127.0.0.1, enough for ``hf_hub_download`` and ``model_info``.

Endpoints (what huggingface_hub 1.x/2.x calls for these two functions):

* ``GET /api/models/{owner}/{name}[/revision/{rev}]`` -> ``{"id", "sha", "siblings": [{"rfilename", "size",
  "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}`` (what ``model_info(files_metadata=True)`` reads);
* ``HEAD``/``GET /{owner}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git blob id, or the
  sha256 for LFS files), ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Content-Length``, ``Accept-Ranges``,
  and ``Range: bytes=N-`` answered with 206 (or ignored: ``ignore_range``); a GET can be sent on to ``/cdn/...``
  with a 302 (``redirect``). No ``X-Xet-*`` header is ever sent, so Xet is never used.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) as the
Hub does. A file can be served corrupted (``served``: other bytes, same advertised hash and size) or have its
connection dropped once after ``drop_after`` body bytes. Every request is logged in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeFile:
    data: bytes
    lfs: bool
    served: bytes | None = None  # bytes actually sent instead of `data` (hash/size still advertised from `data`)
    drop_after: int | None = None  # first GET: close the connection after this many body bytes
    ignore_range: bool = False  # answer Range requests with 200 and the whole file, as some CDNs do
    redirect: bool = False  # GET answers 302 to /cdn/<same path>, as the Hub sends LFS files to its CDN

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_id(self.data)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None = None


@dataclass
class FakeHub:
    repos: dict[str, dict[str, FakeFile]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)

    def add(self, repo: str, path: str, data: bytes, *, lfs: bool | None = None) -> FakeFile:
        if lfs is None:
            lfs = path.endswith((".safetensors", ".bin", ".model"))
        f = FakeFile(data, lfs)
        self.repos.setdefault(repo, {})[path] = f
        self.commits.setdefault(repo, hashlib.sha1(repo.encode()).hexdigest())
        return f

    def resolve_requests(self, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if "/resolve/" in r.path and (method is None or r.method == method)]

    # ------------------------------------------------------------------------------------- server

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that goes away mid-body (Ctrl-C during a download) is expected: no traceback on stderr,
        # where it would land in the output of the CLI under test.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10  # a stalled client cannot keep a server thread forever

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, code: int, headers: dict[str, str], body: bytes = b"", *, head: bool = False) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self.close_connection = True

    def _error(self, code: int, error_code: str, message: str, *, head: bool, extra: dict[str, str] | None = None
               ) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(code, {"X-Error-Code": error_code, "X-Error-Message": message,
                          "Content-Type": "application/json", **(extra or {})}, body, head=head)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, *, head: bool) -> None:
        hub = self.hub
        path = urlsplit(self.path).path
        hub.requests.append(Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
        parts = [unquote(p) for p in path.split("/")[1:]]
        cdn = parts[:1] == ["cdn"]
        if cdn:
            parts = parts[1:]

        if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
            repo = "/".join(parts[2:4])
            rev = parts[5] if len(parts) == 6 and parts[4] == "revision" else "main"
            if self._repo_errors(repo, rev, head=head):
                return
            files = hub.repos[repo]
            siblings = []
            for name, f in files.items():
                sib: dict[str, object] = {"rfilename": name}
                if f.lfs:
                    sib.update(size=len(f.data), blobId=git_blob_id(f.pointer),
                               lfs={"sha256": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)})
                else:
                    sib.update(size=len(f.data), blobId=git_blob_id(f.data))
                siblings.append(sib)
            body = json.dumps({"id": repo, "sha": hub.commits[repo], "private": False, "siblings": siblings}).encode()
            self._send(200, {"Content-Type": "application/json"}, body, head=head)
            return

        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if self._repo_errors(repo, rev, head=head):
                return
            commit = hub.commits[repo]
            f = hub.repos[repo].get(name)
            if f is None:
                self._error(404, "EntryNotFound", f"{name} does not exist", head=head,
                            extra={"X-Repo-Commit": commit})
                return
            if f.redirect and not cdn and not head:
                self._send(302, {"Location": f"{hub.url}/cdn{path}", "X-Repo-Commit": commit})
                return
            body = f.served if f.served is not None else f.data
            headers = {"X-Repo-Commit": commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if f.lfs:
                headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data))})
            start = 0
            rng = self.headers.get("Range")
            if rng and not head and not f.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            chunk = body[start:]
            if head:
                self._send(200, {**headers, "Content-Length": str(len(body))}, head=True)
                return
            if f.drop_after is not None:
                cut, f.drop_after = f.drop_after, None
                self.send_response(206 if start else 200)
                for k, v in {**headers, "Content-Length": str(len(chunk))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self._send(206 if start else 200, headers, chunk)
            return

        self._error(404, "NotFound", "unknown endpoint", head=head)

    def _repo_errors(self, repo: str, rev: str, *, head: bool) -> bool:
        hub = self.hub
        if repo in hub.gated:
            self._error(403, "GatedRepo", f"access to {repo} is restricted", head=head)
            return True
        if repo not in hub.repos:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return True
        if rev not in ("main", hub.commits[repo]):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            return True
        return False
