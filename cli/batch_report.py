"""What a running batch shows on the terminal: an overall bar and each server's current step."""
from __future__ import annotations

import sys


class Reporter:
    """An overall line (done/total) and each server's current job and step, on stderr."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.current: dict[str, str] = {}

    def log(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self.status()

    def step(self, server: str, text: str) -> None:
        self.current[server] = text
        self.status()

    def status(self) -> None:
        if not self.tty:
            return
        bar_width = 20
        filled = int(bar_width * (self.done + self.failed) / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (bar_width - filled)}] {self.done}/{self.total} done"
                + (f", {self.failed} failed" if self.failed else "")
                + "".join(f" | {text}" for text in self.current.values() if text))
        self.stream.write("\r\033[K" + line[:200])
        self.stream.flush()
