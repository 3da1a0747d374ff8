"""The local-task worker threads: a few threads that run queued work items.

Threads sleep on a ``SimpleQueue`` and wake only when work arrives. ``parallel_for`` lets
the calling thread take part, so a worker that fans out never deadlocks waiting for
helpers: indices are claimed from one shared atomic counter.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Callable

from hal_core.backend import report_callback_error

_STOP = object()


class WorkerThreads:
    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-worker{i}", daemon=True)
            for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        self._queue.put((fn, arg))

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            fn, arg = item
            try:
                fn(arg)
            except BaseException as exc:  # work items report their own errors
                report_callback_error(exc, "a local-task work item", fn)

    def parallel_for(self, count: int, body: Callable[[int], None]) -> None:
        """Run ``body(i)`` for i in range(count) on this thread and idle workers; returns
        when all are done. The first exception is re-raised after every index ran."""
        if count <= 0:
            return
        if count == 1 or self.count == 0:
            for i in range(count):
                body(i)
            return
        job = _ParallelJob(count, body)
        for _ in range(min(self.count, count - 1)):
            self._queue.put((_ParallelJob.help, job))
        job.work()
        job.finished.wait()
        if job.error is not None:
            raise job.error

    def shutdown(self, timeout: float | None) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)


class _ParallelJob:
    __slots__ = ("count", "body", "next_index", "completed", "finished", "error")

    def __init__(self, count: int, body: Callable[[int], None]) -> None:
        self.count = count
        self.body = body
        self.next_index = itertools.count()
        self.completed = itertools.count(1)
        self.finished = threading.Event()
        self.error: BaseException | None = None

    @staticmethod
    def help(job: "_ParallelJob") -> None:
        job.work()

    def work(self) -> None:
        count = self.count
        body = self.body
        while True:
            i = next(self.next_index)
            if i >= count:
                return
            try:
                body(i)
            except BaseException as exc:
                if self.error is None:
                    self.error = exc
            if next(self.completed) == count:
                self.finished.set()
