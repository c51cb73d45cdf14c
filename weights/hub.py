"""Downloads from the Hugging Face Hub through huggingface_hub's cache, failing fast when offline.

The endpoint (`HF_ENDPOINT`), the cache (`HF_HUB_CACHE` / `HF_HOME`) and offline mode
(`HF_HUB_OFFLINE`) are read from the environment at each call, so they behave as huggingface_hub
users expect. Without network, a cached file is used; with neither network nor cache the error
comes within seconds (one TCP probe) instead of after the client's retries.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from weights.errors import NotAllowed, NotFound, Offline

# DIAMOND's released Atari 100k agents. The revision is the repository's commit as recorded by a
# public provenance audit (last modified 2024-10-21, after the files moved to atari_100k/models/ on
# 2024-10-10); the Hub could not be reached from here to re-check it.
DIAMOND_REPO = "eloialonso/diamond"
DIAMOND_REVISION = "5d4abca9af6ab1b3ab1c6fc228cacb7281130f7f"
PROBE_TIMEOUT_S = 3.0
ETAG_TIMEOUT_S = 10.0


def diamond_filename(game: str) -> str:
    """Path of a game's agent checkpoint inside the DIAMOND Hub repository."""
    return f"atari_100k/models/{game}.pt"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, as its environment variables say now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return hf_constants.HF_HUB_OFFLINE
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_url(repo_id: str, filename: str, revision: str | None) -> str:
    return f"hf://{repo_id}/{filename}" + (f"@{revision}" if revision else "")


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached copy of a Hub file at `revision` (branch, tag or commit), or None. No network."""
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()), revision=revision)
    return Path(found) if isinstance(found, str) else None


def endpoint_reachable(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the endpoint (or the proxy in use) opens within `timeout`,
    else the reason it did not."""
    parsed = urlparse(url or endpoint())
    proxy = os.environ.get("HTTPS_PROXY" if parsed.scheme == "https" else "HTTP_PROXY") or \
        os.environ.get("https_proxy" if parsed.scheme == "https" else "http_proxy") or os.environ.get("ALL_PROXY")
    target = urlparse(proxy) if proxy and not _no_proxy(parsed.hostname) else parsed
    host = target.hostname
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return f"bad endpoint URL {url or endpoint()!r}"
    result = [f"no answer from {host}:{port} within {timeout:g} s"]

    def probe() -> None:  # in a thread: a hanging DNS lookup is not bounded by the socket timeout
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = None
        except OSError as e:
            result[0] = f"cannot connect to {host}:{port} ({e.strerror or e})"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0]


def _no_proxy(host: str | None) -> bool:
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    names = [n.strip().lstrip(".") for n in no_proxy.split(",") if n.strip()]
    return bool(host) and any(n == "*" or host == n or host.endswith("." + n) for n in names)


def download(repo_id: str, filename: str, revision: str | None = None, token: str | bool | None = None,
             hint: str | None = None, force: bool = False) -> Path:
    """Path to `filename` of Hub repo `repo_id` at `revision`, downloaded into the cache if needed
    (with huggingface_hub's progress bar).

    Offline (HF_HUB_OFFLINE=1, or the endpoint does not answer a TCP probe) the cached copy is used.
    Raises ConnectionError when offline without a cached copy (message says what is missing and
    `hint`, how to get it), FileNotFoundError for a missing repository/file/revision.
    """
    url = hub_url(repo_id, filename, revision)
    cache = hub_cache_dir()
    get_it = hint or f"connect to the network and run again (the file is then cached in {cache})"
    why_offline = "HF_HUB_OFFLINE is set" if offline_mode() else None
    if why_offline is None and (force or revision is None or not _is_commit(revision)
                                or cached_file(repo_id, filename, revision) is None):
        why_offline = endpoint_reachable()  # a pinned, cached commit needs no network at all
    if why_offline is not None:
        if force:
            raise Offline(f"{url}: cannot download again: {why_offline}")
        found = cached_file(repo_id, filename, revision)
        if found is None:
            raise Offline(f"{url} is not in the Hugging Face cache ({cache}) and the Hub cannot be "
                                  f"reached: {why_offline} (endpoint {endpoint()}); {get_it}")
        return found
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache), endpoint=endpoint(),
                               token=token, etag_timeout=ETAG_TIMEOUT_S, force_download=force)
    except GatedRepoError:
        raise NotAllowed(f"{url}: the repository is gated; accept its terms on the Hub and log in "
                              "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise NotFound(f"{url}: no repository {repo_id} on {endpoint()} (if it is private, log in "
                                "with `hf auth login`, set HF_TOKEN or pass a token)") from None
    except RevisionNotFoundError:
        raise NotFound(f"{url}: repository {repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError: test it first)
        raise Offline(f"{url} could not be downloaded and is not cached in {cache} "
                              f"({_cause(e)}); {get_it}") from None
    except RemoteEntryNotFoundError:
        raise NotFound(f"{url}: repository {repo_id} has no file {filename!r}"
                                + (f" at revision {revision}" if revision else "")) from None
    except HfHubHTTPError as e:
        raise Offline(f"{url}: the Hub answered {_status(e)}; try again later") from None
    except OSError as e:  # network failures while streaming, disk full...
        raise Offline(f"{url}: download failed ({e})") from None
    return Path(path)


def converted_path(source_file: Path, suffix: str = ".safetensors") -> Path:
    """Where the dreamarcade-format copy of a downloaded checkpoint is cached: beside the
    huggingface_hub cache, keyed by the blob the download resolved to (its content hash), so a
    checkpoint is converted once whatever revision or path led to it."""
    blob = Path(os.path.realpath(source_file))
    return hub_cache_dir() / "dreamarcade-converted" / f"{blob.name}{suffix}"


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _status(error: HfHubHTTPError) -> str:
    response = getattr(error, "response", None)
    return f"HTTP {response.status_code}" if response is not None else str(error).splitlines()[0]


def _cause(error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def log(message: str) -> None:
    print(f"dreamarcade: {message}", file=sys.stderr)
