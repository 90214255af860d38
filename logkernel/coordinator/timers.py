"""Deadlines for the group coordinator: session expiry, rebalance timeouts, join delays.

One daemon thread sleeps until the earliest deadline and runs its callback. Callbacks run
on that thread and must be short (they take the coordinator's lock and change state).
Cancelling is O(1): the entry is flagged and skipped when it comes up, the usual lazy
deletion of a binary heap, so a heartbeat that moves a member's deadline costs a flag and a
push rather than a search.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("logkernel.coordinator")


class Timer:
    """A scheduled callback; ``cancel()`` stops it from running if it has not yet."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Runs callbacks at monotonic deadlines on one background thread."""

    def __init__(self, name: str = "logkernel-group-timers",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule(self, delay_seconds: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock() + max(delay_seconds, 0.0), callback)
        with self._condition:
            if self._stopped:
                return timer  # never runs: the coordinator is closing
            first = not self._heap or timer.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (timer.deadline, next(self._sequence), timer))
            if first:
                self._condition.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= self.clock():
                        break
                    wait = self._heap[0][0] - self.clock() if self._heap else None
                    self._condition.wait(wait)
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
            try:
                timer.callback()
            except Exception:  # a bug in a callback must not stop every later deadline
                log.exception("group coordinator timer callback failed")

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._heap.clear()
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
