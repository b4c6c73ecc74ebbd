"""Jobs files, sweeps and seed ranges; the manifest file."""
from __future__ import annotations

import json

import pytest

from comfyui_videodit.cli.jobs import (SEED_KEY, JobsFileError, build_jobs, load_jobs_file,
                                       parse_seeds)
from comfyui_videodit.cli.manifest import Manifest, read_records
from comfyui_videodit.cli.overrides import parse_sweep_value, split_assignment, OverrideError


def test_seed_ranges():
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("3, 5,9") == [3, 5, 9]
    assert parse_seeds("1-3,10,2") == [1, 2, 3, 10]
    for bad in ("", "a-b", "5-1", "1..3"):
        with pytest.raises(JobsFileError):
            parse_seeds(bad)


def test_sweeps_are_a_cartesian_product_with_readable_names():
    sweeps = [("Sampler.cfg", parse_sweep_value("[4, 6]")), ("3.text", ["a cat"])]
    jobs = build_jobs(None, sweeps, [1, 2, 3])
    assert len(jobs) == 6
    assert [j.assignments for j in jobs[:2]] == [
        {"Sampler.cfg": 4, "3.text": "a cat", SEED_KEY: 1},
        {"Sampler.cfg": 4, "3.text": "a cat", SEED_KEY: 2}]
    assert [j.name for j in jobs] == ["000_cfg-4_seed-1", "001_cfg-4_seed-2", "002_cfg-4_seed-3",
                                      "003_cfg-6_seed-1", "004_cfg-6_seed-2", "005_cfg-6_seed-3"]


def test_csv_and_jsonl_jobs_files(tmp_path):
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text("name,Positive.text,Sampler.steps\nred ball,a red ball,\n"
                        "blue/cube,a blue cube,30\n")
    rows = load_jobs_file(csv_file)
    assert rows == [{"name": "red ball", "Positive.text": "a red ball"},
                    {"name": "blue/cube", "Positive.text": "a blue cube", "Sampler.steps": "30"}]
    jobs = build_jobs(rows, [("Sampler.steps", ["20"])], [7])
    assert [j.assignments for j in jobs] == [
        {"Sampler.steps": "20", "Positive.text": "a red ball", SEED_KEY: 7},
        {"Sampler.steps": "30", "Positive.text": "a blue cube", SEED_KEY: 7}]  # rows win
    assert [j.name for j in jobs] == ["000_red-ball_steps-20", "001_blue-cube"]

    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text('{"Sampler.cfg": 5.5, "name": "x"}\n\n{"set": {"Sampler.cfg": 7}}\n')
    assert load_jobs_file(jsonl) == [{"Sampler.cfg": 5.5, "name": "x"}, {"Sampler.cfg": 7}]
    jsonl.write_text('{"cfg": 5}\n')
    with pytest.raises(JobsFileError, match="key 'cfg' is not NODE.INPUT"):
        load_jobs_file(jsonl)


def test_assignment_syntax():
    assert split_assignment("KSampler.seed=5") == ("KSampler.seed", "5")
    assert split_assignment("My v1.2 node.text=a=b") == ("My v1.2 node.text", "a=b")
    assert parse_sweep_value("[1, 2]") == [1, 2]
    assert parse_sweep_value("[style] a cat") == ["[style] a cat"]
    with pytest.raises(OverrideError, match="expected NODE.INPUT=VALUE"):
        split_assignment("seed5")


def test_manifest_last_record_wins_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    manifest = Manifest(path)
    manifest.write({"job": "a", "status": "submitted"})
    manifest.write({"job": "b", "status": "submitted"})
    manifest.write({"job": "a", "status": "success"})
    with path.open("a") as handle:
        handle.write('{"job": "b", "stat')  # the client was killed mid-write
    reopened = Manifest(path)
    assert reopened.latest("a")["status"] == "success"
    assert reopened.latest("b")["status"] == "submitted"
    reopened.write({"job": "b", "status": "success"})  # not glued to the torn line
    assert Manifest(path).latest("b")["status"] == "success"
    reopened.compact(["b", "a"])
    assert [json.loads(line)["job"] for line in path.read_text().splitlines()] == ["b", "a"]
    assert len(read_records(path)) == 2
