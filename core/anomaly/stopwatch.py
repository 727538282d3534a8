"""Wall and CPU seconds per step of training and scoring, for `make anomaly-bench`.

Training and scoring take an optional `Stopwatch` and call `lap(watch, "step")` at the end
of each step; with `None` (what the product passes) nothing is measured.
"""

from __future__ import annotations

import time


class Stopwatch:
    def __init__(self) -> None:
        self.steps: dict[str, tuple[float, float]] = {}  # step -> (wall s, CPU s of all threads)
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        wall, cpu = self.steps.get(name, (0.0, 0.0))  # a step met again (one per merchant) adds up
        self.steps[name] = (wall + now[0] - self._last[0], cpu + now[1] - self._last[1])
        self._last = now


def lap(watch: Stopwatch | None, name: str) -> None:
    if watch is not None:
        watch.lap(name)
