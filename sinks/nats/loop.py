"""An asyncio event loop on a thread of its own, driven from synchronous code.

nats-py is asyncio-only while the sink contract is synchronous and called from the pump's
thread. Each sink session owns one ``LoopThread`` (a named daemon thread running one loop);
the sink hands it coroutines with ``run`` and waits for their result with a deadline. Nothing
else touches the loop, so the client's callbacks and futures all live on that one thread and
the pump's thread only ever blocks on ``concurrent.futures`` results.

``stop`` cancels whatever is still running on the loop (a publish stuck on a paused server),
lets the cancellations finish, stops the loop, joins the thread and closes the loop: after it,
no thread and no loop of the session remain.
"""

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_STOP_SECONDS = 5.0


class LoopTimeoutError(Exception):
    """A coroutine handed to ``LoopThread.run`` did not finish in time; it was cancelled."""


class LoopThread:
    """One event loop on one named thread; see the module docstring."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """Run ``coroutine`` on the loop and return its result, raising what it raised;
        ``LoopTimeoutError`` (having cancelled it) when it takes longer than ``timeout``."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise LoopTimeoutError(f"no result within {timeout:g}s") from None

    def stop(self) -> None:
        """Cancel what still runs, stop the loop and join the thread; idempotent."""
        if not self._thread.is_alive():
            return
        try:
            self.run(_cancel_others(), timeout=_STOP_SECONDS)
        except LoopTimeoutError:
            pass  # tasks that ignore cancellation go down with the loop
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_SECONDS)


async def _cancel_others() -> None:
    """Cancel every task of the running loop but this one, and wait for them to end."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
