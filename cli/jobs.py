"""Batch jobs: rows of a jobs file, ``--set`` sweeps and seed ranges, multiplied out.

A job is a name plus assignments ``{"NODE.INPUT": value}``. Jobs files:

- CSV: a header of ``NODE.INPUT`` columns (plus an optional ``name`` column); each row is one
  job, an empty cell leaves that input as the workflow has it.
- JSONL: one JSON object per line, keys ``NODE.INPUT`` (plus optional ``name``), or
  ``{"name": ..., "set": {"NODE.INPUT": value}}``. Values keep their JSON types.

The batch is the cartesian product rows x sweeps x seeds, in that nesting order. A row's own
value wins over a ``--set`` for the same input; ``--seeds`` sets every seed widget.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

NAME_COLUMN = "name"
SEED_KEY = "@seed"  # stands for every seed widget of the workflow
MAX_SEEDS = 1_000_000  # one job each: more is a typo (1-10000000), not a batch


class JobsFileError(ValueError):
    pass


@dataclass
class Job:
    index: int
    name: str
    assignments: dict[str, Any] = field(default_factory=dict)
    row_keys: frozenset = frozenset()  # the assignments that came from a jobs-file row
    row_name: str = ""  # the row's own name, if it has one


def parse_seeds(text: str) -> list[int]:
    """``"1-8"``, ``"3,5,9"`` or ``"1-4,10"`` -> a list of seeds (in order, no repeats)."""
    seeds: dict[int, None] = {}  # ordered, and a repeat is found in constant time
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise JobsFileError(f"--seeds {text!r}: expected ranges like 1-8 or lists like 1,5,9")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) else start
        if stop < start:
            raise JobsFileError(f"--seeds {text!r}: {part} runs backwards")
        if stop - start >= MAX_SEEDS or len(seeds) + stop - start >= MAX_SEEDS:
            raise JobsFileError(f"--seeds {text!r}: more than {MAX_SEEDS:,} seeds; split the "
                                "batch into smaller ranges")
        seeds.update(dict.fromkeys(range(start, stop + 1)))
    if not seeds:
        raise JobsFileError(f"--seeds {text!r}: no seeds given")
    return list(seeds)


def load_jobs_file(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise JobsFileError(f"jobs file {str(path)!r} does not exist")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _load_jsonl(path)
    return _load_csv(path)


def _load_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise JobsFileError(f"{path}: the CSV has no header row (columns like 3.seed)")
        for column in reader.fieldnames:
            if column != NAME_COLUMN and "." not in column:
                raise JobsFileError(f"{path}: column {column!r} is not NODE.INPUT (or 'name')")
        rows = []
        for row in reader:
            rows.append({key: value for key, value in row.items()
                         if key is not None and value not in (None, "")})
    return rows


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise JobsFileError(f"{path}:{number}: not JSON ({err})") from None
        if not isinstance(row, dict):
            raise JobsFileError(f"{path}:{number}: each line must be a JSON object")
        if isinstance(row.get("set"), dict):
            row = {**row["set"], **({NAME_COLUMN: row[NAME_COLUMN]} if NAME_COLUMN in row else {})}
        for key in row:
            if key != NAME_COLUMN and "." not in key:
                raise JobsFileError(f"{path}:{number}: key {key!r} is not NODE.INPUT (or 'name')")
        rows.append(row)
    return rows


def build_jobs(rows: Sequence[dict[str, Any]] | None = None,
               sweeps: Sequence[tuple[str, list[Any]]] = (),
               seeds: Sequence[int] | None = None) -> list[Job]:
    """rows x sweeps x seeds; ``sweeps`` are ``(target, values)`` (one value = a plain --set)."""
    rows = list(rows) if rows else [{}]
    sweep_targets = [target for target, _ in sweeps]
    sweep_combos = list(itertools.product(*[values for _, values in sweeps])) or [()]
    seed_values = list(seeds) if seeds else [None]
    jobs = []
    for row, combo, seed in itertools.product(rows, sweep_combos, seed_values):
        assignments = dict(zip(sweep_targets, combo))
        assignments.update({k: v for k, v in row.items() if k != NAME_COLUMN})
        if seed is not None:
            assignments[SEED_KEY] = seed
        row_name = str(row.get(NAME_COLUMN) or "")
        jobs.append(Job(len(jobs), row_name, assignments,
                        frozenset(k for k in row if k != NAME_COLUMN), row_name))
    _name_jobs(jobs)
    return jobs


def _name_jobs(jobs: list[Job]) -> None:
    """Names from what varies between jobs: ``003_cfg-5.5_seed-3``; a row's own name stands
    for the row's values (``003_fox_cfg-5.5_seed-3``)."""
    varying = [key for key in dict.fromkeys(k for job in jobs for k in job.assignments)
               if len({json.dumps(job.assignments.get(key), sort_keys=True) for job in jobs}) > 1]
    width = max(3, len(str(len(jobs) - 1)))
    for job in jobs:
        parts = [f"{job.index:0{width}d}"]
        if job.name:
            parts.append(safe_name(job.name, 48))
        for key in varying:
            if key in job.assignments and not (job.name and key in job.row_keys):
                label = "seed" if key == SEED_KEY else key.rpartition(".")[2]
                parts.append(f"{label}-{_short(job.assignments[key])}")
        job.name = safe_name("_".join(parts))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = Path(text).stem if ("/" in text or "\\" in text) else text
    return text[:24]


def safe_name(text: str, limit: int = 96) -> str:
    """A file-name-safe form: letters, digits, ``.-_``; other runs become ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned[:limit] or "job"
