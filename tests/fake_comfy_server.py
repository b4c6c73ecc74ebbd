"""A small ComfyUI stand-in for client tests: real HTTP and WebSocket on 127.0.0.1.

It speaks the parts of ComfyUI's protocol the batch client uses, with the same shapes as
ComfyUI's ``server.py`` / ``execution.py``: ``GET /object_info``, ``POST /prompt`` (200 with
``node_errors`` when only some outputs validate, 400 with ``error`` + ``node_errors``),
``GET/POST /queue`` (items ``[number, prompt_id, prompt, extra_data, outputs]``),
``/history[/{id}]``, ``/view``, ``POST /upload/image`` (same-name same-content dedupe),
``/interrupt`` and ``/ws?clientId=`` with execution_start / execution_cached / executing /
progress / executed / execution_success / execution_error / execution_interrupted and the final
``executing {node: None}``.

Nodes are fakes: ``FakeSampler`` "renders" by sleeping ``step_s`` per step and ``FakeSaveImage``
writes a JSON file of the inputs that reached it, so a test can tell which job made which file.
It runs in its own thread and event loop; ``restart()`` forgets queue and history (as a real
restart does) and ``die()`` stops answering for good.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import socket
import threading
import time
import uuid
from pathlib import Path

from aiohttp import WSMsgType, web

SEED_MAX = 0xFFFFFFFFFFFFFFFF

OBJECT_INFO = {
    "FakeModelLoader": {
        "input": {"required": {"ckpt_name": [["tiny.safetensors", "small.safetensors"], {}]}},
        "output": ["MODEL"], "output_name": ["MODEL"], "output_node": False},
    "FakeTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True}],
                               "clip": ["CLIP", {}]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"], "output_node": False},
    "FakeClipLoader": {
        "input": {"required": {"clip_name": [["clip.safetensors"], {}]}},
        "output": ["CLIP"], "output_name": ["CLIP"], "output_node": False},
    "FakeSampler": {
        "input": {"required": {
            "model": ["MODEL", {}], "positive": ["CONDITIONING", {}],
            "seed": ["INT", {"default": 0, "min": 0, "max": SEED_MAX}],
            "steps": ["INT", {"default": 3, "min": 1, "max": 100}],
            "cfg": ["FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0}],
            "sampler_name": [["euler", "dpmpp_2m"], {}]},
            "optional": {"image": ["IMAGE", {}]}},
        "output": ["IMAGE"], "output_name": ["IMAGE"], "output_node": False},
    "FakeLoadImage": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "output": ["IMAGE"], "output_name": ["IMAGE"], "output_node": False},
    "FakeSaveImage": {
        "input": {"required": {"images": ["IMAGE", {}],
                               "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
        "output": [], "output_name": [], "output_node": True},
}
for _name, _info in OBJECT_INFO.items():
    _info.update(name=_name, display_name=_name.replace("Fake", "Fake "), description="",
                 python_module="nodes", category="testing",
                 output_is_list=[False] * len(_info["output"]),
                 input_order={k: list(v) for k, v in _info["input"].items()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Interrupted(Exception):
    pass


class ExecutionFailed(Exception):
    def __init__(self, node_id, node_type, message):
        super().__init__(message)
        self.node_id, self.node_type = node_id, node_type


class FakeComfyServer:
    def __init__(self, root: Path, *, step_s: float = 0.01, port: int | None = None):
        self.root = Path(root)
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.step_s = step_s
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # What tests look at:
        self.accepted: list[str] = []       # prompt ids queued (POST /prompt 200)
        self.executed: list[dict] = []      # {"prompt_id", "inputs"} per finished prompt
        self.deleted: list[str] = []
        self.interrupts: list[str | None] = []
        self.prompt_posts = 0
        self.uploads = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = None
        self._site = None
        self._reset_state()

    # --- control from the test thread ---------------------------------------------------------
    def start(self) -> "FakeComfyServer":
        self._thread.start()
        self._call(self._start())
        return self

    def restart(self, down_s: float = 0.2) -> None:
        """Like a process restart: queue, history and connections are gone, files stay."""
        self._call(self._restart(down_s))

    def die(self) -> None:
        self._call(self._stop())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # --- state --------------------------------------------------------------------------------
    def _reset_state(self):
        self.queue: list[tuple] = []
        self.running: dict | None = None
        self.history: dict[str, dict] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.number = 0
        self.interrupt_flag = False
        self.wake = None
        self.counter = 0

    async def _start(self):
        self.wake = asyncio.Event()
        app = web.Application()
        app.add_routes([
            web.get("/object_info", self.get_object_info),
            web.post("/prompt", self.post_prompt),
            web.get("/queue", self.get_queue), web.post("/queue", self.post_queue),
            web.get("/history", self.get_history), web.get("/history/{id}", self.get_history_id),
            web.get("/view", self.get_view), web.post("/upload/image", self.post_upload),
            web.post("/interrupt", self.post_interrupt), web.get("/ws", self.websocket)])
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        self._worker = asyncio.ensure_future(self._work())

    async def _stop(self):
        if self._runner is None:
            return
        self._worker.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()
        await self._runner.cleanup()
        self._runner = None

    async def _restart(self, down_s):
        await self._stop()
        self._reset_state()
        await asyncio.sleep(down_s)
        await self._start()

    # --- events -------------------------------------------------------------------------------
    async def send(self, event, data, sid):
        ws = self.sockets.get(sid)
        if ws is not None and not ws.closed:
            try:
                await ws.send_json({"type": event, "data": data})
            except ConnectionError:
                pass

    def queue_info(self):
        return {"exec_info": {"queue_remaining": len(self.queue) + (1 if self.running else 0)}}

    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        await ws.send_json({"type": "status", "data": {"status": self.queue_info(), "sid": sid}})
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                self.sockets.pop(sid, None)
        return ws

    # --- HTTP ---------------------------------------------------------------------------------
    async def get_object_info(self, request):
        return web.json_response(self._object_info())

    def _object_info(self):
        info = json.loads(json.dumps(OBJECT_INFO))
        files = sorted(p.name for p in self.input_dir.iterdir() if p.is_file())
        info["FakeLoadImage"]["input"]["required"]["image"][0] = files
        return info

    async def post_prompt(self, request):
        self.prompt_posts += 1
        body = await request.json()
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "", "extra_info": {}},
                                      "node_errors": {}}, status=400)
        info = self._object_info()
        for node_id, node in prompt.items():
            if node.get("class_type") not in info:
                return web.json_response({"error": {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {node.get('class_type')} does not exist.",
                    "details": f"Node ID '#{node_id}'", "extra_info": {}}, "node_errors": {}},
                    status=400)
        outputs = [i for i, n in prompt.items() if info[n["class_type"]]["output_node"]]
        node_errors, good = {}, []
        for output in outputs:
            errors = self._validate(prompt, output, info)
            if errors:
                for node_id, reasons in errors.items():
                    entry = node_errors.setdefault(node_id, {
                        "errors": reasons, "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"]})
                    entry["dependent_outputs"].append(output)
            else:
                good.append(output)
        if not good:
            return web.json_response({"error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
                "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        self.number += 1
        heapq.heappush(self.queue, (self.number, prompt_id, prompt, extra, good))
        self.accepted.append(prompt_id)
        self.wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": self.number,
                                  "node_errors": node_errors})

    def _validate(self, prompt, node_id, info, seen=None):
        """Required inputs, min/max and list combos, like ComfyUI; plus a rule the client
        cannot know: a filename_prefix containing "forbidden" is refused."""
        seen = seen if seen is not None else {}
        if node_id in seen:
            return {}
        seen[node_id] = True
        node = prompt[node_id]
        spec = info[node["class_type"]]["input"]
        errors, reasons = {}, []
        for section in ("required", "optional"):
            for name, (kind, options) in (spec.get(section) or {}).items():
                if name not in node["inputs"]:
                    if section == "required":
                        reasons.append({"type": "required_input_missing",
                                        "message": "Required input is missing", "details": name,
                                        "extra_info": {"input_name": name}})
                    continue
                value = node["inputs"][name]
                if isinstance(value, list):
                    errors.update(self._validate(prompt, str(value[0]), info, seen))
                    continue
                if "min" in options and value < options["min"]:
                    reasons.append({"type": "value_smaller_than_min",
                                    "message": f"Value {value} smaller than min of {options['min']}",
                                    "details": name, "extra_info": {
                                        "input_name": name, "input_config": [kind, options],
                                        "received_value": value}})
                if "max" in options and value > options["max"]:
                    reasons.append({"type": "value_bigger_than_max",
                                    "message": f"Value {value} bigger than max of {options['max']}",
                                    "details": name, "extra_info": {
                                        "input_name": name, "input_config": [kind, options],
                                        "received_value": value}})
                if isinstance(kind, list) and value not in kind:
                    reasons.append({"type": "value_not_in_list", "message": "Value not in list",
                                    "details": f"{name}: '{value}' not in {kind}",
                                    "extra_info": {"input_name": name,
                                                   "input_config": [kind, options],
                                                   "received_value": value}})
                if name == "filename_prefix" and "forbidden" in str(value):
                    reasons.append({"type": "custom_validation_failed",
                                    "message": "Custom validation failed for node",
                                    "details": "filename_prefix - this prefix is not allowed",
                                    "extra_info": {"input_name": name}})
        if reasons:
            errors[node_id] = reasons
        return errors

    async def get_queue(self, request):
        running = [list(self.running["item"])] if self.running else []
        return web.json_response({"queue_running": running,
                                  "queue_pending": [list(item) for item in sorted(self.queue)]})

    async def post_queue(self, request):
        body = await request.json()
        if body.get("clear"):
            self.queue = []
        for prompt_id in body.get("delete", []):
            self.deleted.append(prompt_id)
            self.queue = [item for item in self.queue if item[1] != prompt_id]
            heapq.heapify(self.queue)
        return web.Response(status=200)

    async def post_interrupt(self, request):
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id")
        self.interrupts.append(prompt_id)
        if self.running and (prompt_id is None or self.running["item"][1] == prompt_id):
            self.interrupt_flag = True
        return web.Response(status=200)

    async def get_history(self, request):
        return web.json_response(self.history)

    async def get_history_id(self, request):
        prompt_id = request.match_info["id"]
        return web.json_response({prompt_id: self.history[prompt_id]}
                                 if prompt_id in self.history else {})

    async def get_view(self, request):
        name = request.query.get("filename", "")
        if not name or name.startswith("/") or ".." in name:
            return web.Response(status=400)
        folder = {"output": self.output_dir, "input": self.input_dir}.get(
            request.query.get("type", "output"))
        path = folder / request.query.get("subfolder", "") / name if folder else None
        if path is None or not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes(), content_type="application/octet-stream")

    async def post_upload(self, request):
        post = await request.post()
        image = post.get("image")
        if image is None or not image.filename:
            return web.Response(status=400)
        data = image.file.read()
        self.uploads += 1
        name = image.filename
        stem, dot, ext = name.rpartition(".")
        number = 1
        while (self.input_dir / name).exists():
            if hashlib.sha256((self.input_dir / name).read_bytes()).digest() == \
                    hashlib.sha256(data).digest():
                break
            name = f"{stem} ({number}).{ext}"
            number += 1
        else:
            (self.input_dir / name).write_bytes(data)
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    # --- execution ----------------------------------------------------------------------------
    async def _work(self):
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            item = heapq.heappop(self.queue)
            self.running = {"item": item}
            self.interrupt_flag = False
            await self._execute(item)
            self.running = None

    async def _execute(self, item):
        number, prompt_id, prompt, extra, outputs = item
        sid = extra.get("client_id")
        messages = []

        async def event(kind, data, record=True):
            data = {**data, "prompt_id": prompt_id}
            if record:
                messages.append([kind, {**data, "timestamp": int(time.time() * 1000)}])
            await self.send(kind, data, sid)

        await event("execution_start", {})
        await event("execution_cached", {"nodes": []})
        ui_outputs, values, executed = {}, {}, []
        status = "success"
        try:
            for node_id in self._order(prompt, outputs):
                node = prompt[node_id]
                await event("executing", {"node": node_id, "display_node": node_id}, False)
                values[node_id] = await self._run_node(node_id, node, values, event)
                if node["class_type"] == "FakeSaveImage":
                    ui_outputs[node_id] = values[node_id]
                    await event("executed", {"node": node_id, "display_node": node_id,
                                             "output": values[node_id]}, False)
                executed.append(node_id)
            await event("execution_success", {})
        except Interrupted as stop:
            status = "error"
            await event("execution_interrupted", {"node_id": str(stop), "node_type": "FakeSampler",
                                                  "executed": executed})
        except ExecutionFailed as failure:
            status = "error"
            await event("execution_error", {
                "node_id": failure.node_id, "node_type": failure.node_type, "executed": executed,
                "exception_message": str(failure), "exception_type": "RuntimeError",
                "traceback": [], "current_inputs": {}, "current_outputs": []})
        self.history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra, outputs], "outputs": ui_outputs,
            "status": {"status_str": status, "completed": status == "success",
                       "messages": messages}, "meta": {}}
        if status == "success":
            self.executed.append({"prompt_id": prompt_id, "values": values})
        await self.send("executing", {"node": None, "prompt_id": prompt_id}, sid)

    def _order(self, prompt, outputs):
        order = []

        def visit(node_id):
            if node_id in order:
                return
            for value in prompt[node_id]["inputs"].values():
                if isinstance(value, list):
                    visit(str(value[0]))
            order.append(node_id)

        for output in sorted(outputs):
            visit(output)
        return order

    async def _run_node(self, node_id, node, values, event):
        inputs = {name: values[str(v[0])] if isinstance(v, list) else v
                  for name, v in node["inputs"].items()}
        kind = node["class_type"]
        if kind == "FakeSampler":
            if inputs["steps"] == 13:
                raise ExecutionFailed(node_id, kind, "13 steps is unlucky")
            for step in range(1, inputs["steps"] + 1):
                await asyncio.sleep(self.step_s)
                if self.interrupt_flag:
                    raise Interrupted(node_id)
                await event("progress", {"value": step, "max": inputs["steps"], "node": node_id},
                            False)
            return {key: inputs[key] for key in ("seed", "steps", "cfg", "sampler_name")} | {
                "text": inputs["positive"], "image": inputs.get("image")}
        if kind == "FakeLoadImage":
            path = self.input_dir / inputs["image"]
            if not path.is_file():
                raise ExecutionFailed(node_id, kind, f"no such input file {inputs['image']}")
            return hashlib.sha256(path.read_bytes()).hexdigest()
        if kind == "FakeTextEncode":
            return inputs["text"]
        if kind == "FakeSaveImage":
            self.counter += 1
            name = f"{inputs['filename_prefix']}_{self.counter:05d}_.png"
            (self.output_dir / name).write_text(json.dumps(inputs["images"], sort_keys=True))
            return {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
        return kind


def ui_workflow() -> dict:
    """A workflow for the fake nodes in the exact format ComfyUI's editor saves (version 0.4):
    a Reroute on the model link, a Note, a muted second save node, a seed with its
    control_after_generate value, widget inputs listed as sockets, a group and ``extra``."""
    return {
        "id": "0b7c9a51-6a8e-4d0f-9a43-6f4c2c1d2e11", "revision": 0,
        "last_node_id": 8, "last_link_id": 6,
        "nodes": [
            {"id": 1, "type": "FakeModelLoader", "pos": [40, 120], "size": [315, 58],
             "flags": {}, "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1], "slot_index": 0}],
             "properties": {"Node name for S&R": "FakeModelLoader", "cnr_id": "comfy-core",
                            "ver": "0.3.64"},
             "widgets_values": ["tiny.safetensors"]},
            {"id": 2, "type": "FakeClipLoader", "pos": [40, 260], "size": [315, 58],
             "flags": {}, "order": 1, "mode": 0, "inputs": [],
             "outputs": [{"name": "CLIP", "type": "CLIP", "links": [2], "slot_index": 0}],
             "properties": {"Node name for S&R": "FakeClipLoader"},
             "widgets_values": ["clip.safetensors"]},
            {"id": 3, "type": "FakeTextEncode", "pos": [400, 260], "size": [400, 200],
             "flags": {}, "order": 3, "mode": 0, "title": "Positive",
             "inputs": [{"name": "clip", "type": "CLIP", "link": 2},
                        {"name": "text", "type": "STRING", "widget": {"name": "text"},
                         "link": None}],
             "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3],
                          "slot_index": 0}],
             "properties": {"Node name for S&R": "FakeTextEncode"},
             "widgets_values": ["a red ball rolls to the left"]},
            {"id": 4, "type": "FakeSampler", "pos": [850, 120], "size": [315, 262],
             "flags": {}, "order": 4, "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": 6},
                        {"name": "positive", "type": "CONDITIONING", "link": 3},
                        {"name": "image", "shape": 7, "type": "IMAGE", "link": None},
                        {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None},
                        {"name": "steps", "type": "INT", "widget": {"name": "steps"},
                         "link": None}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4, 5], "slot_index": 0}],
             "properties": {"Node name for S&R": "FakeSampler"},
             "widgets_values": [42, "randomize", 3, 5.5, "euler"]},
            {"id": 5, "type": "FakeSaveImage", "pos": [1200, 120], "size": [300, 300],
             "flags": {}, "order": 5, "mode": 0, "title": "Save",
             "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
             "outputs": [], "properties": {"Node name for S&R": "FakeSaveImage"},
             "widgets_values": ["batch"]},
            {"id": 6, "type": "Note", "pos": [40, 480], "size": [300, 100], "flags": {},
             "order": 2, "mode": 0, "inputs": [], "outputs": [], "properties": {},
             "widgets_values": ["Sweeps: change the seed and cfg from the command line."],
             "color": "#432", "bgcolor": "#653"},
            {"id": 7, "type": "FakeSaveImage", "pos": [1200, 480], "size": [300, 300],
             "flags": {}, "order": 6, "mode": 2, "title": "Muted save",
             "inputs": [{"name": "images", "type": "IMAGE", "link": 5}],
             "outputs": [], "properties": {"Node name for S&R": "FakeSaveImage"},
             "widgets_values": ["muted"]},
            {"id": 8, "type": "Reroute", "pos": [600, 120], "size": [75, 26], "flags": {},
             "order": 2, "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
             "outputs": [{"name": "", "type": "MODEL", "links": [6], "slot_index": 0}],
             "properties": {"showOutputText": False, "horizontal": False}},
        ],
        "links": [[1, 1, 0, 8, 0, "*"], [2, 2, 0, 3, 0, "CLIP"], [3, 3, 0, 4, 1, "CONDITIONING"],
                  [4, 4, 0, 5, 0, "IMAGE"], [5, 4, 0, 7, 0, "IMAGE"], [6, 8, 0, 4, 0, "MODEL"]],
        "groups": [{"id": 1, "title": "Sampling", "bounding": [830, 40, 700, 500],
                    "color": "#3f789e", "font_size": 24, "flags": {}}],
        "config": {},
        "extra": {"ds": {"scale": 0.83, "offset": [12.5, -30.0]}, "frontendVersion": "1.28.7"},
        "version": 0.4,
    }
