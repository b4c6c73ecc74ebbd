"""The queue command as a separate process: killed with SIGKILL and resumed; Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyui_videodit.cli.manifest import read_records

from fake_comfy_server import FakeComfyServer, ui_workflow


@pytest.fixture
def server(tmp_path):
    fake = FakeComfyServer(tmp_path / "server", step_s=0.05).start()
    yield fake
    fake.stop()


def queue_command(workflow: Path, url: str, out: Path, seeds: str) -> list[str]:
    return [sys.executable, "-m", "comfyui_videodit", "queue", str(workflow), "--server", url,
            "--seeds", seeds, "--output-dir", str(out), "--poll", "0.1", "--server-wait", "2"]


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def statuses(manifest: Path) -> list[str]:
    return [r["status"] for r in read_records(manifest)] if manifest.exists() else []


def start(command):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_resume_after_the_client_is_killed_loses_and_duplicates_nothing(server, tmp_path):
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(ui_workflow()))
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    command = queue_command(workflow, server.url, out, "1-12")
    client = start(command)
    try:
        wait_for(lambda: statuses(manifest).count("success") >= 3)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
    killed_at = statuses(manifest).count("success")
    assert killed_at < 12, "the batch finished before the client could be killed"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{killed_at} of 12 jobs already done" in resumed.stderr
    lines = read_records(manifest)
    assert len(lines) == 12 and {r["status"] for r in lines} == {"success"}
    # Each seed was rendered exactly once: the prompt in flight at the kill was collected from
    # the server's history (or, if it never arrived, sent again), never run twice.
    assert sorted(e["values"]["4"]["seed"] for e in server.executed) == list(range(1, 13))
    files = sorted(p.name for p in out.iterdir() if p.name != "manifest.jsonl")
    assert len(files) == 12 and not any(".part" in name for name in files)
    for record in lines:
        (name,) = record["outputs"]
        assert json.loads((out / name).read_text())["seed"] == record["overrides"]["seed"]


def test_ctrl_c_cancels_what_this_client_queued_and_keeps_the_manifest_consistent(
        server, tmp_path):
    server.step_s = 0.3  # 3 steps: about a second per job, time to press Ctrl-C
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(ui_workflow()))
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    command = queue_command(workflow, server.url, out, "1-4")
    client = start(command)
    try:
        wait_for(lambda: statuses(manifest)[-1:] == ["submitted"] and
                 server.running is not None)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130, err
    assert "run the same command again to resume" in err
    lines = read_records(manifest)
    assert [r["status"] for r in lines] == ["cancelled"]  # compacted: one line per job
    cancelled = lines[0]
    assert cancelled["prompt_id"] in server.deleted
    assert cancelled["prompt_id"] in server.interrupts
    wait_for(lambda: server.running is None)
    assert cancelled["prompt_id"] in server.history  # stopped, recorded as an error there
    assert server.history[cancelled["prompt_id"]]["status"]["status_str"] == "error"

    server.step_s = 0.01
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    lines = read_records(manifest)
    assert len(lines) == 4 and {r["status"] for r in lines} == {"success"}
    assert sorted(e["values"]["4"]["seed"] for e in server.executed) == [1, 2, 3, 4]
