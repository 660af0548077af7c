"""A gallery index on disk: feature vectors, string ids and metadata, searched with faiss.

Scores are cosine similarities: vectors are L2-normalised and searched by inner product.
Index kinds (``INDEX_KINDS``): ``flat`` (exact, for galleries up to a few hundred thousand items),
``ivf`` (inverted lists, ``nlist`` / ``nprobe``) and ``hnsw`` (graph, ``m`` / ``ef_search``) for
large ones; an approximate index records the recall it measured at build time in its manifest.

Layout of an index folder::

    index.json             manifest: format, generation g, kind, dimension, model and preprocessing, recall
    gen-<g>/vectors.npy    (N, D) float32 rows (rows of removed items stay until the next rebuild)
    gen-<g>/items.jsonl    one {"id", "meta"} per row; "id" is null for a removed row
    gen-<g>/faiss.index    the faiss index over the rows (approximate kinds; flat is rebuilt on load)
    journal-<g>.log        changes acknowledged since snapshot g (see :mod:`omnireid.serve.journal`)
    LOCK                   held (flock) by the one process that may change the index

Durability: a change made with ``durable=True`` is in the fsync'ed journal before the call returns.
:meth:`GalleryIndex.compact` writes snapshot ``g+1`` in a temporary folder, renames it into place,
then atomically replaces ``index.json``; only then are snapshot ``g`` and its journal deleted. A
crash at any point leaves either the old manifest with its snapshot and journal, or the new one.
"""
from __future__ import annotations

import abc
import base64
import fcntl
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from omnireid.utils.errors import UserError
from omnireid.utils.file_io import atomic_write_text
from omnireid.utils.registry import Registry

from .journal import Journal, read_journal

logger = logging.getLogger(__name__)

FORMAT = "omnireid-gallery-index"
VERSION = 1
MANIFEST = "index.json"

# name -> IndexKind subclass
INDEX_KINDS = Registry("index kind")


class GalleryIndexError(UserError, ValueError):
    """A user-facing problem with an index folder or an operation on it; the message names it."""


def _import_faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise GalleryIndexError("the gallery index needs faiss: pip install 'omnireid[serve]'") from exc
    return faiss


# ------------------------------------------------------------------------------------------------
# index kinds
# ------------------------------------------------------------------------------------------------
class IndexKind(abc.ABC):
    """How one kind of faiss index is built, searched, saved and compacted."""

    name: ClassVar[str]
    exact: ClassVar[bool] = False
    # compaction rebuilds the faiss index without removed rows once they exceed this fraction
    rebuild_fraction: ClassVar[float] = 0.0

    def __init__(self, **params: Any) -> None:
        defaults = self.default_params()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise GalleryIndexError(f"index kind {self.name!r} has no parameter(s) {unknown}; "
                                    f"known: {sorted(defaults)}")
        self.params = {**defaults, **{k: v for k, v in params.items() if v is not None}}

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def build(self, vectors: np.ndarray, dim: int):
        """A faiss index (trained when the kind needs it) holding ``vectors`` as rows 0..N-1."""

    def search_params(self, selector):
        faiss = _import_faiss()
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def save(self, index, path: str) -> None:
        _import_faiss().write_index(index, path)

    def load(self, path: str, vectors: np.ndarray, dim: int):
        return _import_faiss().read_index(path)

    def rebuild(self, index, vectors: np.ndarray, dim: int):
        """The index over ``vectors`` only (after removed rows were dropped); keeps any training."""
        return self.build(vectors, dim)


def numpy_search(index, queries: np.ndarray, k: int, params):
    """``index.search(queries, k, params=params)`` on numpy arrays, whoever imported ``faiss.contrib.torch_utils``.

    That module (imported by pytorch-metric-learning, for one) replaces ``Index.search`` process-wide with a
    torch-aware wrapper that has no ``params``; faiss keeps the original as ``search_numpy``.
    """
    return getattr(index, "search_numpy", index.search)(queries, k, params=params)


