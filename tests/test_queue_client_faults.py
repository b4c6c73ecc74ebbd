"""The batch client against misbehaving servers and huge seed ranges: it decides from what
the server really holds, fails one job rather than the batch, and can always be stopped."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from comfyui_videodit.cli.jobs import parse_seeds
from comfyui_videodit.cli.main import main
from comfyui_videodit.cli.queue_client import BatchError, prepare_jobs, queue_batch

from fake_comfy_server import OBJECT_INFO, FakeComfyServer, ui_workflow

FAST = {"poll_s": 0.1, "server_wait_s": 1.0}
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def serve(tmp_path):
    started = []

    def make(cls, name="a", **kwargs):
        server = cls(tmp_path / name, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_seed_ranges_are_parsed_and_prepared_in_linear_time():
    started = time.perf_counter()
    seeds = parse_seeds("1-300000,5,299999-300002")
    assert len(seeds) == 300002 and seeds[:2] == [1, 2] and seeds[-1] == 300002
    assert time.perf_counter() - started < 2
    started = time.perf_counter()
    prepared, _ = prepare_jobs(ui_workflow(), OBJECT_INFO, seeds=list(range(1, 30001)))
    assert len(prepared) == 30000 and len({p.key for p in prepared}) == 30000
    assert prepared[7].prompt["4"]["inputs"]["seed"] == 8
    assert time.perf_counter() - started < 6


def test_a_bad_seed_among_many_is_still_reported():
    from comfyui_videodit.cli.validate import ValidationFailed

    with pytest.raises(ValidationFailed, match=r"job 002_seed--1: .*seed: -1 is below the minimum"):
        prepare_jobs(ui_workflow(), OBJECT_INFO, seeds=[1, 2, -1])


def test_ctrl_c_stops_a_huge_dry_run_within_seconds(serve, tmp_path):
    server = serve(FakeComfyServer)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ui_workflow()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent.parent)]
                                                      + sys.path))
    child = subprocess.Popen(
        [sys.executable, "-m", "comfyui_videodit", "queue", str(wf), "--server", server.url,
         "--seeds", "1-900000", "--dry-run", "--output-dir", str(tmp_path / "o")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    time.sleep(3)  # well into preparing 900,000 jobs
    child.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = child.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert child.returncode == 130, err.decode()[-2000:]
    assert b"cancelled before anything was queued" in err


class TricklingServer(FakeComfyServer):
    async def get_object_info(self, request):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:  # one byte at a time, never finishing
                await response.write(b" ")
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


def test_a_trickling_server_cannot_hang_the_client(serve, tmp_path):
    server = serve(TricklingServer)
    started = time.monotonic()
    with pytest.raises(BatchError, match="no server answered GET /object_info"):
        queue_batch(ui_workflow(), [server.url], output_dir=tmp_path / "o",
                    stream=io.StringIO(), request_timeout_s=1.5, **FAST)
    assert time.monotonic() - started < 10


class Answers500(FakeComfyServer):
    """POST /prompt answers 500 (or a non-JSON 200) - after queueing it, or not."""

    queue_it = True
    status, body, content_type = 500, b"Internal Server Error: boom", "text/plain"

    async def post_prompt(self, request):
        answer = await super().post_prompt(request) if self.queue_it else None
        if answer is not None and answer.status != 200:
            return answer
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


def test_a_500_after_queueing_is_followed_not_queued_twice(serve, tmp_path):
    server = serve(Answers500)
    result = queue_batch(ui_workflow(), [server.url], seeds="1-2", output_dir=tmp_path / "o",
                         stream=io.StringIO(), **FAST)
    assert [r["status"] for r in result.records] == ["success", "success"]
    assert len(server.accepted) == 2 and len(server.executed) == 2


def test_invalid_json_after_queueing_is_followed(serve, tmp_path):
    class Garbage(Answers500):
        status, body, content_type = 200, b"{not json", "application/json"

    server = serve(Garbage)
    result = queue_batch(ui_workflow(), [server.url], output_dir=tmp_path / "o",
                         stream=io.StringIO(), **FAST)
    assert [r["status"] for r in result.records] == ["success"]
    assert len(server.accepted) == 1


def test_a_500_that_queued_nothing_reports_status_and_body(serve, tmp_path):
    class Refuses(Answers500):
        queue_it = False

    server = serve(Refuses)
    log = io.StringIO()
    result = queue_batch(ui_workflow(), [server.url], output_dir=tmp_path / "o",
                         stream=log, **FAST)
    (record,) = result.records
    assert record["status"] == "failed" and server.accepted == []
    assert "answered HTTP 500: Internal Server Error: boom" in record["error"]
    assert "the prompt is not on the server" in log.getvalue()


class MalformedHistory(FakeComfyServer):
    """The first prompt's /history entry has the wrong shape."""

    async def get_history_id(self, request):
        prompt_id = request.match_info["id"]
        if prompt_id in self.history and prompt_id == self.accepted[0]:
            return web.json_response({prompt_id: {"status": "success", "outputs": [1]}})
        return await super().get_history_id(request)


def test_a_malformed_history_entry_fails_that_job_only(serve, tmp_path):
    server = serve(MalformedHistory)
    result = queue_batch(ui_workflow(), [server.url], seeds="1-3", output_dir=tmp_path / "o",
                         stream=io.StringIO(), **FAST)
    statuses = [r["status"] for r in result.records]
    assert statuses.count("success") == 2 and statuses.count("failed") == 1
    failed = next(r for r in result.records if r["status"] == "failed")
    assert "/history entry" in failed["error"] and "malformed" in failed["error"]


def test_an_output_dir_that_is_a_file_is_a_clear_error(serve, tmp_path, capsys):
    server = serve(FakeComfyServer)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ui_workflow()))
    (tmp_path / "taken").write_text("x")
    code = main(["queue", str(wf), "--server", server.url, "--output-dir",
                 str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "is a file, not a folder; choose another --output-dir" in err
    assert server.prompt_posts == 0
