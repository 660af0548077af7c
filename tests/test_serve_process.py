"""A real `omnireid serve` process on 127.0.0.1: an acknowledged addition survives kill -9; start-up
errors are one line with exit code 2."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
httpx = pytest.importorskip("httpx")

from serve_helpers import png_bytes  # noqa: E402

from omnireid.cli.main import main as cli_main  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "process-test-token-0123456789"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, artifact: str, port: int, log_path: str) -> subprocess.Popen:
    env = {**os.environ, "OMNIREID_SERVE_TOKEN": TOKEN, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "omnireid", "serve", "--index", index, "--artifact", artifact,
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def wait_healthy(process: subprocess.Popen, url: str, log_path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {open(log_path).read()}")
        try:
            if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not become healthy in {timeout} s: {open(log_path).read()}")


def test_acknowledged_addition_survives_kill_9(serve_assets, tmp_path):
    index = str(tmp_path / "index")
    folder = os.path.dirname(serve_assets["gallery"][0])
    assert cli_main(["index", "build", "--artifact", serve_assets["artifact"], "--images", folder,
                     "--output", index]) == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = str(tmp_path / "server.log")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    new_image = png_bytes(serve_assets["extra"][2])
    server = start_server(index, serve_assets["artifact"], port, log_path)
    try:
        wait_healthy(server, url, log_path)
        response = httpx.post(url + "/gallery", headers=auth, files={"image": new_image},
                              data={"id": "walk-in.png", "metadata": json.dumps({"seen": "gate 3"})}, timeout=30)
        assert response.status_code == 201, response.text
        server.send_signal(signal.SIGKILL)  # no shutdown hook runs: only the journal can save the addition
        server.wait(timeout=30)
        assert server.returncode == -signal.SIGKILL
        server = start_server(index, serve_assets["artifact"], port, log_path)
        wait_healthy(server, url, log_path)
        assert httpx.get(url + "/health").json()["gallery_size"] == 25
        assert httpx.get(url + "/gallery/walk-in.png", headers=auth).json() == {
            "id": "walk-in.png", "metadata": {"seen": "gate 3"}}
        hit = httpx.post(url + "/search", headers=auth, files={"image": new_image}, data={"k": "1"},
                         timeout=30).json()["results"][0]
        assert hit["id"] == "walk-in.png" and hit["score"] == pytest.approx(1.0, abs=1e-5)
        server.send_signal(signal.SIGTERM)  # a clean stop compacts the journal into a new snapshot
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with open(os.path.join(index, "index.json")) as f:
        manifest = json.load(f)
    assert manifest["count"] == 25 and manifest["generation"] == 2


def test_serve_start_up_errors_are_one_line_exit_2(serve_assets, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMNIREID_SERVE_TOKEN", raising=False)
    index = str(tmp_path / "index")
    folder = os.path.dirname(serve_assets["gallery"][0])
    assert cli_main(["index", "build", "--artifact", serve_assets["artifact"], "--images", folder,
                     "--output", index]) == 0
    capsys.readouterr()
    other = tmp_path / "other.onnx"
    from serve_helpers import make_tiny_onnx

    make_tiny_onnx(str(other), seed=1)
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    base = ["serve", "--index", index, "--artifact", serve_assets["artifact"], "--port", str(free_port())]
    cases = [
        (base, "refusing to start without an access token"),
        (base + ["--token-file", str(token_file)], "use at least 16"),
        (["serve", "--index", str(tmp_path / "none"), "--artifact", serve_assets["artifact"], "--insecure-no-auth"],
         "index.json is missing"),
        (["serve", "--index", index, "--artifact", str(other), "--insecure-no-auth"],
         "is not the model the index was built with"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
