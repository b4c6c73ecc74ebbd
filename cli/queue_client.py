"""Queue a batch of jobs on one or more ComfyUI servers, with resume.

Python API::

    from comfyui_videodit.cli.queue_client import queue_batch
    result = queue_batch("t2v.json", servers=["http://127.0.0.1:8188"],
                         sets=["Sampler.cfg=[4, 6]"], seeds="1-8", output_dir="renders")

How it works: everything is prepared before anything is queued (the workflow converted with
the server's ``/object_info``, every job's overrides resolved and every job's prompt validated),
so a typo in ``--set`` costs nothing. Each server gets one prompt at a time (ComfyUI runs one
prompt at a time anyway, and a job not yet sent can still go to another server). A job's
prompt id is chosen here and written to the manifest *before* the POST, so whatever happens to
the client or a server the job can be found again: on its server's ``/history`` (collect it),
``/queue`` (wait for it) or nowhere (the server restarted: queue it again).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .batch_report import Reporter
from .comfy_server import ComfyServer, PromptRejected, ServerUnreachable, SubmitUnclear
from .downloads import file_entries, place_new_file
from .jobs import SEED_KEY, Job, build_jobs, load_jobs_file, parse_seeds
from .manifest import FINISHED, Manifest, now_iso, parse_iso
from .node_info import combo_options, input_spec
from .overrides import (OverrideError, Target, apply_overrides, coerce_value, parse_sweep_value,
                        resolve_target, seed_targets, split_assignment)
from .validate import ValidationFailed, check_inputs, validate_prompt
from .workflow_format import to_api_prompt, workflow_kind

OUTPUT_KINDS = ("output",)  # /view types downloaded (PreviewImage writes "temp": not a result)


class BatchError(RuntimeError):
    """The batch cannot start (no server, bad workflow, bad jobs); nothing was queued."""


@dataclass
class PreparedJob:
    job: Job
    key: str
    prompt: dict
    overrides: dict[str, Any]
    uploads: dict[tuple[str, str], Path] = field(default_factory=dict)  # (node, input) -> file


@dataclass
class BatchResult:
    records: list[dict]  # the manifest's last record of each job that has one
    manifest_path: Path
    total: int
    cancelled: bool = False

    @property
    def succeeded(self) -> list[dict]:
        return [r for r in self.records if r.get("status") == FINISHED]

    @property
    def unfinished_count(self) -> int:
        return self.total - len(self.succeeded)


# --- preparation (nothing is queued here) -------------------------------------------------------

def prepare_jobs(workflow: dict, object_info: dict, *, jobs_rows: Sequence[dict] | None = None,
                 sets: Sequence[str] = (), seeds: Sequence[int] | None = None,
                 base_dir: Path | None = None) -> tuple[list[PreparedJob], list[str]]:
    """Every job's API prompt, validated. Raises OverrideError / ValidationFailed on any problem."""
    conversion = to_api_prompt(workflow, object_info)
    base = conversion.prompt
    sweeps = []
    for text in sets:
        target, raw = split_assignment(text)
        sweeps.append((target, parse_sweep_value(raw)))
    jobs = build_jobs(jobs_rows, sweeps, seeds)
    seed_widgets = seed_targets(base, object_info) if seeds else []
    if seeds and not seed_widgets:
        raise OverrideError("--seeds: the workflow has no seed input (an INT named seed or "
                            "noise_seed holding a value) to set")
    targets: dict[str, Target] = {}
    seen_keys: dict[str, int] = {}
    validated: set[str] = set()
    node_json: dict[int, tuple[dict, str]] = {}
    prepared, problems = [], []
    for job in jobs:
        values: dict[Target, Any] = {}
        overrides: dict[str, Any] = {}
        uploads: dict[tuple[str, str], Path] = {}
        for label, raw in job.assignments.items():
            if label == SEED_KEY:
                for target in seed_widgets:
                    values[target] = coerce_value(raw, target, base, object_info)
                overrides["seed"] = raw
                continue
            if label not in targets:
                targets[label] = resolve_target(label, base, object_info)
            target = targets[label]
            value = coerce_value(raw, target, base, object_info)
            local = _local_file_for(value, target, base, object_info, base_dir)
            if local is not None:
                uploads[(target.node_id, target.input)] = local
            values[target] = value
            overrides[label] = value
        prompt = apply_overrides(base, values)
        # Jobs that differ only in their seed are validated in full once; for the others
        # only the seed values are checked (a 300,000-seed batch prepares in seconds).
        same_but_seed = json.dumps([{k: v for k, v in job.assignments.items() if k != SEED_KEY},
                                    sorted(map(list, uploads))], sort_keys=True, default=str)
        if same_but_seed in validated:
            found = check_inputs(prompt, object_info,
                                 [(t.node_id, t.input) for t in seed_widgets])
        else:
            check_info = _with_uploads_allowed(object_info, prompt, uploads)
            found = validate_prompt(prompt, check_info)
            validated.add(same_but_seed)
        problems.extend(f"job {job.name}: {problem}" for problem in found)
        prepared.append(PreparedJob(job, _job_key(job, prompt, seen_keys, node_json), prompt,
                                    overrides, uploads))
    if problems:
        raise ValidationFailed(_dedupe(problems), header="the batch is not valid")
    return prepared, conversion.notes