@INDEX_KINDS.register("flat")
class FlatKind(IndexKind):
    """Exact inner-product search: every query is compared with every row."""

    name = "flat"
    exact = True

    def build(self, vectors, dim):
        index = _import_faiss().IndexFlatIP(dim)
        if len(vectors):
            index.add(vectors)
        return index

    def save(self, index, path):  # the vectors are the index: nothing more to store
        pass

    def load(self, path, vectors, dim):
        return self.build(vectors, dim)


@INDEX_KINDS.register("ivf")
class IvfKind(IndexKind):
    """Inverted lists over k-means cells; ``nprobe`` cells are searched (recall vs speed)."""

    name = "ivf"

    @classmethod
    def default_params(cls):
        return {"nlist": None, "nprobe": 32, "train_size": 100_000, "seed": 0}

    def build(self, vectors, dim):
        faiss = _import_faiss()
        n = len(vectors)
        nlist = int(self.params["nlist"] or max(1, min(65536, round(4 * np.sqrt(max(n, 1))))))
        self.params["nlist"] = nlist
        if n < nlist:
            raise GalleryIndexError(f"an ivf index with nlist={nlist} needs at least {nlist} vectors to train, "
                                    f"got {n}; use --kind flat for a gallery this small")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(int(self.params["seed"]))
        size = int(self.params["train_size"])
        sample = vectors if n <= size else vectors[np.sort(rng.choice(n, size, replace=False))]
        index.train(np.ascontiguousarray(sample))
        index.add(vectors)
        return index

    def search_params(self, selector):
        faiss = _import_faiss()
        kwargs = {"nprobe": int(self.params["nprobe"])}
        if selector is not None:
            kwargs["sel"] = selector
        return faiss.SearchParametersIVF(**kwargs)

    def rebuild(self, index, vectors, dim):
        index.reset()  # empties the lists, keeps the trained cells
        if len(vectors):
            index.add(vectors)
        return index


