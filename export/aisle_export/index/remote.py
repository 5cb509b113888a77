"""Embed a catalog through a running Aisle deployment (``aisle index --server URL``), resumably.

Why: offline indexing runs the item tower on one machine; a catalog of millions of items is
better embedded by the fleet that already serves the towers. Every request goes to the
``embed_item`` ensemble (tokenizer → item_encoder, the same graphs ``aisle index`` runs locally)
through the SDK, ``concurrency`` requests of ≤ 64 texts in flight, so throughput grows with the
replicas behind the URL. One gRPC (HTTP/2) connection sticks to one pod behind a ClusterIP
Service, so ``url`` may name several ``host:port`` (comma-separated) and every host is resolved
to all its IPv4 addresses — a headless Service (``aisle-triton-pods``) gives one per ready pod —
with one connection each, requests spread round-robin.

Resumable: the texts are cut into chunks of ``chunk_size``; each finished chunk is written to
``<checkpoint>/chunk_<i>.npy`` atomically (temporary file + rename), and ``manifest.json`` names the
catalog (SHA-256 of the texts), the chunk size and the dimension. A restarted run — after Ctrl-C,
a crash or SIGKILL — skips every chunk already on disk. A checkpoint of another catalog or chunk
size is discarded, never mixed in. The result is assembled into one ``embeddings.npy`` (memory-
mapped, so a 10M-item catalog is never held twice in RAM).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aisle import RecClient

MANIFEST = "manifest.json"
ASSEMBLED = "embeddings.npy"
REQUEST_ROWS = 64  # the embed ensembles' max_batch_size
FORMAT = 1


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _chunk_path(checkpoint: Path, index: int) -> Path:
    return checkpoint / f"chunk_{index:06d}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _open_checkpoint(checkpoint: Path, texts: Sequence[str], chunk_size: int) -> dict:
    """The checkpoint's manifest; a fresh one (old chunks removed) if it belongs to other work."""
    wanted = {"format": FORMAT, "count": len(texts), "chunk_size": chunk_size, "texts_sha256": texts_digest(texts)}
    path = checkpoint / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            return manifest
        print(f"[index --server] {checkpoint} holds another catalog or chunk size; starting over", flush=True)
        shutil.rmtree(checkpoint)
    checkpoint.mkdir(parents=True, exist_ok=True)
    manifest = {**wanted, "dim": None}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _done_chunks(checkpoint: Path, chunks: int, sizes: list[int], dim: int | None) -> set[int]:
    done = set()
    for i in range(chunks):
        path = _chunk_path(checkpoint, i)
        if not path.is_file():
            continue
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError):
            path.unlink()  # unreadable: recompute
            continue
        if shape[0] == sizes[i] and (dim is None or shape[1] == dim):
            done.add(i)
        else:
            path.unlink()
    return done


def endpoints(url: str) -> list[str]:
    """``host:port[,host:port...]`` → one ``ip:port`` per IPv4 address (the names kept if unresolvable)."""

    out: list[str] = []
    for part in (p.strip() for p in url.split(",") if p.strip()):
        host, _, port = part.rpartition(":")
        try:
            addresses = sorted(
                {info[4][0] for info in socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)}
            )
        except (OSError, ValueError):
            addresses = []
        out.extend(f"{address}:{port}" for address in addresses) if addresses else out.append(part)
    return list(dict.fromkeys(out))


def embed_remote(
    texts: Sequence[str],
    url: str,
    checkpoint: Path,
    *,
    chunk_size: int = 4096,
    concurrency: int = 8,
    timeout_s: float = 120.0,
    progress: bool = True,
    client_options: dict | None = None,
) -> np.ndarray:
    """Item-tower embeddings of ``texts`` from the deployment at ``url`` (gRPC ``host:port``).

    Returns a float32 (N, d) array memory-mapped from ``<checkpoint>/embeddings.npy``.
    """

    if not texts:
        raise ValueError("no texts to embed")
    if chunk_size < 1 or concurrency < 1:
        raise ValueError("chunk_size and concurrency must be >= 1")
    checkpoint = Path(checkpoint)
    manifest = _open_checkpoint(checkpoint, texts, chunk_size)
    n = len(texts)
    chunks = -(-n // chunk_size)
    sizes = [min(chunk_size, n - i * chunk_size) for i in range(chunks)]
    done = _done_chunks(checkpoint, chunks, sizes, manifest.get("dim"))
    if done:
        print(f"[index --server] resuming: {len(done)}/{chunks} chunks already embedded in {checkpoint}", flush=True)
    todo = [i for i in range(chunks) if i not in done]
    options = {
        "timeout_s": timeout_s,
        "embed_cache_size": 0,
        "wait_ready_s": min(timeout_s, 60.0),
        **(client_options or {}),
    }
    if not todo:
        return _assemble(checkpoint, chunks, sizes, int(manifest["dim"]))
    targets = endpoints(url)
    print(f"[index --server] {chunks - len(done)} chunks to embed through {', '.join(targets)}", flush=True)
    clients = [RecClient(target, **options) for target in targets]
    turn = itertools.count()
    with (
        contextlib.ExitStack() as stack,
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
        tqdm(
            total=n,
            initial=sum(sizes[i] for i in done),
            desc="embedding items (remote)",
            unit="item",
            disable=not progress,
        ) as bar,
    ):
        for client in clients:
            stack.enter_context(client)

        def embed(batch: list[str]) -> np.ndarray:
            vectors = clients[next(turn) % len(clients)].embed(batch, tower="item", cache=False)
            bar.update(len(batch))
            return vectors

        # Keep the pool busy across chunk boundaries: the next chunk's requests are queued before
        # this chunk's results are saved.
        pending: list[tuple[int, list[concurrent.futures.Future]]] = []

        def submit(i: int) -> None:
            start = i * chunk_size
            part = list(texts[start : start + sizes[i]])
            order = np.argsort([-len(t) for t in part], kind="stable")  # similar lengths share padding
            batches = [order[s : s + REQUEST_ROWS] for s in range(0, len(part), REQUEST_ROWS)]
            futures = [pool.submit(embed, [part[r] for r in rows]) for rows in batches]
            pending.append((i, list(zip(batches, futures))))

        queue = list(todo)
        while queue and len(pending) < 2:
            submit(queue.pop(0))
        while pending:
            i, parts = pending.pop(0)
            if queue:
                submit(queue.pop(0))
            out = None
            for rows, future in parts:
                vectors = future.result()
                if out is None:
                    out = np.zeros((sizes[i], vectors.shape[1]), dtype=np.float32)
                out[rows] = vectors
            assert out is not None
            if manifest.get("dim") is None:
                manifest["dim"] = int(out.shape[1])
                (checkpoint / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _save_atomic(_chunk_path(checkpoint, i), out)
    return _assemble(checkpoint, chunks, sizes, int(manifest["dim"]))


def _assemble(checkpoint: Path, chunks: int, sizes: list[int], dim: int) -> np.ndarray:
    path = checkpoint / ASSEMBLED
    tmp = checkpoint / (ASSEMBLED + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(sum(sizes), dim))
    start = 0
    for i in range(chunks):
        out[start : start + sizes[i]] = np.load(_chunk_path(checkpoint, i), allow_pickle=False)
        start += sizes[i]
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r", allow_pickle=False)