def _job_key(job: Job, prompt: dict, seen: dict[str, int],
             node_json: dict[int, tuple[dict, str]] | None = None) -> str:
    """A job's identity for resuming: what it sends (and its row's name), not its position, so
    rows added to a jobs file do not make finished jobs run again. Identical jobs are told
    apart by how many came before.

    The text hashed is ``json.dumps({"row": ..., "prompt": ...}, sort_keys=True)``, built node by
    node so that nodes shared between jobs are serialised once (``node_json``)."""
    cache = {} if node_json is None else node_json
    parts = []
    for node_id in sorted(prompt):
        node = prompt[node_id]
        cached = cache.get(id(node))
        if cached is None or cached[0] is not node:
            cached = (node, json.dumps(node, sort_keys=True))
            cache[id(node)] = cached
        parts.append(f"{json.dumps(node_id)}: {cached[1]}")
    content = f'{{"prompt": {{{", ".join(parts)}}}, "row": {json.dumps(job.row_name)}}}'
    occurrence = seen.get(content, 0)
    seen[content] = occurrence + 1
    return hashlib.sha256(f"{content}#{occurrence}".encode()).hexdigest()[:16]


def _dedupe(lines: list[str], limit: int = 40) -> list[str]:
    unique = list(dict.fromkeys(lines))
    return unique[:limit] + ([f"... and {len(unique) - limit} more"] if len(unique) > limit else [])


def _local_file_for(value, target: Target, prompt, object_info, base_dir: Path | None):
    """A combo value that is not a choice but names a local file is an input to upload."""
    _, kind, options = input_spec(object_info[prompt[target.node_id]["class_type"]], target.input)
    choices = combo_options(kind, options)
    if choices is None or not isinstance(value, str) or value in choices:
        return None
    for folder in (Path.cwd(), base_dir):
        if folder is not None and (folder / value).expanduser().is_file():
            return (folder / value).expanduser().resolve()
    return None


def _with_uploads_allowed(object_info: dict, prompt: dict, uploads: dict) -> dict:
    """Definitions where each file to upload counts as a valid choice of its input."""
    if not uploads:
        return object_info
    info = json.loads(json.dumps(object_info))
    for (node_id, name) in uploads:
        section, kind, options = input_spec(info[prompt[node_id]["class_type"]], name)
        value = prompt[node_id]["inputs"][name]
        entry = info[prompt[node_id]["class_type"]]["input"][section][name]
        if isinstance(kind, list):
            entry[0] = kind + [value]
        else:
            options.setdefault("options", []).append(value)
    return info


# --- the batch ----------------------------------------------------------------------------------

