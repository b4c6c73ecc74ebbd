"""One ComfyUI server over its HTTP API and ``/ws`` event stream (aiohttp, imported lazily).

Only what the batch client needs: ``/object_info``, ``/upload/image``, ``POST /prompt``,
``/queue``, ``/history/{id}``, ``/view``, ``/interrupt`` and the per-client WebSocket. Events for
a prompt are delivered to whoever subscribed to its id (subscribe *before* submitting: a fast
prompt can finish before the POST returns).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .validate import Problem, problems_from_node_errors, problems_from_server_error


class ServerUnreachable(ConnectionError):
    """The server did not answer (down, restarting, or the network is gone)."""


class PromptRejected(Exception):
    """``POST /prompt`` refused the prompt (HTTP 400); carries the per-node problems."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class SubmitUnclear(ServerUnreachable):
    """``POST /prompt`` answered neither 200 with JSON nor 400 (a 500, a proxy error page,
    a reply that is not JSON): the prompt may or may not be queued."""

    def __init__(self, url: str, status: int, body: Any):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else json.dumps(body)
        self.status, self.body = status, " ".join(text.split())[:300]
        super().__init__(f"{url}/prompt answered HTTP {status}: {self.body or '(empty body)'}")


# A download slower than this on average (after the first timeout_s) is treated as a stalled
# server: sock_read alone never fires while a server trickles a byte at a time.
MIN_DOWNLOAD_BYTES_PER_S = 16 * 1024


