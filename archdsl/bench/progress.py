"""Progress lines for a long benchmark run (quiet when not a terminal)."""

from __future__ import annotations

import math
import shutil
import sys
import time

def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """A progress bar on a terminal; a line every ~5% elsewhere (logs, pipes, CI); never raises."""

    def __init__(self, total: int, stream=None, width: int = 28, enabled: bool = True):
        self.total = max(1, int(total))
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = _isatty(self.stream)
        self.done = 0
        self.start = time.monotonic()
        self._every = max(1, math.ceil(self.total / 20))
        self._drawn = False

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError, AttributeError):
            self.enabled = False  # a closed or broken stream: stop drawing, keep measuring

    def line(self, done: int, label: str) -> str:
        frac = min(1.0, done / self.total)
        filled = int(round(frac * self.width))
        elapsed = time.monotonic() - self.start
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {done:>{len(str(self.total))}}/{self.total} "
                f"{100 * frac:3.0f}% {elapsed:6.1f}s  {label}")

    def step(self, label: str = "") -> None:
        self.done += 1
        if self.tty:
            text = self.line(self.done, label)
            cols = shutil.get_terminal_size((100, 20)).columns
            self._write("\r" + text[: cols - 1].ljust(cols - 1))
            self._drawn = True
        elif self.done % self._every == 0 or self.done >= self.total:
            self._write(self.line(self.done, label) + "\n")

    def message(self, text: str) -> None:
        """A line of text above the bar."""
        if self.tty and self._drawn:
            cols = shutil.get_terminal_size((100, 20)).columns
            self._write("\r" + " " * (cols - 1) + "\r")
            self._drawn = False
        self._write(text + "\n")

    def close(self) -> None:
        if self.tty and self._drawn:
            self._write("\n")
            self._drawn = False
