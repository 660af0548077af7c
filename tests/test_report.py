"""`omnireid report`: numbers against brute force, rank lists against a direct ranking, the saved-features
path, CLI errors, and the page in a real (headless Chromium) browser."""
from __future__ import annotations

import html.parser
import os
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from browser_helpers import Chromium, find_chromium  # noqa: E402

from omnireid.cli.main import main as cli_main  # noqa: E402
from omnireid.report import ReportInput, load_features, save_features  # noqa: E402


@pytest.fixture(scope="module")
def report_dir(synthetic_root, tmp_path_factory) -> str:
    """The report of an (untrained) tiny model on the tiny synthetic test set, made through the CLI."""
    from conftest import tiny_reid_cfg

    root = tmp_path_factory.mktemp("report")
    config = root / "config.yaml"
    config.write_text(tiny_reid_cfg(synthetic_root, str(root / "run")).dump())
    out = str(root / "report")
    assert cli_main(["report", "--config-file", str(config), "MODEL.DEVICE", "cpu", "--output", out, "--top-k", "5"]) == 0
    return out


def brute_force(data: ReportInput) -> dict:
    """Cosine ranking per query with junk (same id and camera) dropped; Rank-1 and mAP by definition."""
    nq = data.meta["num_query"]
    f = data.features / np.linalg.norm(data.features, axis=1, keepdims=True)
    dist = 1 - f[:nq].astype(np.float64) @ f[nq:].astype(np.float64).T
    pids, cams = data.field("targets"), data.field("camids")
    q_pids, g_pids, q_cams, g_cams = pids[:nq], pids[nq:], cams[:nq], cams[nq:]
    orders, ranks1, aps = [], [], []
    for i in range(nq):
        order = [j for j in np.argsort(dist[i], kind="stable") if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        orders.append([(int(g_pids[j]), int(g_cams[j]), float(dist[i, j])) for j in order])
        hits = [g_pids[j] == q_pids[i] for j in order]
        if not any(hits):
            continue
        ranks1.append(hits[0])
        positions = np.flatnonzero(hits)
        aps.append(np.mean([(n + 1) / (p + 1) for n, p in enumerate(positions)]))
    return {"Rank-1": 100 * np.mean(ranks1), "mAP": 100 * np.mean(aps), "orders": orders}


class RankListParser(html.parser.HTMLParser):
    """query index -> [(id, camera, distance, marked correct)] from the page's rank lists."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[int, list] = {}
        self._query: int | None = None
        self._in_hit = False
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "ranklist" in attrs.get("class", "").split():
            self._query = int(attrs["id"].rsplit("-q", 1)[1])
            self.lists[self._query] = []
        elif tag == "figure" and "hit" in attrs.get("class", "").split():
            self._in_hit, self._text = True, ""
            self._match = "match" in attrs["class"].split()

    def handle_data(self, data):
        if self._in_hit:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "figure" and self._in_hit:
            self._in_hit = False
            m = re.search(r"([✓✗]) (\d+)\. d=([\d.]+)id (-?\d+) · cam (-?\d+)", self._text)
            mark, _, dist, pid, cam = m.groups()
            assert (mark == "✓") == self._match
            self.lists[self._query].append((int(pid), int(cam), float(dist), self._match))


def test_metrics_and_rank_lists_equal_brute_force(report_dir):
    data = load_features(os.path.join(report_dir, "features_Market1501.npz"))
    assert data.protocol == "reid" and data.meta["num_query"] == 16 and data.features.shape[0] == 16 + 137
    page = open(os.path.join(report_dir, "index.html"), encoding="utf-8").read()
    expected = brute_force(data)
    header = re.search(r'<table class="metrics"><thead><tr>(.*?)</tr>', page).group(1)
    row = re.search(r'<table class="metrics">.*?<tbody><tr>(.*?)</tr>', page).group(1)
    cells = dict(zip(re.findall(r"<th>(.*?)</th>", header), re.findall(r"<td>(.*?)</td>", row)))
    assert float(cells["Rank-1"]) == pytest.approx(expected["Rank-1"], abs=0.006)
    assert float(cells["mAP"]) == pytest.approx(expected["mAP"], abs=0.006)
    parser = RankListParser()
    parser.feed(page)
    assert len(parser.lists) == 16  # every query fits under --max-queries 100
    nq = data.meta["num_query"]
    pids = data.field("targets")
    for q, hits in parser.lists.items():
        want = expected["orders"][q][:5]
        assert [(p, c) for p, c, _, _ in hits] == [(p, c) for p, c, _ in want]
        assert np.allclose([d for _, _, d, _ in hits], [d for _, _, d in want], atol=1.5e-3)
        assert [m for *_, m in hits] == [p == pids[q] for p, _, _ in want]
    assert nq == 16
    for anchor in ("metrics", "cmc", "roc", "distances", "cameras", "worst", "ranklists"):
        assert f'id="Market1501-{anchor}"' in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch when opened


def test_report_from_saved_features_is_the_same_page(report_dir, tmp_path):
    out = str(tmp_path / "again")
    assert cli_main(["report", "--features", os.path.join(report_dir, "features_Market1501.npz"), "--output", out,
                     "--top-k", "5"]) == 0

    def body(path):
        return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d", "", open(path, encoding="utf-8").read())

    assert body(os.path.join(out, "index.html")) == body(os.path.join(report_dir, "index.html"))


def test_features_file_round_trip(tmp_path):
    items = [{"img_path": f"/x/{i}.jpg", "targets": i % 3, "camids": i % 2, "score": i / 2} for i in range(6)]
    data = ReportInput("toy", "reid", np.arange(18, dtype=np.float32).reshape(6, 3), items, {"num_query": 2},
                       "euclidean")
    save_features(data, str(tmp_path / "f.npz"))
    back = load_features(str(tmp_path / "f.npz"))
    assert (back.name, back.protocol, back.meta, back.metric) == ("toy", "reid", {"num_query": 2}, "euclidean")
    assert back.items == items and np.array_equal(back.features, data.features)


def test_report_cli_errors_are_one_line_exit_2(report_dir, tmp_path, capsys):
    not_features = tmp_path / "other.npz"
    np.savez(not_features, features=np.zeros((2, 2)))
    odd = tmp_path / "odd.npz"
    save_features(ReportInput("odd", "made-up", np.ones((3, 2)), [{"img_path": "a"}] * 3), str(odd))
    cases = [
        (["report", "--features", str(tmp_path / "missing.npz")], "no such file"),
        (["report"], "give either --config-file"),
        (["report", "--features", str(not_features)], "not a report features file"),
        (["report", "--features", str(odd)], "no report for protocol 'made-up'; registered: attributes, reid, retrieval, verification"),
        (["report", "--features", str(odd), "--top-k", "0"], "top_k must be >= 1"),
    ]
    for argv, message in cases:
        assert cli_main(argv + ["--output", str(tmp_path / "out")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    browser = Chromium(executable, str(tmp_path_factory.mktemp("chromium-profile")))
    yield browser
    browser.close()


def test_the_console_check_catches_errors(chromium, tmp_path):
    """The browser test below would notice a broken page: a script error and a console.error are reported."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('bad'); undefinedFunction();</script></body></html>")
    page = chromium.open(broken.as_uri())
    problems = page.problems()
    assert any("console.error" in p for p in problems) and any("undefinedFunction" in p for p in problems)


