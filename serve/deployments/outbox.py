"""The queues between a batch and the callers it serves: each caller's items, an error, the end.

A batch (an LLM session, a decoder batch) runs in a task of its own and serves several callers; each
caller reads its own ``asyncio.Queue`` (its outbox) with :func:`drain`, which yields the items the batch
puts there, raises an exception put there, and stops at :func:`end`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

# The end of one outbox. Only this module's functions may name it: Serve pickles the deployment classes
# by value, so their methods would see a copy of it.
_END = object()


def end(outbox: asyncio.Queue) -> None:
    """Mark the end of ``outbox``: its reader stops after the items already there."""
    outbox.put_nowait(_END)


def fail(outbox: asyncio.Queue, error: BaseException) -> None:
    """End ``outbox`` with ``error`` (its reader raises it)."""
    outbox.put_nowait(error)
    outbox.put_nowait(_END)


async def drain(outbox: asyncio.Queue) -> AsyncIterator[Any]:
    """Items of ``outbox`` until its end; an exception put there is raised."""
    while (item := await outbox.get()) is not _END:
        if isinstance(item, BaseException):
            raise item
        yield item