class BatchRunner:
    def __init__(self, prepared: list[PreparedJob], servers: list[ComfyServer], manifest: Manifest,
                 output_dir: Path, *, extra_data: dict | None = None, poll_s: float = 2.0,
                 server_wait_s: float = 60.0, reporter: Reporter | None = None,
                 on_record: Callable[[dict], None] | None = None,
                 cancel_event: asyncio.Event | None = None):
        self.prepared = prepared
        self.servers = servers
        self.manifest = manifest
        self.output_dir = output_dir
        self.extra_data = extra_data
        self.poll_s = poll_s
        self.server_wait_s = server_wait_s
        self.reporter = reporter or Reporter(len(prepared))
        self.on_record = on_record
        self.pending: list[PreparedJob] = []
        self.attached: dict[str, list[tuple[PreparedJob, str]]] = {s.url: [] for s in servers}
        self.in_flight: dict[str, tuple[PreparedJob, str]] = {}  # server url -> (job, prompt id)
        self.unfinished = 0
        self.changed = asyncio.Event()
        self.cancelled = False
        self.cancel_event = cancel_event or asyncio.Event()
        self.skipped: dict[str, list[str]] = {}
        self.losses: dict[str, int] = {}
        self.max_losses = 3

    # records -----------------------------------------------------------------------------------
    def _record(self, item: PreparedJob, status: str, **fields) -> dict:
        previous = self.manifest.latest(item.key) or {}
        record = {"job": item.key, "name": item.job.name, "index": item.job.index,
                  "overrides": item.overrides, "server": None, "prompt_id": None,
                  "status": status, "submitted_at": None, "started_at": None,
                  "finished_at": None, "seconds": None, "outputs": [], "error": None}
        for carried in ("server", "prompt_id", "submitted_at", "started_at"):
            if previous.get("status") == "submitted" and previous.get(carried) is not None:
                record[carried] = previous[carried]
        record.update(fields)
        self.manifest.write(record)
        if self.on_record:
            self.on_record(record)
        return record

    # scheduling --------------------------------------------------------------------------------
    async def run(self) -> None:
        by_url = {s.url: s for s in self.servers}
        for item in self.prepared:
            latest = self.manifest.latest(item.key)
            if latest and latest.get("status") == FINISHED:
                self.reporter.done += 1
                continue
            self.unfinished += 1
            if latest and latest.get("status") == "submitted" and latest.get("server") in by_url:
                self.attached[latest["server"]].append((item, latest["prompt_id"]))
            else:
                if latest and latest.get("status") == "submitted":
                    self._record(item, "lost", error=f"was queued on {latest.get('server')}, "
                                                     "which is not in this run's --server list")
                self.pending.append(item)
        if self.reporter.done:
            self.reporter.log(f"resuming: {self.reporter.done} of {len(self.prepared)} jobs "
                              "already done")
        workers = [asyncio.create_task(self._worker(server)) for server in self.servers]
        everything = asyncio.gather(*workers)
        stop = asyncio.create_task(self.cancel_event.wait())
        await asyncio.wait([everything, stop], return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():  # Ctrl-C: stop the workers, then clean up on the servers
            self.cancelled = True
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with contextlib.suppress(BaseException):
                everything.exception()  # retrieved, so asyncio does not warn about it
            await self._cancel_in_flight()
        else:
            everything.result()  # a worker's unexpected error surfaces here
        stop.cancel()

    async def _next_job(self, server: ComfyServer):
        while True:
            if self.attached[server.url]:
                return self.attached[server.url].pop(0)
            if self.pending:
                return self.pending.pop(0), None
            if self.unfinished == 0:
                return None
            self.changed.clear()
            await self.changed.wait()

    def _requeue(self, item: PreparedJob) -> None:
        self.pending.insert(0, item)
        self.changed.set()

    def _fail_run(self, item, label: str, server, started, error: str) -> None:
        """Record a job the server ran and reported as failed (or answered unreadably)."""
        self._record(item, "failed", started_at=started, finished_at=now_iso(),
                     seconds=self._seconds(item, started), error=error)
        self.reporter.failed += 1
        self._finish()
        self.reporter.log(f"{label}: failed on {server.url}: {error}")

    def _lost(self, item: PreparedJob, error: str) -> None:
        """Queue a lost job again, unless it keeps getting lost (a job that crashes its
        server would otherwise take every server down in turn, forever)."""
        self.losses[item.key] = self.losses.get(item.key, 0) + 1
        if self.losses[item.key] >= self.max_losses:
            self._record(item, "failed", finished_at=now_iso(),
                         error=f"lost {self.losses[item.key]} times, last: {error}. The server "
                               "may be crashing on this job; check its log")
            self.reporter.failed += 1
            self._finish()
            return
        self._record(item, "lost", error=error)
        self.reporter.log(f"{item.job.name}: queued again")
        self._requeue(item)

    def _finish(self) -> None:
        self.unfinished -= 1
        self.changed.set()

    async def _worker(self, server: ComfyServer) -> None:
        name = server.url
        while True:
            if not await self._wait_alive(server):
                # Give this server's attached jobs to the others.
                for item, _ in self.attached[server.url]:
                    self._lost(item, f"{name} is unreachable")
                self.attached[server.url] = []
                self.reporter.step(name, "")
                return
            picked = await self._next_job(server)
            if picked is None:
                self.reporter.step(name, "")
                return
            item, prompt_id = picked
            try:
                await self._run_job(server, item, prompt_id)
            except ServerUnreachable as err:
                self.reporter.log(f"{item.job.name}: {name} stopped answering")
                self._lost(item, str(err))
            except Exception as err:  # noqa: BLE001 - e.g. output dir full: this job only
                self._record(item, "failed", finished_at=now_iso(),
                             error=f"client error: {type(err).__name__}: {err}")
                self.reporter.failed += 1
                self._finish()
                self.reporter.log(f"{item.job.name}: client error: {err}")
            # Not in a finally: on Ctrl-C the in-flight prompt must stay known, to cancel it.
            self.in_flight.pop(server.url, None)

    async def _wait_alive(self, server: ComfyServer) -> bool:
        deadline = time.monotonic() + self.server_wait_s
        warned = False
        while True:
            if self.unfinished == 0:
                return True  # nothing left: let the worker see that and stop
            if await server.alive():
                if warned:
                    self.reporter.log(f"{server.url} is back")
                return True
            if not warned:
                self.reporter.log(f"{server.url} is not answering; its jobs go to the other "
                                  f"servers (waiting up to {self.server_wait_s:.0f} s for it)")
                warned = True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(min(self.poll_s, 1.0))

    async def _run_job(self, server: ComfyServer, item: PreparedJob, prompt_id: str | None):
        label = item.job.name
        if prompt_id is None:
            prompt = await self._with_uploads(server, item)
            prompt_id = str(uuid.uuid4())
            events = server.subscribe(prompt_id)
            self._record(item, "submitted", server=server.url, prompt_id=prompt_id,
                         submitted_at=now_iso(), started_at=None)
            self.in_flight[server.url] = (item, prompt_id)
            try:
                skipped = await server.submit(prompt, prompt_id, self.extra_data)
            except PromptRejected as err:
                server.unsubscribe(prompt_id)
                self._record(item, "rejected", error="; ".join(str(p) for p in err.problems))
                self.reporter.failed += 1
                self._finish()
                self.reporter.log(f"{label}: rejected by {server.url}:\n" + "\n".join(
                    f"  - {p}" for p in err.problems))
                return
            except SubmitUnclear as err:
                # A 500 or a reply that is not JSON: the id is ours, so ask the server
                # whether it queued the prompt before deciding.
                try:
                    state, _ = await server.prompt_state(prompt_id)
                except ServerUnreachable:
                    state = "unknown"
                if state in ("missing", "unknown"):
                    server.unsubscribe(prompt_id)
                    self.reporter.log(f"{label}: {err} (the prompt is not on the server)")
                    self._lost(item, f"{err}; the prompt was not queued")
                    return
                self.reporter.log(f"{label}: {err}, but the prompt is {state} there; "
                                  "following it")
                skipped = []
            except ServerUnreachable:
                # It may have been queued before the connection broke: the prompt id is ours,
                # so following it finds out (and a job is never queued twice on a blip).
                skipped = []
            if skipped:
                self.skipped[item.key] = [str(p) for p in skipped]
                self.reporter.log(f"{label}: {server.url} skipped some outputs:\n" + "\n".join(
                    f"  - {p}" for p in skipped))
        else:
            events = server.subscribe(prompt_id)
            self.in_flight[server.url] = (item, prompt_id)
        try:
            outcome, history, started = await self._follow(server, item, prompt_id, events)
        finally:
            server.unsubscribe(prompt_id)
        if outcome == "missing":
            self.reporter.log(f"{label}: {server.url} lost the prompt (restarted?)")
            self._lost(item, f"prompt {prompt_id} vanished from {server.url} (restarted?)")
            return
        malformed = _malformed_history(history)
        if malformed:
            self._fail_run(item, label, server, started,
                           f"the server's /history entry for prompt {prompt_id} is malformed: "
                           f"{malformed}")
            return
        status = history.get("status") or {}
        if status.get("status_str") == "error" or not status.get("completed", True):
            self._fail_run(item, label, server, started,
                           _history_error(history) or "the prompt failed")
            return
        outputs = await self._download(server, item, history)
        extra = {}
        if item.key in self.skipped:  # outputs the server refused while running the rest
            extra["skipped_outputs"] = self.skipped.pop(item.key)
        record = self._record(item, FINISHED, started_at=started, finished_at=now_iso(),
                              seconds=self._seconds(item, started), outputs=outputs, **extra)
        self.reporter.done += 1
        self._finish()
        self.reporter.log(f"{label}: done on {server.url} in {record['seconds']} s -> "
                          + (", ".join(outputs) if outputs else "no output files"))

    def _seconds(self, item: PreparedJob, started: str | None) -> float | None:
        """Seconds from the start of execution (else from submission) until now."""
        previous = self.manifest.latest(item.key) or {}
        start = started or previous.get("started_at") or previous.get("submitted_at")
        return round(max(time.time() - parse_iso(start), 0.0), 2) if start else None

    async def _with_uploads(self, server: ComfyServer, item: PreparedJob) -> dict:
        if not item.uploads:
            return item.prompt
        prompt = json.loads(json.dumps(item.prompt))
        for (node_id, name), path in item.uploads.items():
            prompt[node_id]["inputs"][name] = await server.upload(path)
        return prompt

    async def _follow(self, server, item, prompt_id, events):
        """Wait for the prompt to end. Events give progress; polling ``/history`` and
        ``/queue`` is the ground truth (events can be missed across reconnects)."""
        started = None
        unreachable_since = None
        label = item.job.name
        self.reporter.step(server.url, f"{label}: queued")
        while True:
            # asyncio.wait, not wait_for: wait_for can swallow a cancellation (Python 3.11).
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait([getter], timeout=self.poll_s)
            if not done:
                getter.cancel()
                try:
                    state, history = await server.prompt_state(prompt_id)
                except ServerUnreachable:
                    # A busy or restarting server: keep asking for a while before giving up.
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since > self.server_wait_s:
                        raise
                    continue
                unreachable_since = None
                if state == "done":
                    return "done", history, started
                if state == "missing":
                    return "missing", None, started
                if state == "running" and started is None:
                    started = now_iso()
                continue
            kind, data = getter.result()
            if kind == "execution_start":
                started = now_iso()
                self.reporter.step(server.url, f"{label}: started")
            elif kind == "executing" and data.get("node") is not None:
                self.reporter.step(server.url, f"{label}: {_node_label(item, data['node'])}")
            elif kind == "progress":
                self.reporter.step(server.url, f"{label}: {_node_label(item, data.get('node'))} "
                                               f"step {data.get('value')}/{data.get('max')}")
            elif kind in ("execution_error", "execution_interrupted") or (
                    kind == "executing" and data.get("node") is None):
                history = await self._history_when_ready(server, prompt_id)
                if history is not None:
                    return "done", history, started
                if kind == "execution_error":  # the server answered the event but no history
                    return "done", {"status": {"status_str": "error", "completed": False,
                                               "messages": [[kind, data]]}}, started

    async def _history_when_ready(self, server, prompt_id, attempts: int = 20):
        for _ in range(attempts):
            history = await server.history(prompt_id)
            if history is not None:
                return history
            await asyncio.sleep(0.05)
        return None

    async def _download(self, server: ComfyServer, item: PreparedJob, history: dict) -> list[str]:
        written = []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for node_id, ui in (history.get("outputs") or {}).items():
            for entry in file_entries(ui):
                if entry.get("type", "output") not in OUTPUT_KINDS:
                    continue
                name = f"{item.job.name}_{Path(entry['filename']).name}"
                temp = self.output_dir / f".{name}.{uuid.uuid4().hex[:8]}.part"
                try:
                    await server.download(entry["filename"], entry.get("subfolder", ""),
                                          entry.get("type", "output"), temp)
                except BaseException:
                    temp.unlink(missing_ok=True)
                    raise
                path = place_new_file(self.output_dir, name, temp)
                written.append(str(path.relative_to(self.output_dir)))
        return written

    async def _cancel_in_flight(self) -> None:
        """Ctrl-C: remove what this client queued, interrupt what runs, record it."""
        for url, (item, prompt_id) in list(self.in_flight.items()):
            server = next(s for s in self.servers if s.url == url)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.cancel(prompt_id), timeout=5)
            self._record(item, "cancelled", error="cancelled by the user (Ctrl-C)")
        self.in_flight.clear()