def test_report_renders_in_headless_chromium(chromium, report_dir, tmp_path):
    page = chromium.open("file://" + os.path.abspath(os.path.join(report_dir, "index.html")))
    assert page.problems() == []
    assert all(u.startswith(("file:", "data:")) for u in page.requested_urls())  # no network
    assert page.evaluate("document.querySelectorAll('.ranklist').length") == 16
    assert page.evaluate("Array.from(document.querySelectorAll('.ranklist')).every("
                         "r => r.querySelectorAll('.hit').length === 5 && r.querySelector('.query img'))")
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("document.querySelectorAll('img.plot').length") == 4  # CMC, ROC, distances, cameras
    assert page.evaluate("document.querySelector('.shown').textContent") == "16 of 16 queries shown"
    cameras = load_features(os.path.join(report_dir, "features_Market1501.npz")).field("camids")[:16]
    shown = page.evaluate("""(() => {
        const s = document.querySelector('select[data-filter=camera]');
        s.value = '1'; s.dispatchEvent(new Event('change'));
        return Array.from(document.querySelectorAll('.ranklist')).filter(r => r.style.display !== 'none')
            .map(r => r.dataset.camera);
    })()""")
    assert shown == ["1"] * int((cameras == 1).sum())
    failures = page.evaluate("""(() => {
        document.querySelector('select[data-filter=camera]').value = '';
        const s = document.querySelector('select[data-filter=outcome]');
        s.value = 'failure'; s.dispatchEvent(new Event('change'));
        return Array.from(document.querySelectorAll('.ranklist')).filter(r => r.style.display !== 'none')
            .map(r => r.querySelector('.hit').classList.contains('nonmatch'));
    })()""")
    assert failures and all(failures)
    assert page.problems() == []
    shot = tmp_path / "report.png"
    page.screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width >= 1000 and image.height > 2000
        assert len(set(image.convert("L").resize((64, 256)).getdata())) > 20  # not a blank page


