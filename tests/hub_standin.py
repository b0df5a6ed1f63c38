"""A stand-in for the Hugging Face Hub's file endpoint on 127.0.0.1, enough for ``huggingface_hub.hf_hub_download``.

It answers ``HEAD`` and ``GET /{owner}/{name}/resolve/{revision}/{filename}`` with the headers huggingface_hub 2.4
reads (``file_download.py`` ``get_hf_file_metadata`` / ``_get_metadata_or_catch_error``; ``utils/_http.py``
``hf_raise_for_status``): ``X-Repo-Commit`` (the commit the revision resolves to), ``ETag`` (the git blob sha1),
and for LFS files (``*.safetensors`` here, as on the Hub) ``X-Linked-Etag`` = the content's sha256 and
``X-Linked-Size``. Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
No ``X-Xet-*`` headers, so huggingface_hub takes its plain HTTP path.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.parse
from dataclasses import dataclass, field


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    revisions: dict[str, str] = field(default_factory=dict)  # branch / tag → commit hash
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit → {filename: content}


class StandInHub:
    """``publish(repo, filename, data, revision)`` files, then point ``HF_ENDPOINT`` at ``url``."""

    def __init__(self):
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.corrupt: set[str] = set()  # filenames whose GET body differs from the advertised sha256
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def publish(self, repo_id: str, filename: str, data: bytes, revision: str = "main") -> str:
        """Add ``filename`` in a new commit on ``revision`` (carrying the revision's other files); return the hash."""
        repo = self.repos.setdefault(repo_id, _Repo())
        previous = repo.files.get(repo.revisions.get(revision, ""), {})
        commit = hashlib.sha1(f"{repo_id}{revision}{len(repo.files)}".encode()).hexdigest()
        repo.files[commit] = {**previous, filename: data}
        repo.revisions[revision] = commit
        return commit

    def _lookup(self, path: str) -> tuple[int, dict[str, str], bytes]:
        repo_id, _, rest = urllib.parse.urlsplit(path).path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        revision, filename = urllib.parse.unquote(revision), urllib.parse.unquote(filename)
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        commit = repo.revisions.get(revision, revision if revision in repo.files else None)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        data = repo.files[commit].get(filename)
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"', "Content-Length": str(len(data))}
        if filename.endswith(".safetensors"):  # an LFS file: the Hub sends the pointer's oid and size
            headers |= {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))}
        if filename in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return 200, headers, data

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                status, headers, data = hub._lookup(self.path)
                self.send_response(status)
                headers.setdefault("Content-Length", "0")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body and status == 200:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

        return Handler
