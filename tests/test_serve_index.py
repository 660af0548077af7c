"""The gallery index: search equals brute force, changes persist, crashes mid-write lose nothing acknowledged."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("faiss")

from omnireid.serve import journal as journal_mod  # noqa: E402
from omnireid.serve.index import GalleryIndex, GalleryIndexError  # noqa: E402


def vectors(n=300, d=12, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def brute_force(gallery: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    scores = g.astype(np.float64) @ q.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def assert_same_results(hits, expected):
    assert [h.id for h in hits] == [e[0] for e in expected]
    assert np.allclose([h.score for h in hits], [e[1] for e in expected], atol=1e-5)


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf", {"nlist": 4, "nprobe": 4}), ("hnsw", {"ef_search": 400})])
def test_search_equals_brute_force_after_changes(tmp_path, kind, params):
    """ivf probing every cell and hnsw with a search breadth above the gallery size are exact."""
    g = vectors()
    ids = [f"item{i}" for i in range(len(g))]
    index = GalleryIndex.create(str(tmp_path / "idx"), g, ids, kind=kind, params=params)
    queries = vectors(5, seed=1)
    for q in queries:
        assert_same_results(index.search(q[None], 7)[0], brute_force(g, ids, q, 7))
    extra = vectors(20, seed=2)
    index.add([f"new{i}" for i in range(20)], extra, [{"n": i} for i in range(20)])
    index.remove(["item3", "new5", "item10"])
    live_ids = [i for i in ids + [f"new{i}" for i in range(20)] if i not in {"item3", "new5", "item10"}]
    live = np.concatenate([g, extra])[[(ids + [f"new{i}" for i in range(20)]).index(i) for i in live_ids]]
    for q in queries:
        assert_same_results(index.search(q[None], 10)[0], brute_force(live, live_ids, q, 10))
    assert index.get("new7") == {"n": 7} and index.get("item3") is None
    index.close()  # compacts: removed rows dropped (flat, ivf) or kept as tombstones (hnsw below 20%)
    reopened = GalleryIndex.open(str(tmp_path / "idx"), writable=False)
    assert len(reopened) == len(live_ids)
    for q in queries:
        assert_same_results(reopened.search(q[None], 10)[0], brute_force(live, live_ids, q, 10))


def test_approximate_index_records_its_recall(tmp_path):
    g = vectors(2000, d=16)
    index = GalleryIndex.create(str(tmp_path / "ivf"), g, [str(i) for i in range(len(g))], kind="ivf",
                                params={"nlist": 32, "nprobe": 4})
    recall = index.manifest["recall"]
    assert recall["k"] == 10 and recall["queries"] == 1000
    assert 0.3 < recall["recall"] < 1.0  # 4 of 32 cells on random data: clearly approximate, not useless
    with open(tmp_path / "ivf" / "index.json") as f:
        assert json.load(f)["recall"] == recall
    index.close()


def test_k_larger_than_gallery_and_empty_results(tmp_path):
    g = vectors(5)
    index = GalleryIndex.create(str(tmp_path / "idx"), g, list("abcde"))
    assert len(index.search(g[:1], 50)[0]) == 5
    index.remove(list("abcde"))
    assert index.search(g[:1], 3) == [[]]
    index.close()


def test_acknowledged_changes_survive_without_close(tmp_path):
    """What kill -9 leaves: a snapshot plus a journal, no compaction. Reopening replays the journal."""
    root = str(tmp_path / "idx")
    g = vectors(10)
    index = GalleryIndex.create(root, g, [str(i) for i in range(10)])
    index.add(["x"], vectors(1, seed=5), [{"camera": 2}])
    index.remove(["3"])
    # no close(): the process "dies" holding the lock; a new process gets a fresh lock on the file
    index._journal.close()
    index._lock_file.close()
    again = GalleryIndex.open(root)
    assert "x" in again and "3" not in again and again.get("x") == {"camera": 2}
    assert again.unsaved == 2
    assert again.search(vectors(1, seed=5), 1)[0][0].id == "x"
    again.close()


def test_torn_journal_tail_is_cut(tmp_path):
    root = str(tmp_path / "idx")
    index = GalleryIndex.create(root, vectors(10), [str(i) for i in range(10)])
    index.add(["kept"], vectors(1, seed=7))
    journal_path = index._journal.path
    index._journal.close()
    index._lock_file.close()
    complete = os.path.getsize(journal_path)
    record = journal_mod.encode_record(b'{"op": "remove", "id": "kept"}')
    with open(journal_path, "ab") as f:
        f.write(record[:-3])  # a crash in the middle of an append that was never acknowledged
    again = GalleryIndex.open(root)
    assert "kept" in again
    assert os.path.getsize(journal_path) == complete  # cut back to the last complete record
    again.add(["after"], vectors(1, seed=8))
    again._journal.close()
    again._lock_file.close()
    third = GalleryIndex.open(root)
    assert "kept" in third and "after" in third
    third.close()


def test_crash_during_compaction_leaves_the_previous_index(tmp_path, monkeypatch):
    root = str(tmp_path / "idx")
    index = GalleryIndex.create(root, vectors(10), [str(i) for i in range(10)])
    index.add(["acked"], vectors(1, seed=3))
    real_replace = os.replace

    def crash(src, dst):
        if os.path.basename(dst) == "index.json":
            raise OSError("simulated crash before the manifest switch")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        index.compact()
    monkeypatch.setattr(os, "replace", real_replace)
    index._journal.close()
    index._lock_file.close()
    again = GalleryIndex.open(root)
    assert "acked" in again and len(again) == 11
    assert again.manifest["generation"] == 1
    assert sorted(n for n in os.listdir(root) if n.startswith(("gen-", "journal-", ".tmp"))) == \
        ["gen-000001", "journal-000001.log"]  # the half-written generation 2 was removed
    again.close()


def test_one_writer_at_a_time(tmp_path):
    root = str(tmp_path / "idx")
    index = GalleryIndex.create(root, vectors(4), list("abcd"))
    with pytest.raises(GalleryIndexError, match="in use by another process"):
        GalleryIndex.open(root)
    reader = GalleryIndex.open(root, writable=False)
    assert len(reader) == 4
    with pytest.raises(GalleryIndexError, match="read-only"):
        reader.add(["e"], vectors(1))
    index.close()
    GalleryIndex.open(root).close()


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(GalleryIndexError, match="index.json is missing"):
        GalleryIndex.open(str(tmp_path / "nothing"))
    with pytest.raises(GalleryIndexError, match="duplicate id"):
        GalleryIndex.create(str(tmp_path / "a"), vectors(2), ["x", "x"])
    with pytest.raises(GalleryIndexError, match="zero or not finite"):
        GalleryIndex.create(str(tmp_path / "b"), np.zeros((2, 3), np.float32), ["x", "y"])
    with pytest.raises(GalleryIndexError, match="Unknown index kind 'ivff'"):
        GalleryIndex.create(str(tmp_path / "c"), vectors(2), ["x", "y"], kind="ivff")
    with pytest.raises(GalleryIndexError, match="needs at least"):
        GalleryIndex.create(str(tmp_path / "d"), vectors(3), ["x", "y", "z"], kind="ivf", params={"nlist": 8})
    index = GalleryIndex.create(str(tmp_path / "e"), vectors(3), ["x", "y", "z"])
    with pytest.raises(GalleryIndexError, match="already in the index"):
        index.add(["y"], vectors(1))
    with pytest.raises(GalleryIndexError, match="not in the index"):
        index.remove(["nope"])
    with pytest.raises(GalleryIndexError, match="3-d but the index holds 12-d"):
        index.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(GalleryIndexError, match="already holds an index"):
        GalleryIndex.create(str(tmp_path / "e"), vectors(3), ["x", "y", "z"])
    index.close()


def test_search_after_faiss_torch_utils_patched_index_search(tmp_path):
    """``import faiss.contrib.torch_utils`` (pytorch-metric-learning does it) swaps ``Index.search`` for one
    without ``params`` in the whole process; searching with removed rows and nprobe must still work.
    Run in a subprocess: the patch cannot be undone in this one."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import faiss.contrib.torch_utils  # noqa: F401
        import numpy as np
        from omnireid.serve.index import GalleryIndex
        g = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        index = GalleryIndex.create({str(tmp_path / "idx")!r}, g, [f"i{{n}}" for n in range(64)], kind="ivf",
                                    params={{"nlist": 4, "nprobe": 4}})
        index.remove(["i0"])
        hits = index.search(g[:1], k=3)[0]
        assert [h.id for h in hits][0] != "i0" and len(hits) == 3, hits
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
