"""Send a blocking generator's chunks as a response without blocking the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import anyio
from starlette.concurrency import run_in_threadpool


async def chunks_in_threads(chunks: Generator[bytes]) -> AsyncIterator[bytes]:
    """Yield each chunk, produced in a worker thread; close the generator there too.

    Starlette's own wrapping of a sync iterator never closes it: a client that
    hangs up mid-download would leave the generator (and the IMAP session it
    holds) to the garbage collector, which would log out on the event loop.
    """
    try:
        while (chunk := await run_in_threadpool(next, chunks, None)) is not None:
            if chunk:
                yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(chunks.close)