def _node_label(item: PreparedJob, node_id) -> str:
    node = item.prompt.get(str(node_id)) or {}
    name = (node.get("_meta") or {}).get("title") or node.get("class_type")
    return f"#{node_id} {name}" if name else f"#{node_id}"


def _malformed_history(history) -> str | None:
    """What is wrong with a ``/history`` entry's shape, or None when it can be read."""
    if not isinstance(history, dict):
        return f"expected an object, got {type(history).__name__}"
    status, outputs = history.get("status"), history.get("outputs")
    if status is not None and not isinstance(status, dict):
        return f"'status' is a {type(status).__name__}, not an object"
    if isinstance(status, dict) and not isinstance(status.get("messages") or [], list):
        return "'status.messages' is not a list"
    if isinstance(status, dict) and not all(
            isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)
            for m in status.get("messages") or []):
        return "'status.messages' holds entries that are not [event, object]"
    if outputs is not None and not (isinstance(outputs, dict) and all(
            isinstance(ui, dict) for ui in outputs.values())):
        return "'outputs' is not an object of node outputs"
    return None


def _history_error(history: dict) -> str | None:
    for event, data in (history.get("status") or {}).get("messages") or []:
        if event == "execution_error":
            return (f"#{data.get('node_id')} {data.get('node_type')}: "
                    f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}")
        if event == "execution_interrupted":
            return f"interrupted at #{data.get('node_id')} {data.get('node_type')}"
    return None


