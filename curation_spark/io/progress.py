"""Driver-side progress: a terminal progress bar and per-iteration log lines.

The barrier engine iterates inside one Spark stage, so the driver cannot count
iterations itself. In local mode (driver and tasks share a disk) task 0 appends one JSON
line per iteration to a file that a driver thread follows; on a cluster the bar shows
only when the stage ends and the per-iteration lines are logged from the returned
statistics.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)


def ensure_log_handler(level: int = logging.INFO) -> None:
    """Show the package's INFO lines (the progress of long steps) where nobody configured
    logging -- a plain script or a notebook, where Python would print only warnings --
    without touching a configuration someone made (any handler on the root logger or ours)."""
    ours = logging.getLogger("curation_spark")
    if logging.getLogger().handlers or ours.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
    if ours.level == logging.NOTSET or ours.level > level:
        ours.setLevel(level)
    logging.getLogger("py4j").setLevel(logging.WARNING)


def _bar_enabled() -> bool:
    if os.environ.get("CURATION_SPARK_PROGRESS", "").lower() in ("0", "false", "off"):
        return False
    return sys.stderr.isatty()


class IterationProgress:
    """Context manager showing ``stage: i/n iterations`` while a k-means runs."""

    def __init__(self, stage: str, n_iters: int, local: bool) -> None:
        self.stage = stage
        self.n_iters = n_iters
        self.path: str | None = None
        self._bar: tqdm | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = 0
        if local and _bar_enabled():
            fd, self.path = tempfile.mkstemp(prefix="curation-progress-", suffix=".jsonl")
            os.close(fd)

    def __enter__(self) -> IterationProgress:
        if _bar_enabled():
            from tqdm import tqdm

            self._bar = tqdm(total=self.n_iters, desc=f"{self.stage} k-means", unit="it", leave=False)
        if self.path:
            self._thread = threading.Thread(target=self._follow, daemon=True)
            self._thread.start()
        return self

    def update(self, entry: dict[str, Any]) -> None:
        """Advance by one iteration (called by the driver-side loop of the passes engine)."""
        self._seen += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(objective=f"{entry['objective']:.4g}", shift=f"{entry['shift']:.3g}")

    def _follow(self) -> None:
        assert self.path is not None
        offset = 0
        while not self._stop.wait(0.5):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
            except OSError:
                continue
            for line in chunk.splitlines():
                try:
                    self.update(json.loads(line))
                except (ValueError, KeyError):
                    pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._bar.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
