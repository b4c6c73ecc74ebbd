"""A real ComfyUI on CPU for the integration tests (skipped unless a checkout is given).

``VIDEODIT_COMFYUI_DIR`` names a ComfyUI checkout; ``VIDEODIT_COMFYUI_PYTHON`` the interpreter
with its requirements (default: this one). The server runs on a free loopback port with
``--base-directory`` set to a temporary folder whose ``custom_nodes/`` links to this
repository, so nothing is written into the checkout and the pack is loaded exactly as a user's
ComfyUI loads it. Every wait is bounded.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("VIDEODIT_COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("VIDEODIT_COMFYUI_PYTHON", sys.executable)
REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER = "ComfyUI-VideoDiT"
START_TIMEOUT_S = 240
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "clip_vision")


def require_comfyui() -> None:
    if not COMFYUI_DIR:
        pytest.skip("set VIDEODIT_COMFYUI_DIR to a ComfyUI checkout to run this test")


def comfyui_env() -> dict:
    """This environment minus VIDEODIT_STANDALONE, which the test session sets for itself."""
    env = dict(os.environ)
    env.pop("VIDEODIT_STANDALONE", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 30):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, payload: dict, timeout: float = 30):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class ComfyUIServer:
    """``start()`` / ``stop()``; ``base`` holds custom_nodes, models, input, output, temp."""

    def __init__(self, base: Path, *, extra_args: tuple[str, ...] = ("--preview-method", "auto")):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        for folder in MODEL_FOLDERS:
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for folder in ("input", "output", "temp"):
            (base / folder).mkdir(exist_ok=True)

    def start(self) -> "ComfyUIServer":
        require_comfyui()
        env = comfyui_env()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
                 str(self.port), "--base-directory", str(self.base), "--database-url",
                 "sqlite:///:memory:", "--disable-auto-launch", *self.extra_args],
                cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                get_json(self.url + "/queue", timeout=2)
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("ComfyUI did not start:\n" + self.log()[-4000:])
                time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def wait_for_history(self, prompt_id: str, timeout_s: float = 180) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            history = get_json(f"{self.url}/history/{prompt_id}", timeout=10)
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") \
                    is not None:
                return history[prompt_id]
            if self.process is not None and self.process.poll() is not None:
                pytest.fail("ComfyUI exited:\n" + self.log()[-4000:])
            time.sleep(0.3)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout_s} s:\n{self.log()[-3000:]}")