# --- entry points -------------------------------------------------------------------------------

async def queue_batch_async(workflow: dict | str | Path, servers: Sequence[str], *,
                            jobs_file: str | Path | None = None, sets: Sequence[str] = (),
                            seeds: str | Sequence[int] | None = None,
                            output_dir: str | Path = "videodit_batch",
                            manifest_path: str | Path | None = None, poll_s: float = 2.0,
                            server_wait_s: float = 60.0, stream=None,
                            on_record: Callable[[dict], None] | None = None,
                            cancel_event: asyncio.Event | None = None,
                            dry_run: bool = False,
                            on_queueing: Callable[[], None] | None = None,
                            request_timeout_s: float = 120.0) -> BatchResult:
    """Prepare and run a batch; set ``cancel_event`` to cancel it (what Ctrl-C does).
    ``dry_run`` prepares and validates every job, lists them, and queues nothing."""
    if not servers:
        raise BatchError("give at least one --server URL (e.g. http://127.0.0.1:8188)")
    if isinstance(workflow, (str, Path)):
        from .workflow_format import load_workflow

        workflow = load_workflow(workflow)
    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    manifest = Manifest(manifest_path or output_dir / "manifest.jsonl")
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else (list(seeds) if seeds else None)
    rows = load_jobs_file(jobs_file) if jobs_file else None
    client_id = uuid.uuid4().hex
    clients = [ComfyServer(url, client_id, request_timeout_s=request_timeout_s)
               for url in dict.fromkeys(servers)]
    try:
        for client in clients:
            await client.open()
        object_info = None
        for client in clients:
            try:
                object_info = await client.object_info()
                break
            except ServerUnreachable:
                continue
        if object_info is None:
            raise BatchError("no server answered GET /object_info: "
                             + ", ".join(c.url for c in clients))
        prepared, notes = prepare_jobs(
            workflow, object_info, jobs_rows=rows, sets=sets, seeds=seed_list,
            base_dir=Path(jobs_file).parent if jobs_file else None)
        reporter = Reporter(len(prepared), stream)
        for note in notes:
            reporter.log(f"note: {note}")
        if dry_run:
            return _plan(prepared, manifest, reporter)
        if on_queueing is not None:
            on_queueing()
        extra = {"extra_pnginfo": {"workflow": workflow}} if workflow_kind(workflow) == "ui" \
            else None
        runner = BatchRunner(prepared, clients, manifest, output_dir, extra_data=extra,
                             poll_s=poll_s, server_wait_s=server_wait_s, reporter=reporter,
                             on_record=on_record, cancel_event=cancel_event)
        await runner.run()
        keys = [item.key for item in prepared]
        manifest.compact(keys)
        records = [manifest.latest(k) for k in keys if manifest.latest(k) is not None]
        return BatchResult(records, manifest.path, len(prepared), runner.cancelled)
    finally:
        for client in clients:
            await client.close()


