"""The batch queue client against fake ComfyUI servers on loopback (real HTTP + WebSocket)."""
from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from comfyui_videodit.cli.main import main
from comfyui_videodit.cli.manifest import read_records
from comfyui_videodit.cli.overrides import OverrideError
from comfyui_videodit.cli.downloads import write_new_file
from comfyui_videodit.cli.queue_client import queue_batch
from comfyui_videodit.cli.validate import ValidationFailed

from fake_comfy_server import FakeComfyServer, ui_workflow

FAST = {"poll_s": 0.1, "server_wait_s": 1.0}


@pytest.fixture
def servers(tmp_path):
    started = []

    def make(name, **kwargs):
        server = FakeComfyServer(tmp_path / name, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def output_payload(out_dir: Path, record: dict) -> dict:
    """What the fake save node wrote: the sampler values that reached it."""
    (name,) = record["outputs"]
    return json.loads((out_dir / name).read_text())


def api_workflow_with_image_input() -> dict:
    return {
        "1": {"class_type": "FakeModelLoader", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "FakeClipLoader", "inputs": {"clip_name": "clip.safetensors"}},
        "3": {"class_type": "FakeTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]},
              "_meta": {"title": "Positive"}},
        "4": {"class_type": "FakeSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "seed": 1, "steps": 2, "cfg": 5.0,
            "sampler_name": "euler", "image": ["6", 0]}},
        "5": {"class_type": "FakeSaveImage", "inputs": {"images": ["4", 0],
                                                        "filename_prefix": "i2v"}},
        "6": {"class_type": "FakeLoadImage", "inputs": {"image": "missing.png"},
              "_meta": {"title": "Start image"}},
    }


def test_twenty_job_sweep_over_two_servers_gives_a_complete_manifest(servers, tmp_path):
    a, b = servers("a"), servers("b")
    out = tmp_path / "renders"
    seen = []
    result = queue_batch(ui_workflow(), [a.url, b.url], sets=["FakeSampler.cfg=[4, 6.5]"],
                         seeds="1-10", output_dir=out, stream=io.StringIO(),
                         on_record=seen.append, **FAST)
    lines = read_records(out / "manifest.jsonl")
    assert len(lines) == 20 and result.total == 20  # compacted: one line per job
    assert {r["status"] for r in lines} == {"success"}
    assert len({r["job"] for r in lines}) == 20 and len({r["name"] for r in lines}) == 20
    assert len({r["prompt_id"] for r in lines}) == 20
    assert Counter(r["server"] for r in lines) == Counter({a.url: len(a.executed),
                                                          b.url: len(b.executed)})
    assert len(a.executed) > 0 and len(b.executed) > 0
    assert len(a.executed) + len(b.executed) == 20
    combos = set()
    for record in lines:
        payload = output_payload(out, record)
        # the file really is this job's: the server received this job's seed and cfg
        assert payload["seed"] == record["overrides"]["seed"]
        assert payload["cfg"] == record["overrides"]["FakeSampler.cfg"]
        assert payload["text"] == "a red ball rolls to the left"
        combos.add((payload["seed"], payload["cfg"]))
        assert record["submitted_at"] and record["finished_at"] and record["seconds"] is not None
        assert record["error"] is None
        assert record["name"].startswith(f"{record['index']:03d}_")
    assert combos == {(s, c) for s in range(1, 11) for c in (4.0, 6.5)}
    files = [p for p in out.iterdir() if p.name != "manifest.jsonl"]
    assert len(files) == 20
    # While running, each job went submitted -> success.
    assert Counter(r["status"] for r in seen) == Counter({"submitted": 20, "success": 20})

    # Re-running the same batch finds everything done and queues nothing.
    posts = a.prompt_posts + b.prompt_posts
    again = queue_batch(ui_workflow(), [a.url, b.url], sets=["FakeSampler.cfg=[4, 6.5]"],
                        seeds="1-10", output_dir=out, stream=io.StringIO(), **FAST)
    assert len(again.succeeded) == 20
    assert a.prompt_posts + b.prompt_posts == posts
    assert len(read_records(out / "manifest.jsonl")) == 20


def test_a_restart_that_forgets_the_queue_is_detected_and_the_job_resubmitted(servers, tmp_path):
    server = servers("a", step_s=0.05)
    out = tmp_path / "out"
    seen = []

    def on_record(record):
        seen.append(record)
        if record["status"] == "submitted" and sum(r["status"] == "submitted" for r in seen) == 3:
            threading.Timer(0.03, server.restart).start()  # while job 3 runs

    result = queue_batch(ui_workflow(), [server.url], seeds="1-6", output_dir=out,
                         stream=io.StringIO(), on_record=on_record, **FAST)
    assert len(result.succeeded) == 6
    lost = [r for r in seen if r["status"] == "lost"]
    assert lost, "the restart should have been noticed"
    lines = read_records(out / "manifest.jsonl")
    assert len(lines) == 6 and {r["status"] for r in lines} == {"success"}
    # Every seed was rendered to completion; the lost one again after the restart.
    assert sorted(e["values"]["4"]["seed"] for e in server.executed) == [1, 2, 3, 4, 5, 6]
    assert sorted(output_payload(out, r)["seed"] for r in lines) == [1, 2, 3, 4, 5, 6]


