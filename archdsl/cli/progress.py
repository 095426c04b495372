"""Progress for the long commands (compile, export, run --interpret): which stage, how long so far.

tqdm draws it on stderr, and only when stderr is a terminal: piped or captured output stays
exactly what the command prints. A stage can take tens of seconds with no event to report
(the ONNX exporter, Triton's interpreter), so a small thread redraws the clock while it runs.
"""

from __future__ import annotations

import sys
import threading
from typing import IO


class Stages:
    """`with Stages("compile", ["elaborate", "optimize", "write"]) as p: p.step("elaborate") ...`"""

    def __init__(self, command: str, stages: list[str], stream: IO[str] | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.command, self.total, self.done = command, len(stages), 0
        self._bar = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "Stages":
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, file=self.stream, leave=False, dynamic_ncols=True,
                             bar_format="{desc} {bar:12} {n_fmt}/{total_fmt} [{elapsed}]", desc=self.command)
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def step(self, name: str) -> None:
        """Begin stage `name` (the previous one is done)."""
        if self._bar is None:
            return
        if self.done:
            self._bar.update(1)
        self.done += 1
        self._bar.set_description_str(f"{self.command}: {name}")

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            self._bar.refresh()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Count:
    """A `done/total` bar for work counted as it goes (`compile --tune`'s signatures), quiet when
    not a terminal: `with Count("tune b32") as bar: network_tuning(..., progress=bar)`, which
    calls `bar(done, total, label)`.  No bar until there is something to count."""

    def __init__(self, command: str, stream: IO[str] | None = None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.command = command
        self._bar = None

    def __enter__(self) -> "Count":
        return self

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True,
                             bar_format="{desc} {bar:12} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
        self._bar.n = done
        self._bar.set_description_str(f"{self.command}: {label}" if label else self.command, refresh=False)
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
