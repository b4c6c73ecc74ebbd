"""The batch manifest: one JSON line per job state change, the last line of a job wins.

Lines are appended and flushed to disk as things happen (``submitted`` is written *before* the
prompt is sent, with the prompt id chosen by the client), so a client killed at any moment can
be resumed: a ``submitted`` job is looked up on its server and either collected, awaited, or
queued again. When a batch ends the file is rewritten (atomically) with one line per job.

Record fields: ``job`` (stable key), ``name``, ``index``, ``overrides``, ``server``,
``prompt_id``, ``status`` (``submitted`` | ``success`` | ``failed`` | ``rejected`` | ``lost`` |
``cancelled``), ``submitted_at`` / ``started_at`` / ``finished_at`` (UTC ISO), ``seconds``,
``outputs`` (files written), ``error``.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

FINISHED = "success"
TERMINAL_FAILURES = ("failed", "rejected")


def now_iso() -> str:
    """UTC time with milliseconds, e.g. ``2026-11-24T22:41:07.123Z``."""
    stamp = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Seconds since the epoch of a :func:`now_iso` string."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Manifest:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for record in read_records(self.path):
                self.records[record["job"]] = record
            self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A killed writer can leave a half line; end it so the next record starts clean."""
        with self.path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")

    def latest(self, job_key: str) -> dict[str, Any] | None:
        return self.records.get(job_key)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable before returning."""
        self.records[record["job"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self, order: Iterable[str] | None = None) -> None:
        """Rewrite with one line per job (``order`` first, then any others), atomically."""
        keys = list(order or [])
        keys += [k for k in self.records if k not in keys]
        temp = self.path.with_name(self.path.name + ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            for key in keys:
                if key in self.records:
                    handle.write(json.dumps(self.records[key]) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every well-formed line; a line cut short by a killed process is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "job" in record:
            records.append(record)
    return records