def test_a_dead_servers_jobs_move_to_the_other_server(servers, tmp_path):
    a, b = servers("a", step_s=0.02), servers("b", step_s=0.02)
    out = tmp_path / "out"
    seen = []

    def on_record(record):
        seen.append(record)
        if record["status"] == "success" and record["server"] == b.url and \
                sum(r["status"] == "success" and r["server"] == b.url for r in seen) == 2:
            threading.Timer(0.0, b.die).start()

    log = io.StringIO()
    result = queue_batch(ui_workflow(), [a.url, b.url], seeds="1-10", output_dir=out,
                         stream=log, on_record=on_record, poll_s=0.1, server_wait_s=0.5)
    assert len(result.succeeded) == 10
    lines = read_records(out / "manifest.jsonl")
    assert sorted(output_payload(out, r)["seed"] for r in lines) == list(range(1, 11))
    assert Counter(r["server"] for r in lines)[b.url] in (2, 3)  # 2 before it died (+1 racing)
    assert "not answering" in log.getvalue()


def test_bad_overrides_are_reported_before_anything_is_queued(servers, tmp_path, capsys):
    server = servers("a")
    with pytest.raises(OverrideError, match=r"no node with the id, title or type 'Sampler'"):
        queue_batch(ui_workflow(), [server.url], sets=["Sampler.seed=3"],
                    output_dir=tmp_path / "o", **FAST)
    with pytest.raises(OverrideError, match=r"has no input 'txt'; did you mean 'text'"):
        queue_batch(ui_workflow(), [server.url], sets=["Positive.txt=hello"],
                    output_dir=tmp_path / "o", **FAST)
    with pytest.raises(OverrideError, match=r"steps needs a whole number"):
        queue_batch(ui_workflow(), [server.url], sets=["4.steps=many"],
                    output_dir=tmp_path / "o", **FAST)
    with pytest.raises(OverrideError, match=r"takes a connection \(MODEL\), not a value"):
        queue_batch(ui_workflow(), [server.url], sets=["4.model=3"],
                    output_dir=tmp_path / "o", **FAST)
    with pytest.raises(ValidationFailed) as failed:
        queue_batch(ui_workflow(), [server.url], sets=["4.steps=[3, 0]"],
                    output_dir=tmp_path / "o", **FAST)
    assert "#4 FakeSampler · steps: 0 is below the minimum 1" in str(failed.value)
    assert "job 001_steps-0" in str(failed.value)
    # The command line says the same and exits 2.
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ui_workflow()))
    code = main(["queue", str(wf), "--server", server.url, "--set", "Save.filename_prefx=x",
                 "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'filename_prefix'" in err and "Nothing was queued" in err
    assert server.prompt_posts == 0 and server.uploads == 0
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_node_errors_on_http_200_and_400_are_reported_per_node(servers, tmp_path):
    server = servers("a")
    workflow = api_workflow_with_image_input()
    del workflow["6"], workflow["4"]["inputs"]["image"]
    workflow["7"] = {"class_type": "FakeSaveImage", "inputs": {
        "images": ["4", 0], "filename_prefix": "extra"}, "_meta": {"title": "Second save"}}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(row) for row in [
        {"name": "one refused", "7.filename_prefix": "forbidden-a"},
        {"name": "all refused", "7.filename_prefix": "forbidden-b",
         "5.filename_prefix": "forbidden-c"},
    ]) + "\n")
    log = io.StringIO()
    result = queue_batch(workflow, [server.url], jobs_file=jobs, output_dir=tmp_path / "out",
                         stream=log, **FAST)
    by_name = {r["name"]: r for r in result.records}
    partial = by_name["000_one-refused"]
    assert partial["status"] == "success" and len(partial["outputs"]) == 1
    assert partial["skipped_outputs"] == [
        "#7 FakeSaveImage ('Second save') · filename_prefix: the node rejected the value: "
        "this prefix is not allowed"]
    refused = by_name["001_all-refused"]
    assert refused["status"] == "rejected" and refused["outputs"] == []
    assert "#5 FakeSaveImage · filename_prefix: the node rejected the value" in refused["error"]
    assert "#7 FakeSaveImage ('Second save') · filename_prefix" in refused["error"]
    assert "rejected by" in log.getvalue() and "skipped some outputs" in log.getvalue()


