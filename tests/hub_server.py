"""A local HTTP server speaking the parts of the Hugging Face Hub protocol that dreamarcade uses.

The real huggingface_hub client talks to it through `HF_ENDPOINT=server.url`:

    HEAD/GET /{repo}/resolve/{revision}/{path}      file download: X-Repo-Commit, ETag, Content-Length,
                                                   Range; X-Error-Code RepoNotFound / RevisionNotFound /
                                                   EntryNotFound as the Hub sends them
    GET  /api/models/{repo}[/revision/{rev}]       model info (sha, siblings)
    POST /api/repos/create                         create_repo (409 when it exists)
    POST /api/validate-yaml                        model-card metadata check
    POST /api/models/{repo}/preupload/{rev}        upload modes: every file "regular" (content inline)
    POST /api/models/{repo}/commit/{rev}           NDJSON commit (header, file, deletedFile)

Repositories live in memory as commits of {path: bytes}. Reads of public repositories need no
token; private repositories and all writes need `Authorization: Bearer {token}`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

_LFS_SUFFIXES = (".pt", ".safetensors", ".gif", ".bin")


class HubServer:
    def __init__(self, token: str = "hf_test_write_token") -> None:
        self.token = token
        self.repos: dict[str, dict] = {}  # repo_id -> {"private", "branches": {name: sha}, "commits": {sha: files}}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._counter = 0

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- repository content ----------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> None:
        with self._lock:
            self.repos.setdefault(repo_id, {"private": private, "branches": {}, "commits": {}})

    def commit(self, repo_id: str, files: dict[str, bytes], deleted: tuple[str, ...] = (),
               branch: str = "main", sha: str | None = None, private: bool = False) -> str:
        """Add a commit on `branch` that adds/replaces `files`; `sha` forces the commit id."""
        self.create_repo(repo_id, private=private)
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo["branches"].get(branch)
            tree = dict(repo["commits"][parent]) if parent else {}
            tree.update(files)
            for path in deleted:
                tree.pop(path, None)
            self._counter += 1
            sha = sha or hashlib.sha1(f"{repo_id}{parent}{self._counter}".encode()).hexdigest()
            repo["commits"][sha] = tree
            repo["branches"][branch] = sha
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["branches"].get(revision, revision)]


def _etag(path: str, data: bytes) -> str:
    if path.endswith(_LFS_SUFFIXES):  # LFS files: sha256; regular git blobs: git sha1
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool = False, extra: dict | None = None):
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head)

    def _auth(self) -> str:
        """'ok', 'none' (no token sent) or 'bad' (a wrong token)."""
        value = self.headers.get("Authorization", "")
        if not value:
            return "none"
        return "ok" if value == f"Bearer {self.hub.token}" else "bad"

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _repo_for_read(self, repo_id: str, head: bool = False) -> dict | None:
        repo = self.hub.repos.get(repo_id)
        auth = self._auth()
        if auth == "bad":
            self._error(401, None, "Invalid credentials in Authorization header", head)
            return None
        if repo is None or (repo["private"] and auth != "ok"):
            self._error(401 if auth == "none" else 404, "RepoNotFound", "Repository not found", head)
            return None
        return repo

    # --- routes --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlparse(self.path).path
        self.hub.requests.append((method, path))
        parts = path.strip("/").split("/")
        head = method == "HEAD"
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), unquote(parts[3]), unquote("/".join(parts[4:])), head)
        if method == "GET" and parts[:2] == ["api", "models"] and len(parts) >= 4:
            revision = unquote(parts[5]) if len(parts) >= 6 and parts[4] == "revision" else "main"
            return self._model_info("/".join(parts[2:4]), revision)
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(self._body() or b"{}"))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if method == "POST" and parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, action, revision = "/".join(parts[2:4]), parts[4], unquote("/".join(parts[5:]))
            if action == "preupload":
                return self._preupload(repo_id, json.loads(self._body()))
            if action == "commit":
                return self._commit(repo_id, revision, self._body())
        self._body()
        self._error(404, None, f"no route for {method} {path}", head)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self._repo_for_read(repo_id, head)
        if repo is None:
            return
        sha = repo["branches"].get(revision, revision if revision in repo["commits"] else None)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        data = repo["commits"][sha].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", head, {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_etag(filename, data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if head:  # HEAD carries the size of the body it does not send
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            return self.end_headers()
        status, body = 200, data
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes="):
            start = int(range_header[len("bytes="):].split("-")[0] or 0)
            status, body = 206, data[start:]
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(status, body, headers)

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self._repo_for_read(repo_id)
        if repo is None:
            return
        sha = repo["branches"].get(revision, revision if revision in repo["commits"] else None)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"],
                         "siblings": [{"rfilename": name} for name in sorted(repo["commits"][sha])]})

    def _create_repo(self, payload: dict) -> None:
        if self._auth() != "ok":
            return self._error(401, None, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if repo_id in self.hub.repos:
            return self._error(409, None, "You already created this model repo",
                               extra={"Content-Type": "application/json"})
        private = payload.get("private") or payload.get("visibility") == "private"
        self.hub.create_repo(repo_id, private=bool(private))
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _preupload(self, repo_id: str, payload: dict) -> None:
        if self._auth() != "ok":
            return self._error(401, None, "Invalid credentials in Authorization header")
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                 for f in payload["files"]]
        self._json(200, {"files": files, "commitOid": self.hub.repos[repo_id]["branches"].get("main")})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        if self._auth() != "ok":
            return self._error(401, None, "Invalid credentials in Authorization header")
        if repo_id not in self.hub.repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        files, deleted = {}, []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif item["key"] != "header":
                return self._error(400, None, f"unsupported commit operation {item['key']}")
        sha = self.hub.commit(repo_id, files, tuple(deleted), branch=revision)
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}"})