@INDEX_KINDS.register("hnsw")
class HnswKind(IndexKind):
    """A navigable small-world graph; removed rows are skipped at search until a rebuild."""

    name = "hnsw"
    rebuild_fraction = 0.2  # rebuilding a graph is expensive: tolerate some tombstones

    @classmethod
    def default_params(cls):
        return {"m": 32, "ef_construction": 80, "ef_search": 128}

    def build(self, vectors, dim):
        faiss = _import_faiss()
        index = faiss.IndexHNSWFlat(dim, int(self.params["m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.params["ef_construction"])
        if len(vectors):
            index.add(vectors)
        return index

    def search_params(self, selector):
        faiss = _import_faiss()
        kwargs = {"efSearch": int(self.params["ef_search"])}
        if selector is not None:
            kwargs["sel"] = selector
        return faiss.SearchParametersHNSW(**kwargs)


# ------------------------------------------------------------------------------------------------
# the index
# ------------------------------------------------------------------------------------------------
@dataclass
class SearchHit:
    id: str
    score: float
    meta: dict = field(default_factory=dict)


class _Rows:
    """Row storage that grows by doubling, so one-at-a-time additions stay O(1) amortised."""

    def __init__(self, vectors: np.ndarray, dim: int) -> None:
        self.dim = dim
        self.count = len(vectors)
        self._buffer = np.empty((max(16, self.count), dim), dtype=np.float32)
        self._buffer[: self.count] = vectors

    @property
    def array(self) -> np.ndarray:
        return self._buffer[: self.count]

    def append(self, vectors: np.ndarray) -> None:
        need = self.count + len(vectors)
        if need > len(self._buffer):
            grown = np.empty((max(need, 2 * len(self._buffer)), self.dim), dtype=np.float32)
            grown[: self.count] = self.array
            self._buffer = grown
        self._buffer[self.count:need] = vectors
        self.count = need


def normalize(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """L2-normalised float32 rows; zero or non-finite rows are an error (they have no direction)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise GalleryIndexError(f"{what} must be 2-D (N, D), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise GalleryIndexError(f"{what}: row(s) {np.flatnonzero(bad)[:5].tolist()} are zero or not finite")
    return np.ascontiguousarray(v / norms)


def _gen_dir(root: str, gen: int) -> str:
    return os.path.join(root, f"gen-{gen:06d}")


def _journal_path(root: str, gen: int) -> str:
    return os.path.join(root, f"journal-{gen:06d}.log")


_GENERATED = re.compile(r"^(gen-(\d{6})|journal-(\d{6})\.log|\.tmp-gen-\d{6}.*)$")


class GalleryIndex:
    """Search, add and remove on an index folder (see the module docstring); thread safe."""

    def __init__(self, root: str, manifest: dict, kind: IndexKind, rows: _Rows, ids: list[str | None],
                 metas: list[dict], faiss_index, writable: bool, lock_file=None) -> None:
        self.root = root
        self.manifest = manifest
        self.kind = kind
        self.dim = int(manifest["dim"])
        self._rows = rows
        self._ids = ids
        self._metas = metas
        self._row_of = {item_id: row for row, item_id in enumerate(ids) if item_id is not None}
        self._faiss = faiss_index
        self._lock = threading.RLock()
        self._selector = None
        self._selector_removed = np.zeros(0, dtype=np.int64)  # the selector references this array's memory
        self._selector_dirty = True
        self.unsaved = 0  # changes (replayed, journaled or not) since the snapshot on disk
        self.writable = writable
        self._lock_file = lock_file
        self._journal: Journal | None = None

    # -------------------------------------------------------------- create / open
    @classmethod
    def create(cls, root: str, vectors: np.ndarray, ids: Sequence[str], metas: Sequence[dict] | None = None,
               kind: str = "flat", params: dict | None = None, info: dict | None = None,
               overwrite: bool = False) -> "GalleryIndex":
        """Build an index over ``vectors`` and write it as a new generation of ``root``.

        ``info`` (model, preprocessing, ...) is stored in the manifest. An existing index is only
        replaced with ``overwrite`` (atomically: the old one stays usable until the new one is complete).
        """
        vectors = normalize(vectors, "gallery features")
        ids = [str(i) for i in ids]
        metas = [dict(m) for m in metas] if metas is not None else [{} for _ in ids]
        if not (len(vectors) == len(ids) == len(metas)):
            raise GalleryIndexError(f"{len(vectors)} vectors, {len(ids)} ids and {len(metas)} metadata entries")
        _check_unique(ids)
        manifest_path = os.path.join(root, MANIFEST)
        if os.path.exists(manifest_path) and not overwrite:
            raise GalleryIndexError(f"{root} already holds an index; pass --overwrite to replace it")
        try:
            index_kind = INDEX_KINDS.get(kind)(**(params or {}))
        except KeyError as exc:
            raise GalleryIndexError(exc.args[0]) from None
        os.makedirs(root, exist_ok=True)
        lock_file = _acquire_lock(root)
        try:
            old_gen = int(_read_manifest(root)["generation"]) if os.path.exists(manifest_path) else 0
            dim = vectors.shape[1]
            faiss_index = index_kind.build(vectors, dim)
            manifest = {"format": FORMAT, "version": VERSION, "generation": old_gen, "kind": kind,
                        "params": index_kind.params, "dim": dim, **(info or {})}
            if not index_kind.exact and len(vectors) > 1:
                manifest["recall"] = measure_recall(faiss_index, index_kind, vectors)
            index = cls(root, manifest, index_kind, _Rows(vectors, dim), list(ids), metas, faiss_index, True,
                        lock_file)
            index.compact()
        except BaseException:
            _release_lock(lock_file)
            raise
        return index

    @classmethod
    def open(cls, root: str, writable: bool = True) -> "GalleryIndex":
        """Load the current snapshot and replay its journal. ``writable`` takes the folder's lock
        (one writer at a time), cuts a torn journal tail and removes leftovers of interrupted writes."""
        if not os.path.isfile(os.path.join(root, MANIFEST)):
            raise GalleryIndexError(f"no gallery index in {root} ({MANIFEST} is missing); "
                                    "create one with `omnireid index build`")
        lock_file = _acquire_lock(root) if writable else None
        try:
            manifest = _read_manifest(root)
            gen = int(manifest["generation"])
            try:
                kind = INDEX_KINDS.get(manifest["kind"])(**manifest.get("params", {}))
            except KeyError as exc:
                raise GalleryIndexError(f"{root}/{MANIFEST}: {exc.args[0]}") from None
            folder = _gen_dir(root, gen)
            try:
                vectors = np.load(os.path.join(folder, "vectors.npy"), allow_pickle=False)
                with open(os.path.join(folder, "items.jsonl"), encoding="utf-8") as f:
                    items = [json.loads(line) for line in f if line.strip()]
            except (OSError, ValueError) as exc:
                raise GalleryIndexError(f"{root}: snapshot {gen} is unreadable: {exc}") from None
            if len(items) != len(vectors) or vectors.ndim != 2 or vectors.shape[1] != int(manifest["dim"]):
                raise GalleryIndexError(f"{root}: snapshot {gen} is inconsistent ({len(vectors)} vectors of shape "
                                        f"{vectors.shape}, {len(items)} items, dim {manifest['dim']})")
            faiss_index = kind.load(os.path.join(folder, "faiss.index"), vectors, vectors.shape[1])
            index = cls(root, manifest, kind, _Rows(vectors, vectors.shape[1]), [it["id"] for it in items],
                        [it.get("meta", {}) for it in items], faiss_index, writable, lock_file)
            index._replay(_journal_path(root, gen))
            if writable:
                _remove_leftovers(root, gen)
                index._journal = Journal(_journal_path(root, gen))
        except BaseException:
            _release_lock(lock_file)
            raise
        return index

    # -------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._row_of

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [i for i in self._ids if i is not None]

    def get(self, item_id: str) -> dict | None:
        with self._lock:
            row = self._row_of.get(item_id)
            return None if row is None else dict(self._metas[row])

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """The ``k`` most similar live items of each query row, best first."""
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        q = normalize(queries, "query features")
        if q.shape[1] != self.dim:
            raise GalleryIndexError(f"query features are {q.shape[1]}-d but the index holds {self.dim}-d vectors")
        with self._lock:
            live = len(self._row_of)
            if live == 0:
                return [[] for _ in range(len(q))]
            fetch = min(k, live)
            scores, rows = numpy_search(self._faiss, q, fetch, self.kind.search_params(self._removed_selector()))
            return [[SearchHit(self._ids[r], float(s), dict(self._metas[r]))
                     for s, r in zip(score_row, row_ids) if r >= 0 and self._ids[r] is not None]
                    for score_row, row_ids in zip(scores, rows)]

    def _removed_selector(self):
        if self._selector_dirty:
            removed = np.array([row for row, i in enumerate(self._ids) if i is None], dtype=np.int64)
            faiss = _import_faiss()
            self._selector = (faiss.IDSelectorNot(faiss.IDSelectorBatch(removed)) if removed.size else None)
            self._selector_removed = removed
            self._selector_dirty = False
        return self._selector

    # -------------------------------------------------------------- changes
    def add(self, ids: Sequence[str], vectors: np.ndarray, metas: Sequence[dict] | None = None,
            durable: bool = True) -> None:
        """Add items; with ``durable`` they are in the fsync'ed journal when this returns.
        An id already in the index is an error (nothing is added)."""
        self._check_writable()
        ids = [str(i) for i in ids]
        vectors = normalize(vectors, "gallery features")
        metas = [dict(m) for m in metas] if metas is not None else [{} for _ in ids]
        if not (len(vectors) == len(ids) == len(metas)):
            raise GalleryIndexError(f"{len(vectors)} vectors, {len(ids)} ids and {len(metas)} metadata entries")
        if vectors.shape[1] != self.dim:
            raise GalleryIndexError(f"features are {vectors.shape[1]}-d but the index holds {self.dim}-d vectors")
        _check_unique(ids)
        with self._lock:
            present = [i for i in ids if i in self._row_of]
            if present:
                raise GalleryIndexError(f"id(s) already in the index: {present[:5]}")
            if durable:
                self._journal.append([_add_record(i, v, m) for i, v, m in zip(ids, vectors, metas)])
            self._apply_add(ids, vectors, metas)

    def remove(self, ids: Sequence[str], durable: bool = True) -> None:
        """Remove items; an unknown id is an error (nothing is removed)."""
        self._check_writable()
        ids = [str(i) for i in ids]
        with self._lock:
            missing = [i for i in ids if i not in self._row_of]
            if missing:
                raise GalleryIndexError(f"id(s) not in the index: {missing[:5]}")
            if durable:
                self._journal.append([json.dumps({"op": "remove", "id": i}).encode() for i in ids])
            self._apply_remove(ids)

    def _apply_add(self, ids: list[str], vectors: np.ndarray, metas: list[dict]) -> None:
        start = self._rows.count
        self._rows.append(vectors)
        self._faiss.add(vectors)
        self._ids.extend(ids)
        self._metas.extend(metas)
        self._row_of.update({item_id: start + n for n, item_id in enumerate(ids)})
        self.unsaved += len(ids)

    def _apply_remove(self, ids: list[str]) -> None:
        for item_id in ids:
            row = self._row_of.pop(item_id)
            self._ids[row] = None
            self._metas[row] = {}
        self._selector_dirty = True
        self.unsaved += len(ids)

    def _replay(self, path: str) -> None:
        payloads, _ = read_journal(path)
        for payload in payloads:
            record = json.loads(payload)
            if record["op"] == "add":
                vector = np.frombuffer(base64.b64decode(record["vector"]), dtype=np.float32)[None, :]
                self._apply_add([record["id"]], vector, [record.get("meta", {})])
            else:
                self._apply_remove([record["id"]])
        if payloads:
            logger.info("%s: replayed %d journal record(s)", self.root, len(payloads))

    # -------------------------------------------------------------- persistence
    def compact(self, force_rebuild: bool = False) -> None:
        """Write the current state as the next generation (atomically) and start an empty journal.

        Removed rows are dropped (and the faiss index rebuilt) when the kind's ``rebuild_fraction``
        of rows is exceeded, or with ``force_rebuild``.
        """
        self._check_writable()
        with self._lock:
            removed = self._rows.count - len(self._row_of)
            if removed and (force_rebuild or removed > self.kind.rebuild_fraction * self._rows.count):
                keep = np.array([row for row, i in enumerate(self._ids) if i is not None], dtype=np.int64)
                vectors = self._rows.array[keep]
                self._faiss = self.kind.rebuild(self._faiss, vectors, self.dim)
                self._rows = _Rows(vectors, self.dim)
                self._ids = [self._ids[r] for r in keep]
                self._metas = [self._metas[r] for r in keep]
                self._row_of = {item_id: row for row, item_id in enumerate(self._ids)}
                self._selector_dirty = True
            old_gen = int(self.manifest["generation"])
            new_gen = old_gen + 1
            tmp = os.path.join(self.root, f".tmp-gen-{new_gen:06d}")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            _write_synced(os.path.join(tmp, "vectors.npy"), lambda f: np.save(f, self._rows.array))
            lines = "".join(json.dumps({"id": i, "meta": m}, sort_keys=True) + "\n"
                            for i, m in zip(self._ids, self._metas))
            _write_synced(os.path.join(tmp, "items.jsonl"), lambda f: f.write(lines.encode()))
            self.kind.save(self._faiss, os.path.join(tmp, "faiss.index"))
            _fsync_path(tmp)
            os.replace(tmp, _gen_dir(self.root, new_gen))
            _fsync_path(self.root)
            manifest = {**self.manifest, "generation": new_gen, "count": len(self._row_of),
                        "params": self.kind.params}
            atomic_write_text(os.path.join(self.root, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
            _fsync_path(self.root)
            self.manifest = manifest
            if self._journal is not None:
                self._journal.close()
            self._journal = Journal(_journal_path(self.root, new_gen))
            self.unsaved = 0
            _remove_leftovers(self.root, new_gen)

    def close(self, compact: bool = True) -> None:
        """Write unsaved changes as a new snapshot (``compact``) and release the lock."""
        with self._lock:
            if self.writable and compact and self.unsaved:
                self.compact()
            if self._journal is not None:
                self._journal.close()
            _release_lock(self._lock_file)
            self._lock_file = None
            self.writable = False

    def _check_writable(self) -> None:
        if not self.writable:
            raise GalleryIndexError(f"{self.root} was opened read-only")

    def __enter__(self) -> "GalleryIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close(compact=exc[0] is None)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def measure_recall(faiss_index, kind: IndexKind, vectors: np.ndarray, k: int = 10, queries: int = 1000,
                   seed: int = 0) -> dict:
    """Recall@k of an approximate index against exact search, queried with sampled gallery rows
    (each query's own row excluded from both lists): what "recall" in the manifest means."""
    faiss = _import_faiss()
    n = len(vectors)
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(n, min(queries, n), replace=False))
    q = vectors[picks]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(q, k + 1)
    _, found = numpy_search(faiss_index, q, k + 1, kind.search_params(None))
    hits = 0
    for row, t, f in zip(picks, truth, found):
        t_set = [x for x in t if x != row][:k]
        f_set = {x for x in f if x != row and x >= 0}
        hits += len(f_set.intersection(t_set))
    return {"k": int(k), "recall": hits / (k * len(picks)), "queries": int(len(picks)),
            "method": "sampled gallery rows as queries, own row excluded, vs exact inner-product search"}


def _add_record(item_id: str, vector: np.ndarray, meta: dict) -> bytes:
    return json.dumps({"op": "add", "id": item_id, "meta": meta,
                       "vector": base64.b64encode(np.ascontiguousarray(vector, dtype=np.float32)).decode()}).encode()


def _check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    dup = sorted({i for i in ids if i in seen or seen.add(i)})
    if dup:
        raise GalleryIndexError(f"duplicate id(s): {dup[:5]}")


def _read_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise GalleryIndexError(f"{path} is unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise GalleryIndexError(f"{path} is not an omnireid gallery index manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise GalleryIndexError(f"{path} has format version {manifest['version']}; this omnireid reads "
                                f"up to {VERSION}")
    return manifest


def read_manifest(root: str) -> dict:
    """The manifest of the index in ``root`` (model, preprocessing, kind, counts, recall)."""
    if not os.path.isfile(os.path.join(root, MANIFEST)):
        raise GalleryIndexError(f"no gallery index in {root} ({MANIFEST} is missing)")
    return _read_manifest(root)


def _acquire_lock(root: str):
    f = open(os.path.join(root, "LOCK"), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise GalleryIndexError(f"the index {root} is in use by another process (a running `omnireid serve`?)") \
            from None
    return f


def _release_lock(lock_file) -> None:
    if lock_file is not None and not lock_file.closed:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        lock_file.close()


def _write_synced(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(root: str, current_gen: int) -> None:
    """Delete snapshots, journals and temporary folders other than generation ``current_gen``'s."""
    for name in os.listdir(root):
        match = _GENERATED.match(name)
        if not match:
            continue
        gen = match.group(2) or match.group(3)
        if gen is not None and int(gen) == current_gen:
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