def test_execution_errors_are_recorded_and_retried_on_resume(servers, tmp_path):
    server = servers("a")
    out = tmp_path / "out"
    result = queue_batch(ui_workflow(), [server.url], sets=["4.steps=[2, 13]"],
                         output_dir=out, stream=io.StringIO(), **FAST)
    by_steps = {r["overrides"]["4.steps"]: r for r in result.records}
    assert by_steps[2]["status"] == "success"
    failed = by_steps[13]
    assert failed["status"] == "failed"
    assert failed["error"] == "#4 FakeSampler: RuntimeError: 13 steps is unlucky"
    assert failed["outputs"] == [] and failed["finished_at"]
    posts = server.prompt_posts
    again = queue_batch(ui_workflow(), [server.url], sets=["4.steps=[2, 13]"],
                        output_dir=out, stream=io.StringIO(), **FAST)
    assert server.prompt_posts == posts + 1  # only the failed job is queued again
    assert len(again.succeeded) == 1 and again.unfinished_count == 1


def test_input_files_are_uploaded_once_by_content(servers, tmp_path):
    a, b = servers("a"), servers("b")
    media = tmp_path / "media"
    media.mkdir()
    (media / "cat.png").write_bytes(b"\x89PNG cat pixels")
    (media / "dog.png").write_bytes(b"\x89PNG dog pixels")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("name,Start image.image,Positive.text\n"
                    "cat 1,media/cat.png,a cat\n"
                    "dog,media/dog.png,a dog\n"
                    "cat 2,media/cat.png,\n")
    out = tmp_path / "out"
    result = queue_batch(api_workflow_with_image_input(), [a.url, b.url], jobs_file=jobs,
                         output_dir=out, stream=io.StringIO(), **FAST)
    assert len(result.succeeded) == 3
    for record in result.records:
        payload = output_payload(out, record)
        source = media / ("dog.png" if "dog" in record["name"] else "cat.png")
        assert payload["image"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert payload["text"] == {"000_cat-1": "a cat", "001_dog": "a dog",
                                   "002_cat-2": "a cat"}[record["name"]]
    for server in (a, b):  # at most one stored copy of each file per server
        stored = [p.name for p in server.input_dir.iterdir()]
        assert len(stored) == len(set(stored)) <= 2
        assert all(name.startswith(("cat-", "dog-")) for name in stored)


def test_downloads_never_overwrite(tmp_path):
    first = write_new_file(tmp_path, "job_a.png", b"one")
    same = write_new_file(tmp_path, "job_a.png", b"one")  # a resumed download: reused
    other = write_new_file(tmp_path, "job_a.png", b"two")
    assert first == same and other.name == "job_a (1).png"
    assert first.read_bytes() == b"one" and other.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job_a (1).png", "job_a.png"]


def test_rows_added_to_a_jobs_file_run_only_the_new_jobs(servers, tmp_path):
    server = servers("a")
    jobs = tmp_path / "jobs.csv"
    out = tmp_path / "out"
    jobs.write_text("Positive.text\na fox\na boat\n")
    first = queue_batch(ui_workflow(), [server.url], jobs_file=jobs, output_dir=out,
                        stream=io.StringIO(), **FAST)
    assert len(first.succeeded) == 2 and server.prompt_posts == 2
    jobs.write_text("Positive.text\na cat\na fox\na boat\na fox\n")  # inserted + a duplicate
    second = queue_batch(ui_workflow(), [server.url], jobs_file=jobs, output_dir=out,
                         stream=io.StringIO(), **FAST)
    assert len(second.succeeded) == 4 and server.prompt_posts == 4
    texts = sorted(e["values"]["4"]["text"] for e in server.executed)
    assert texts == ["a boat", "a cat", "a fox", "a fox"]
    assert len(read_records(out / "manifest.jsonl")) == 4


def test_dry_run_lists_jobs_and_queues_nothing(servers, tmp_path, capsys):
    server = servers("a")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ui_workflow()))
    code = main(["queue", str(wf), "--server", server.url, "--seeds", "1-3", "--dry-run",
                 "--set", "Positive.text=a fox", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0 and "3 jobs, 0 already done; nothing was queued (dry run)" in err
    assert '000_seed-1 (to run): {"Positive.text": "a fox", "seed": 1}' in err
    assert server.prompt_posts == 0


def test_a_job_that_keeps_getting_lost_is_failed_not_retried_forever(servers, tmp_path):
    server = servers("a", step_s=0.05)

    def on_record(record):  # the server "crashes" whenever seed 2 is sent
        if record["status"] == "submitted" and record["overrides"]["seed"] == 2:
            threading.Timer(0.05, server.restart).start()

    result = queue_batch(ui_workflow(), [server.url], seeds="1-3", output_dir=tmp_path / "out",
                         stream=io.StringIO(), on_record=on_record, **FAST)
    by_seed = {r["overrides"]["seed"]: r for r in result.records}
    assert by_seed[1]["status"] == by_seed[3]["status"] == "success"
    assert by_seed[2]["status"] == "failed"
    assert by_seed[2]["error"].startswith("lost 3 times, last: ")