def test_retrieval_report_against_brute_force(tmp_path):
    """One set, every item a query against the others: Recall@1 and rank lists by a direct loop."""
    from serve_helpers import write_images

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 5)
    centres = rng.standard_normal((4, 8))
    features = (centres[labels] + 0.9 * rng.standard_normal((20, 8))).astype(np.float32)
    paths = write_images(str(tmp_path / "images"), 20)
    data = ReportInput("Shop", "retrieval", features, [{"img_path": p, "targets": int(y)} for p, y in zip(paths, labels)])
    save_features(data, str(tmp_path / "f.npz"))
    out = tmp_path / "report"
    assert cli_main(["report", "--features", str(tmp_path / "f.npz"), "--output", str(out), "--top-k", "4"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    dist = 1 - f.astype(np.float64) @ f.astype(np.float64).T
    orders = [[j for j in np.argsort(dist[i], kind="stable") if j != i] for i in range(20)]
    recall1 = 100 * np.mean([labels[o[0]] == labels[i] for i, o in enumerate(orders)])
    header = re.search(r'<table class="metrics"><thead><tr>(.*?)</tr>', page).group(1)
    row = re.search(r'<table class="metrics">.*?<tbody><tr>(.*?)</tr>', page).group(1)
    cells = dict(zip(re.findall(r"<th>(.*?)</th>", header), re.findall(r"<td>(.*?)</td>", row)))
    assert float(cells["Recall@1"]) == pytest.approx(recall1, abs=0.006)
    assert {"R-Precision", "MAP@R"} <= set(cells)
    assert 'id="Shop-class-breakdown"' in page and "Per class" in page and 'data-filter="class"' in page
    lists = dict(re.findall(r'<div class="ranklist" id="Shop-q(\d+)" data-class="\d+" data-outcome="\w+">(.*?)</div>',
                            page))
    assert len(lists) == 20
    for q, block in lists.items():
        shown = [int(c) for c in re.findall(r"<br>class (\d+)</figcaption></figure>", block)]
        want = orders[int(q)][:4]
        assert shown == [int(labels[j]) for j in want]
        ds = [float(d) for d in re.findall(r"d=([\d.]+)<br>class", block)]
        assert np.allclose(ds, dist[int(q)][want], atol=1.5e-3)


def _cells(page: str, css_class: str) -> list[dict[str, str]]:
    """Rows of the table of class ``css_class`` as {header: cell text}."""
    block = re.search(rf'<table class="{css_class}"><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody>', page, re.S)
    header = re.findall(r"<th>(.*?)</th>", block.group(1))
    return [dict(zip(header, re.findall(r"<td>(.*?)</td>", row))) for row in re.findall(r"<tr>(.*?)</tr>", block.group(2))]


def _verification_input(tmp_path):
    """40 images of 10 identities, 60 pairs (30 same, 30 different) in a verification test set."""
    from serve_helpers import write_images

    rng = np.random.default_rng(7)
    identity = np.repeat(np.arange(10), 4)
    features = (rng.standard_normal((10, 6))[identity] + 0.8 * rng.standard_normal((40, 6))).astype(np.float32)
    same = [(4 * k + a, 4 * k + b) for k in range(10) for a, b in ((0, 1), (2, 3), (1, 2))]
    different = [(int(i), int(j)) for i, j in rng.integers(0, 40, (200, 2)) if identity[i] != identity[j]][:30]
    pairs = np.asarray(same + different)
    issame = np.asarray([True] * 30 + [False] * 30)
    paths = write_images(str(tmp_path / "faces"), 40)
    data = ReportInput("lfw", "verification", features, [{"img_path": p} for p in paths],
                       meta={"pairs": pairs, "issame": issame}, metric="euclidean")
    return data, pairs, issame


def test_verification_report_hardest_pairs_and_folds_against_brute_force(tmp_path):
    from omnireid.tasks.face.verification import evaluate_verification

    data, pairs, issame = _verification_input(tmp_path)
    save_features(data, str(tmp_path / "f.npz"))  # numpy pairs in the metadata are saved as JSON lists
    out = tmp_path / "report"
    assert cli_main(["report", "--features", str(tmp_path / "f.npz"), "--output", str(out), "--worst", "5"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    f = data.features.astype(np.float64) / np.linalg.norm(data.features, axis=1, keepdims=True)
    dist = np.array([((f[i] - f[j]) ** 2).sum() for i, j in pairs])
    metrics = evaluate_verification(dist, issame).metrics()
    row = _cells(page, "metrics")[0]
    assert float(row["Accuracy"]) == pytest.approx(metrics["Accuracy"], abs=0.006)
    assert float(row["TAR@FAR=0.001"]) == pytest.approx(metrics["TAR@FAR=0.001"], abs=0.006)
    assert (row["pairs"], row["same"], row["different"]) == ("60", "30", "30")
    folds = _cells(page, "folds")
    assert len(folds) == 11 and [r["pairs"] for r in folds[:10]] == ["6"] * 10
    held_out = [float(r["held-out accuracy (%)"]) for r in folds[:10]]
    assert np.mean(held_out) == pytest.approx(metrics["Accuracy"], abs=0.01)
    threshold = metrics["Threshold"]
    hard = re.findall(r'<table class="hard-pairs">.*?</table>', page, re.S)
    assert len(hard) == 2
    accepts = [(int(r["pair"][1:]), float(r["distance"]), r[f"at threshold {threshold:.4f}"])
               for r in _cells(hard[0], "hard-pairs")]
    want = sorted(np.flatnonzero(~issame), key=lambda k: dist[k])[:5]  # closest different-identity pairs
    assert [k for k, _, _ in accepts] == want
    assert all(d == pytest.approx(dist[k], abs=1e-4) for k, d, _ in accepts)
    assert all(v == ("false accept" if dist[k] < threshold else "correct") for k, _, v in accepts)
    rejects = [int(r["pair"][1:]) for r in _cells(hard[1], "hard-pairs")]
    assert rejects == sorted(np.flatnonzero(issame), key=lambda k: -dist[k])[:5]
    assert hard[0].count("<img") == 10  # both images of every pair
    assert 'id="lfw-roc"' in page and 'id="lfw-distances"' in page


def _attribute_input(tmp_path):
    from serve_helpers import write_images

    rng = np.random.default_rng(5)
    n = 30
    labels = (rng.random((n, 3)) < [0.5, 0.3, 0.0]).astype(np.float32)  # "umbrella" has no positive
    mask = np.ones((n, 3), dtype=np.float32)
    mask[:4, 1] = 0  # unknown labels
    groups = rng.integers(-1, 3, (n, 1))
    binary = np.clip(labels * [0.7, 0.2, 0.0] + rng.random((n, 3)) * [0.4, 0.9, 0.6], 0, 1)
    group_scores = rng.dirichlet(np.ones(3), n)
    scores = np.concatenate([binary, group_scores], 1).astype(np.float32)
    paths = write_images(str(tmp_path / "people"), n)
    items = [{"img_path": p, "attributes": labels[i], "attribute_mask": mask[i], "attribute_groups": groups[i]}
             for i, p in enumerate(paths)]
    meta = {"attribute_names": ["hat", "bag", "umbrella"], "attribute_groups": {"age": ["young", "adult", "old"]},
            "attribute_threshold": 0.6}
    return ReportInput("PA", "attributes", np.zeros((n, 2)), items, meta=meta, outputs={"attributes": scores}), scores


def test_attributes_report_per_attribute_table_against_counts(tmp_path):
    data, scores = _attribute_input(tmp_path)
    save_features(data, str(tmp_path / "a.npz"))
    out = tmp_path / "report"
    assert cli_main(["report", "--features", str(tmp_path / "a.npz"), "--output", str(out), "--top-k", "4"]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    labels, mask = data.field("attributes"), data.field("attribute_mask") > 0
    rows = {r["attribute"]: r for r in _cells(page, "per-attribute")}
    expected_ma = {}
    for j, name in enumerate(["hat", "bag", "umbrella"]):
        known = mask[:, j]
        pred, gt = scores[known, j] > 0.6, labels[known, j] > 0.5
        tp, tn, p, n = (pred & gt).sum(), (~pred & ~gt).sum(), gt.sum(), (~gt).sum()
        tpr, tnr = (tp / p if p else 0.0), (tn / n if n else 0.0)
        expected_ma[name] = 50 * (tpr + tnr)
        assert float(rows[name]["TPR"]) == pytest.approx(100 * tpr, abs=0.006)
        assert float(rows[name]["TNR"]) == pytest.approx(100 * tnr, abs=0.006)
        assert float(rows[name]["mA"]) == pytest.approx(expected_ma[name], abs=0.006)
        assert float(rows[name]["positive ratio"]) == pytest.approx(100 * p / known.sum(), abs=0.006)
    groups = data.field("attribute_groups")[:, 0]
    known = groups >= 0
    assert float(rows["age"]["accuracy"]) == pytest.approx(100 * (scores[known, 3:].argmax(1) == groups[known]).mean(),
                                                           abs=0.006)
    order = [r["attribute"] for r in _cells(page, "per-attribute")]
    binary_order = [a for a in order if a != "age"]
    assert binary_order == sorted(expected_ma, key=lambda a: expected_ma[a])  # worst first
    assert float(_cells(page, "metrics")[0]["mA"]) == pytest.approx(np.mean(list(expected_ma.values())), abs=0.006)
    assert "no positive test label (TPR counted as 0): umbrella" in page
    worst = binary_order[0]
    j = ["hat", "bag", "umbrella"].index(worst)
    wrong = [i for i in range(30) if mask[i, j] and (scores[i, j] > 0.6) != (labels[i, j] > 0.5)]
    block = re.search(rf'<div class="mistakes">.*?<b>{worst}</b>(.*?)</div>', page, re.S).group(1)
    shown = [int(i) for i in re.findall(r"<figcaption>#(\d+) p=", block)]
    assert shown == sorted(wrong, key=lambda i: -abs(scores[i, j] - 0.6))[:4]
    assert "p &gt; 0.6" in page or "p > 0.6" in page  # the run's threshold, from the metadata


def test_attributes_report_from_a_model_keeps_its_attribute_output(synthetic_root, tmp_path):
    """``omnireid report --config-file``: an attribute model's test set keeps its ``attributes`` output."""
    from omnireid.engine import setup_cfg

    cfg = setup_cfg("configs/Demo/synthetic_attributes_R18.yml", [
        "DATASETS.ROOT", synthetic_root, "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_ATTRIBUTES", "6",
        "MODEL.HEADS.ATTRIBUTE_GROUPS", "[12, 5, 13, 12, 3, 4]", "INPUT.SIZE_TEST", "[32, 16]",
        "MODEL.LOSSES.BCE.POS_RATIO", "[0.3, 0.3, 0.5, 0.2, 0.3, 0.3]",
        "DATALOADER.NUM_WORKERS", "0", "TEST.THRES", "0.55", "OUTPUT_DIR", str(tmp_path / "run"),
        "DATASETS.NAMES", "['SyntheticAttributes']", "DATASETS.TESTS", "['SyntheticAttributes']"])
    (tmp_path / "config.yaml").write_text(cfg.dump())
    out = tmp_path / "report"
    assert cli_main(["report", "--config-file", str(tmp_path / "config.yaml"), "--output", str(out)]) == 0
    data = load_features(str(out / "features_SyntheticAttributes.npz"))
    assert data.protocol == "attributes" and data.outputs["attributes"].shape == (len(data.items), 6 + 49)
    assert data.meta["attribute_threshold"] == 0.55
    page = (out / "index.html").read_text(encoding="utf-8")
    assert len(_cells(page, "per-attribute")) == 12 and 'id="SyntheticAttributes-worst"' in page


def test_verification_and_attributes_pages_render_in_headless_chromium(chromium, tmp_path):
    from omnireid.report import build_report

    verification, _, _ = _verification_input(tmp_path)
    attributes, _ = _attribute_input(tmp_path)
    (tmp_path / "index.html").write_text(build_report([verification, attributes]), encoding="utf-8")
    page = chromium.open((tmp_path / "index.html").as_uri())
    assert page.problems() == []
    assert all(u.startswith(("file:", "data:")) for u in page.requested_urls())
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    for anchor in ("lfw-metrics", "lfw-folds", "lfw-roc", "lfw-false-accepts", "lfw-false-rejects", "PA-metrics",
                   "PA-per-attribute", "PA-worst"):
        assert page.evaluate(f"document.getElementById('{anchor}') !== null"), anchor
    assert page.evaluate("document.querySelectorAll('table.hard-pairs tbody tr').length") == 40  # 20 + 20 pairs
    assert page.evaluate("document.querySelectorAll('.mistakes').length") == 3
    page.screenshot(str(tmp_path / "protocols.png"))
    assert (tmp_path / "protocols.png").stat().st_size > 10_000