def _check_output_dir(folder: Path) -> None:
    """A folder for outputs and the manifest, or a BatchError before anything is queued."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BatchError(f"--output-dir {folder}: {existing} is a file, not a folder; "
                         "choose another --output-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BatchError(f"--output-dir {folder}: {existing} is not writable; choose another "
                         "--output-dir")


def _plan(prepared: list[PreparedJob], manifest: Manifest, reporter: Reporter) -> BatchResult:
    records = []
    for item in prepared:
        latest = manifest.latest(item.key)
        state = "done" if latest and latest.get("status") == FINISHED else "to run"
        reporter.log(f"{item.job.name} ({state}): "
                     + json.dumps(item.overrides, ensure_ascii=False))
        if latest:
            records.append(latest)
    return BatchResult(records, manifest.path, len(prepared))


def queue_batch(workflow, servers, **kwargs) -> BatchResult:
    """Blocking form of :func:`queue_batch_async` (for scripts)."""
    return asyncio.run(queue_batch_async(workflow, servers, **kwargs))


def run_from_args(args) -> int:
    """``python -m comfyui_videodit queue ...``; Ctrl-C cancels what this client queued."""

    async def main() -> BatchResult:
        loop = asyncio.get_running_loop()
        cancel = asyncio.Event()

        def on_signal(sig):
            sys.stderr.write("\ncancelling: removing this batch's prompts from the servers "
                             "(press Ctrl-C again to quit at once)...\n")
            cancel.set()
            loop.remove_signal_handler(sig)  # a second Ctrl-C interrupts for real

        def cancel_on_signals():
            # Only once queueing starts: until then Ctrl-C interrupts preparation at once
            # (the loop's handlers would wait for it to finish).
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, on_signal, sig)

        return await queue_batch_async(
            args.workflow, args.server, jobs_file=args.jobs, sets=args.set or [],
            seeds=args.seeds, output_dir=args.output_dir, manifest_path=args.manifest,
            poll_s=args.poll, server_wait_s=args.server_wait, cancel_event=cancel,
            dry_run=args.dry_run, on_queueing=cancel_on_signals,
            request_timeout_s=args.timeout)

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    # asyncio.run's own Ctrl-C handler only cancels the main task, which a long preparation
    # (a million seeds) never notices; this one stops it at once. Queueing installs its own.
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        previous = signal.signal(signal.SIGINT, interrupt)
    try:
        result = asyncio.run(main())
    except (BatchError, OverrideError, ValidationFailed, ValueError) as err:
        sys.stderr.write(f"error: {err}\nNothing was queued.\n")
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.stderr.write("\ncancelled before anything was queued.\n")
        return 130
    finally:
        with contextlib.suppress(ValueError, NameError):
            signal.signal(signal.SIGINT, previous)
    done, total = len(result.succeeded), result.total
    if args.dry_run:
        sys.stderr.write(f"{total} jobs, {done} already done; nothing was queued (dry run)\n")
        return 0
    sys.stderr.write(f"\n{done}/{total} jobs done; manifest: {result.manifest_path}\n")
    if result.cancelled:
        sys.stderr.write("cancelled; run the same command again to resume.\n")
        return 130
    if result.unfinished_count:
        sys.stderr.write(f"{result.unfinished_count} jobs did not finish; run the same command "
                         "again to retry them.\n")
        return 1
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("workflow", help="workflow JSON (UI format as saved, or API format)")
    parser.add_argument("--server", action="append", required=True, metavar="URL",
                        help="ComfyUI server URL; repeat for several servers")
    parser.add_argument("--jobs", metavar="FILE",
                        help="jobs.csv (columns NODE.INPUT, optional name) or jobs.jsonl")
    parser.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE",
                        help="override an input for every job; a JSON list [a, b] sweeps it")
    parser.add_argument("--seeds", metavar="RANGE", help="one job per seed, e.g. 1-8 or 1,5,9")
    parser.add_argument("--output-dir", default="videodit_batch", metavar="DIR",
                        help="where outputs and the manifest go (default: videodit_batch)")
    parser.add_argument("--manifest", metavar="FILE",
                        help="manifest path (default: OUTPUT_DIR/manifest.jsonl)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every job and list them; queue nothing")
    parser.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                        help="how often to check a server's queue and history (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="longest one API call to a server may take, however slowly it "
                             "answers (default 120; downloads must keep 16 KB/s instead)")
    parser.add_argument("--server-wait", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for a server that stopped answering (default 60)")
