"""The store's one owner: a thread that runs every SQLite operation, fed by a bounded queue.

SQLite connections must not be shared between threads, and a lock that the event loop also
takes turns a slow fsync into a frozen loop (lamps, commands and ``edgegw status`` all wait).
So the event loop never touches the store: it hands a job to this thread and awaits the
answer with a deadline. A job that outlives the deadline keeps running (SQLite cannot be
interrupted mid-fsync); the caller learns that the store is stalled, and may keep the returned
future to learn how the job really ended.

::

    loop:   submit(job) ──queue (bounded)──> thread: job(store) ──> concurrent Future
            await call(job, timeout) ─────────────────────────────────────┘ (or StoreError STALLED)

A full queue is refused at once (``StoreError`` with fault ``stalled``): the caller keeps its
data in memory instead of piling up jobs behind a frozen card.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.errors import StoreError, StoreFault
from gateway.store import Store

__all__ = ["StoreWorker"]

# every line carries the journal field EDGEGW_COMPONENT=store (gateway/journal.py)
log = logging.LoggerAdapter(logging.getLogger("edgegw.store"), {"component": "store"})

T = TypeVar("T")
_Job = tuple[str, Callable[[], Any], "concurrent.futures.Future[Any]"]


class StoreWorker:
    """A daemon thread that owns :attr:`store` and runs jobs in order (see the module
    docstring). ``store`` is set and used by jobs only, never by the event loop."""

    def __init__(self, *, name: str = "edgegw-store", queue_max: int = 64) -> None:
        self.name = name
        self.store: Store | None = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None
        # read from the loop (plain attribute reads are atomic): what runs now, since when
        self.current: str | None = None
        self.busy_since: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish the queued jobs and end; True if it ended in time (a thread
        stuck in a frozen filesystem is left behind: it is a daemon)."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            self._jobs.put(None, timeout=max(0.0, timeout))
        except queue.Full:
            return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        ended = not self._thread.is_alive()
        if ended:
            self._thread = None
        return ended

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds the current job has been running (0 when idle)."""
        since = self.busy_since
        return 0.0 if since is None else max(0.0, (now or time.monotonic()) - since)

    # ------------------------------------------------------------------ jobs
    def submit(self, what: str, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue ``fn`` (run in the thread); never blocks. StoreError(STALLED) when the queue
        is full."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._thread is None:
            raise StoreError(f"store: {what}: the store thread is not running",
                             fault=StoreFault.UNAVAILABLE)
        try:
            self._jobs.put_nowait((what, fn, fut))
        except queue.Full:
            raise StoreError(f"store: {what}: {self._jobs.maxsize} operations are already "
                             f"waiting behind {self.current!r} "
                             f"({self.stalled_for():.0f} s)", fault=StoreFault.STALLED) from None
        return fut

    def submit_store(self, what: str, fn: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Like :meth:`submit`, with the open store (StoreError UNAVAILABLE when none)."""
        def job() -> T:
            if self.store is None:
                raise StoreError(f"store: {what}: no store is open", fault=StoreFault.UNAVAILABLE)
            return fn(self.store)
        return self.submit(what, job)

    async def call(self, what: str, fn: Callable[[Store], T], *, within: float) -> T:
        """Run ``fn(store)`` in the thread and return its result; StoreError(STALLED) if it has
        not finished within ``within`` seconds (it still runs, later)."""
        return await wait(self.submit_store(what, fn), what=what, within=within)

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                break
            what, fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            self.current, self.busy_since = what, time.monotonic()
            try:
                result = fn()
            except BaseException as err:     # delivered to whoever awaits the job
                fut.set_exception(err)
            else:
                fut.set_result(result)
            finally:
                self.current, self.busy_since = None, None
        store, self.store = self.store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()


async def wait(fut: concurrent.futures.Future[T], *, what: str, within: float) -> T:
    """Await a job's future for at most ``within`` seconds without cancelling the job."""
    afut = asyncio.wrap_future(fut)
    done, _ = await asyncio.wait({afut}, timeout=within)
    if not done:
        # nobody may await it later: retrieve its outcome so asyncio does not complain
        afut.add_done_callback(_retrieve)
        raise StoreError(f"store: {what}: no answer within {within:g} s (the card or its "
                         "filesystem is stalled)", fault=StoreFault.STALLED)
    return afut.result()


def _retrieve(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()
