"""The search API through a test client: auth, bad input, limits, gallery round trip, brute-force equality,
micro-batching and the index CLI."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from serve_helpers import png_bytes  # noqa: E402

from omnireid.cli.main import main as cli_main  # noqa: E402
from omnireid.serve.app import ServeSettings, create_app  # noqa: E402
from omnireid.serve.batching import MicroBatcher  # noqa: E402
from omnireid.serve.encoder import ImageEncoder, decode_image  # noqa: E402
from omnireid.serve.index import GalleryIndex  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def encode_files(encoder: ImageEncoder, paths: list[str]) -> np.ndarray:
    batch = np.stack([encoder.prepare(decode_image(png_bytes(p), 10**8)) for p in paths])
    return encoder(batch)


@pytest.fixture
def service(serve_assets, tmp_path):
    """(client, encoder, index folder, gallery ids, gallery features) over a fresh index."""
    encoder = ImageEncoder.from_artifact(serve_assets["artifact"])
    paths = serve_assets["gallery"]
    ids = [os.path.basename(p) for p in paths]
    features = encode_files(encoder, paths)
    root = str(tmp_path / "index")
    index = GalleryIndex.create(root, features, ids, [{"path": p} for p in paths], info=encoder.describe())
    settings = ServeSettings(token=TOKEN, max_upload_bytes=200_000, max_image_pixels=500 * 500, compact_every=3)
    with TestClient(create_app(index, encoder, settings)) as client:
        yield client, encoder, root, ids, features


def brute_force(gallery: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[tuple[str, float]]:
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = g.astype(np.float64) @ (query / np.linalg.norm(query)).astype(np.float64)
    return [(ids[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]


def test_auth_is_required_everywhere_but_health(service, serve_assets):
    client, *_ = service
    image = png_bytes(serve_assets["gallery"][0])
    assert client.get("/health").json() == {"status": "ok", "gallery_size": 24}
    requests = [("post", "/search", {"files": {"image": image}}), ("post", "/gallery", {"files": {"image": image}}),
                ("delete", "/gallery/img000.png", {}), ("get", "/gallery/img000.png", {}),
                ("get", "/openapi.json", {}), ("get", "/docs", {})]
    for method, url, kwargs in requests:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
            response = getattr(client, method)(url, headers=headers, **kwargs)
            assert response.status_code == 401, (method, url, headers)
            assert response.json() == {"detail": "missing or wrong bearer token"}
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/search", headers=AUTH, files={"image": image}).status_code == 200
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/search", "/gallery", "/gallery/{item_id}", "/health"} <= set(schema["paths"])
    assert set(schema["paths"]["/search"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                                  "application/json"}
    assert "swagger" in client.get("/docs", headers=AUTH).text.lower()


def test_bad_images_and_fields_are_400_with_a_message(service, serve_assets, tmp_path):
    client, *_ = service
    good = png_bytes(serve_assets["gallery"][0])
    big = io.BytesIO()
    Image.new("RGB", (600, 600)).save(big, format="PNG")  # small file, too many pixels
    cases = {
        "not an image in a format": {"files": {"image": b"this is not an image"}},
        "image is empty": {"files": {"image": b""}},
        "not a readable image": {"files": {"image": good[: len(good) // 2]}},  # truncated PNG
        "the limit is 250000 pixels": {"files": {"image": big.getvalue()}},
        "needs a file field 'image'": {"data": {"k": "3"}, "files": {"other": good}},
        "'k' must be an integer": {"files": {"image": good}, "data": {"k": "many"}},
        "'k' must be between 1 and 1000": {"files": {"image": good}, "data": {"k": "0"}},
        "not valid base64": {"json": {"image": "@@@not base64@@@"}},
        "base64 string 'image'": {"json": {"picture": "abc"}},
        "not valid JSON": {"content": b"{oops", "headers": {"content-type": "application/json"}},
    }
    for message, kwargs in cases.items():
        headers = {**AUTH, **kwargs.pop("headers", {})}
        response = client.post("/search", headers=headers, **kwargs)
        assert response.status_code == 400, (message, response.text)
        assert message in response.json()["detail"], response.json()
        assert "Traceback" not in response.text
    response = client.post("/search", headers={**AUTH, "content-type": "text/plain"}, content=b"hello")
    assert response.status_code == 415
    response = client.post("/gallery", headers=AUTH, files={"image": good}, data={"id": "x", "metadata": "[1, 2]"})
    assert response.status_code == 400 and "JSON object" in response.json()["detail"]
    response = client.post("/gallery", headers=AUTH, files={"image": good})
    assert response.status_code == 400 and "'id'" in response.json()["detail"]


def test_oversize_uploads_are_413(service):
    client, *_ = service
    blob = os.urandom(300_000)
    response = client.post("/search", headers=AUTH, files={"image": blob})  # announced by Content-Length
    assert response.status_code == 413 and "larger than 200000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: counted while it streams in
        for _ in range(30):
            yield os.urandom(10_000)

    response = client.post("/search", headers={**AUTH, "content-type": "application/json"}, content=chunks())
    assert response.status_code == 413
    assert client.get("/health").status_code == 200  # the server is fine afterwards


def test_gallery_round_trip(service, serve_assets):
    client, encoder, root, ids, features = service
    new_image = png_bytes(serve_assets["extra"][0])
    response = client.post("/gallery", headers=AUTH, files={"image": new_image},
                           data={"id": "people/anna.png", "metadata": json.dumps({"camera": 4, "name": "Anna"})})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": "people/anna.png", "gallery_size": 25}
    hit = client.post("/search", headers=AUTH, files={"image": new_image}, data={"k": "1"}).json()["results"][0]
    assert hit["id"] == "people/anna.png" and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert hit["metadata"] == {"camera": 4, "name": "Anna"}
    assert client.get("/gallery/people/anna.png", headers=AUTH).json() == {
        "id": "people/anna.png", "metadata": {"camera": 4, "name": "Anna"}}
    again = client.post("/gallery", headers=AUTH, json={"id": "people/anna.png",
                                                         "image": base64.b64encode(new_image).decode()})
    assert again.status_code == 409
    assert client.delete("/gallery/people/anna.png", headers=AUTH).json() == {"id": "people/anna.png",
                                                                            "gallery_size": 24}
    results = client.post("/search", headers=AUTH, files={"image": new_image}).json()["results"]
    assert "people/anna.png" not in [r["id"] for r in results]
    assert client.delete("/gallery/people/anna.png", headers=AUTH).status_code == 404
    assert client.get("/gallery/people/anna.png", headers=AUTH).status_code == 404
    # adds as JSON/base64; the third change since the snapshot (compact_every=3) wrote a new one
    for i, path in enumerate(serve_assets["extra"][1:4]):
        body = {"id": f"b64-{i}", "image": base64.b64encode(png_bytes(path)).decode(), "metadata": {"i": i}}
        assert client.post("/gallery", headers=AUTH, json=body).status_code == 201
    with open(os.path.join(root, "index.json")) as f:
        manifest = json.load(f)
    assert manifest["generation"] == 2 and manifest["count"] == 25  # 24 + anna - anna + b64-0
    on_disk = GalleryIndex.open(root, writable=False)  # snapshot + journal, as a restart would see it
    assert {"b64-0", "b64-1", "b64-2"} <= set(on_disk.ids) and len(on_disk) == 27


def test_search_results_equal_brute_force(service, serve_assets):
    client, encoder, _, ids, features = service
    queries = serve_assets["extra"] + serve_assets["gallery"][:3]
    query_features = encode_files(encoder, queries)
    for path, feature in zip(queries, query_features):
        for k in (1, 5, 24):
            body = {"image": base64.b64encode(png_bytes(path)).decode(), "k": k}
            got = client.post("/search", headers=AUTH, json=body).json()
            expected = brute_force(features, ids, feature, k)
            assert got["k"] == k
            assert [r["id"] for r in got["results"]] == [e[0] for e in expected]
            assert np.allclose([r["score"] for r in got["results"]], [e[1] for e in expected], atol=1e-5)


def test_concurrent_requests_are_batched_and_correct(serve_assets, tmp_path):
    """Many requests at once through the ASGI app: each gets its own answer; the model saw batches > 1."""
    import httpx

    encoder = ImageEncoder.from_artifact(serve_assets["artifact"])
    paths = serve_assets["gallery"]
    features = encode_files(encoder, paths)
    ids = [os.path.basename(p) for p in paths]
    index = GalleryIndex.create(str(tmp_path / "index"), features, ids)
    app = create_app(index, encoder, ServeSettings(token=TOKEN, max_batch=8, max_wait_ms=200))

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                responses = await asyncio.gather(*[
                    client.post("/search", headers=AUTH, files={"image": png_bytes(p)}, data={"k": "1"})
                    for p in paths])
        return responses

    responses = asyncio.run(run())
    assert [r.json()["results"][0]["id"] for r in responses] == ids
    assert max(app.state.batcher.batch_sizes) > 1
    assert sum(size * n for size, n in app.state.batcher.batch_sizes.items()) == len(paths)


def test_micro_batcher_groups_waiting_requests():
    calls = []

    def model(batch):
        calls.append(len(batch))
        return batch.reshape(len(batch), -1) * 2

    async def run():
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=1000)
        await batcher.start()
        try:
            return await asyncio.gather(*[batcher.submit(np.full((2,), i, dtype=np.float32)) for i in range(10)])
        finally:
            await batcher.stop()

    outputs = asyncio.run(run())
    assert [o.tolist() for o in outputs] == [[2 * i, 2 * i] for i in range(10)]
    assert calls == [4, 4, 2]


def test_micro_batcher_hands_model_errors_to_every_request():
    def model(batch):
        raise RuntimeError("model exploded")

    async def run():
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*[batcher.submit(np.zeros(2)) for _ in range(3)], return_exceptions=True)
        finally:
            await batcher.stop()

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))


def test_index_cli_build_add_remove_info(serve_assets, tmp_path, capsys):
    folder = os.path.dirname(serve_assets["gallery"][0])
    out = str(tmp_path / "idx")
    metadata = tmp_path / "meta.csv"
    metadata.write_text("id,camera\nimg001.png,3\n")
    assert cli_main(["index", "build", "--artifact", serve_assets["artifact"], "--images", folder, "--output", out,
                     "--metadata", str(metadata)]) == 0
    assert "24 items, 16-d, kind flat" in capsys.readouterr().out
    index = GalleryIndex.open(out, writable=False)
    assert index.get("img001.png")["camera"] == "3"
    extra = os.path.dirname(serve_assets["extra"][0])
    assert cli_main(["index", "add", "--index", out, "--images", extra, "--prefix", "batch2/"]) == 0
    assert "30 items" in capsys.readouterr().out
    assert cli_main(["index", "remove", "--index", out, "batch2/new000.png", "img005.png"]) == 0
    assert cli_main(["index", "info", "--index", out]) == 0
    assert "28 items" in capsys.readouterr().out
    # the CLI's features equal the server's: an added image is found by its own picture
    encoder = ImageEncoder.from_artifact(serve_assets["artifact"])
    reopened = GalleryIndex.open(out, writable=False)
    hit = reopened.search(encode_files(encoder, serve_assets["extra"][1:2]), 1)[0][0]
    assert hit.id == "batch2/new001.png" and hit.score == pytest.approx(1.0, abs=1e-5)


def test_index_cli_errors_are_one_line_exit_2(serve_assets, tmp_path, capsys):
    folder = os.path.dirname(serve_assets["gallery"][0])
    bad_artifact = tmp_path / "broken.onnx"
    bad_artifact.write_bytes(b"not a model")
    out = str(tmp_path / "idx")
    cases = [
        (["index", "info", "--index", str(tmp_path / "missing")], "index.json is missing"),
        (["index", "build", "--artifact", str(bad_artifact), "--images", folder, "--output", out], "cannot be loaded"),
        (["index", "build", "--artifact", str(tmp_path / "nope.onnx"), "--images", folder, "--output", out],
         "no such file"),
        (["index", "build", "--artifact", serve_assets["artifact"], "--images", folder, "--output", out, "--kind",
          "ivf", "--nlist", "100"], "needs at least 100 vectors"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert cli_main(["index", "build", "--artifact", serve_assets["artifact"], "--images", folder, "--output",
                     out]) == 0
    capsys.readouterr()
    assert cli_main(["index", "remove", "--index", out, "ghost.png"]) == 2
    assert "not in the index" in capsys.readouterr().err
    assert cli_main(["index", "build", "--artifact", serve_assets["artifact"], "--images", folder, "--output",
                     out]) == 2
    assert "--overwrite" in capsys.readouterr().err
