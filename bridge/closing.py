"""One context manager for everything that holds connections until ``close``."""

from types import TracebackType
from typing import Self


class Closing:
    """``with`` calls ``close`` on the way out: sinks, sink readers and the contract kit's
    harnesses hold clients that a failing caller must still release."""

    def close(self) -> None:
        """Release what is held; idempotent. Classes holding nothing keep this one."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