class ComfyServer:
    def __init__(self, url: str, client_id: str, *, timeout_s: float = 30.0,
                 request_timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.client_id = client_id
        self.timeout_s = timeout_s
        # Whole API calls (not downloads) end by this deadline, however slowly bytes arrive.
        self.request_timeout_s = request_timeout_s
        self._session = None
        self._listeners: dict[str, asyncio.Queue] = {}
        self._ws_task: asyncio.Task | None = None
        self._uploaded: dict[str, str] = {}  # local content hash -> name on this server

    # --- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout_s,
                                              sock_read=self.timeout_s))
        if self._ws_task is None:
            self._ws_task = asyncio.create_task(self._follow_events())

    async def close(self) -> None:
        if self._ws_task is not None:
            self._ws_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ws_task
            self._ws_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- HTTP ----------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, **kwargs) -> tuple[int, Any]:
        import aiohttp

        kwargs.setdefault("timeout", aiohttp.ClientTimeout(
            total=self.request_timeout_s, connect=self.timeout_s, sock_read=self.timeout_s))
        try:
            async with self._session.request(method, self.url + path, **kwargs) as response:
                body = await response.read()
                if response.content_type == "application/json":
                    try:
                        return response.status, json.loads(body or b"null")
                    except ValueError:  # said JSON, is not: the caller sees the raw bytes
                        return response.status, body
                return response.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise ServerUnreachable(f"{self.url} did not answer {method} {path}: "
                                    f"{type(err).__name__} {err}") from None

    async def _json(self, method: str, path: str, **kwargs) -> Any:
        status, body = await self._request(method, path, **kwargs)
        if status >= 500 or status == 404:
            raise ServerUnreachable(f"{self.url}{path} answered HTTP {status}")
        return body

    async def alive(self) -> bool:
        try:
            await self._json("GET", "/queue")
            return True
        except ServerUnreachable:
            return False

    async def object_info(self) -> dict:
        info = await self._json("GET", "/object_info")
        if not isinstance(info, dict):
            raise ServerUnreachable(f"{self.url}/object_info did not return node definitions")
        return info

    async def upload(self, path: Path) -> str:
        """Upload an input file under a name derived from its content; returns that name.

        The same bytes always get the same name, and ComfyUI answers an upload whose name and
        content already exist with the existing file, so uploading twice stores one file.
        """
        import aiohttp

        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._uploaded:
            return self._uploaded[digest]
        name = f"{path.stem[:40]}-{digest[:12]}{path.suffix.lower()}"
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("type", "input")
        form.add_field("subfolder", "")
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200 or not isinstance(body, dict) or "name" not in body:
            raise ServerUnreachable(f"{self.url}: uploading {path} failed (HTTP {status})")
        stored = body["name"] if not body.get("subfolder") else f"{body['subfolder']}/{body['name']}"
        self._uploaded[digest] = stored
        return stored

    async def submit(self, prompt: dict, prompt_id: str, extra_data: dict | None = None
                     ) -> list[Problem]:
        """Queue a prompt; returns problems of outputs the server skipped (HTTP 200 with
        ``node_errors``); raises :class:`PromptRejected` on HTTP 400."""
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, answer = await self._request("POST", "/prompt", json=body)
        if status == 400:
            raise PromptRejected(problems_from_server_error(
                answer if isinstance(answer, dict) else {"error": str(answer)}, prompt))
        if status != 200 or not isinstance(answer, dict):
            raise SubmitUnclear(self.url, status, answer)
        node_errors = answer.get("node_errors")
        return problems_from_node_errors(node_errors if isinstance(node_errors, dict) else {},
                                         prompt)

    async def queue_ids(self) -> tuple[list[str], list[str]]:
        """Prompt ids running and pending (queue items are ``[number, id, prompt, extra, outputs]``)."""
        body = await self._json("GET", "/queue")

        def ids(key):
            items = body.get(key) if isinstance(body, dict) else None
            return [item[1] for item in items or [] if isinstance(item, list) and len(item) > 1]

        return ids("queue_running"), ids("queue_pending")

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's ``/history`` entry (whatever JSON the server sent), None when absent."""
        body = await self._json("GET", f"/history/{prompt_id}")
        return body.get(prompt_id) if isinstance(body, dict) else None

    async def prompt_state(self, prompt_id: str) -> tuple[str, dict | None]:
        """``("done", history)``, ``("running"|"pending", None)`` or ``("missing", None)``."""
        entry = await self.history(prompt_id)
        if entry is not None:
            return "done", entry
        running, pending = await self.queue_ids()
        if prompt_id in running:
            return "running", None
        if prompt_id in pending:
            return "pending", None
        entry = await self.history(prompt_id)  # it may have finished between the two calls
        return ("done", entry) if entry is not None else ("missing", None)

    async def download(self, filename: str, subfolder: str, kind: str, dest: Path) -> None:
        """Stream one output file (``GET /view``) into ``dest``; videos can be large."""
        import aiohttp

        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        try:
            async with self._session.get(self.url + "/view", params=params) as response:
                if response.status != 200:
                    raise ServerUnreachable(f"{self.url}/view {subfolder}/{filename} answered "
                                            f"HTTP {response.status}")
                started, received = time.monotonic(), 0
                with dest.open("wb") as handle:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        handle.write(chunk)
                        received += len(chunk)
                        elapsed = time.monotonic() - started
                        if elapsed > self.timeout_s and \
                                received < MIN_DOWNLOAD_BYTES_PER_S * elapsed:
                            raise ServerUnreachable(
                                f"{self.url} sends {filename} too slowly ({received} bytes in "
                                f"{elapsed:.0f} s); treating it as stalled")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            if isinstance(err, ServerUnreachable):
                raise
            raise ServerUnreachable(f"{self.url} broke off sending {filename}: "
                                    f"{type(err).__name__} {err}") from None

    async def cancel(self, prompt_id: str) -> None:
        """Remove the prompt from the queue and stop it if it is the running one. The interrupt
        is sent only when it is ours that runs: servers older than the targeted
        ``{"prompt_id"}`` interrupt stop whatever runs."""
        await self._request("POST", "/queue", json={"delete": [prompt_id]})
        running, _ = await self.queue_ids()
        if prompt_id in running:
            await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # --- events --------------------------------------------------------------------------------
    def subscribe(self, prompt_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._listeners[prompt_id] = queue
        return queue

    def unsubscribe(self, prompt_id: str) -> None:
        self._listeners.pop(prompt_id, None)

    async def _follow_events(self) -> None:
        """Keep a ``/ws?clientId=`` connection open; reconnect after a drop. Events are hints:
        the batch also polls ``/history`` and ``/queue``, so a lost event only costs time."""
        import aiohttp

        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        while True:
            try:
                async with self._session.ws_connect(ws_url, heartbeat=20) as ws:
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._dispatch(message.data)
                        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except asyncio.CancelledError:
                raise
            except Exception:  # down or restarting: try again shortly
                pass
            await asyncio.sleep(0.5)

    def _dispatch(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        data = message.get("data") or {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if prompt_id in self._listeners:
            self._listeners[prompt_id].put_nowait((message.get("type"), data))
