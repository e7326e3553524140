"""Group commit for inbound messages: many handlers' INSERTs share one transaction.

Under load each handler would otherwise pay for its own transaction (and SQLite serialises
them). A handler awaits ``add`` until its row is committed, so "stored before answered" holds;
when the queue is idle a row is written at once, so latency stays low at low load.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert

from models import Database, Message

log = logging.getLogger(__name__)


class BatchWriter:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._worker: asyncio.Task[None] | None = None

    async def add(self, values: dict[str, Any]) -> None:
        """Insert one ``messages`` row; returns once it is committed (raises if it failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((values, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="message-batch-writer")
        await future

    async def _run(self) -> None:
        while not self._queue.empty():
            batch = [self._queue.get_nowait()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write([values for values, _ in batch])
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
            except Exception:
                log.warning("batch insert failed; writing rows one by one",
                            extra={"rows": len(batch)})
                for values, future in batch:
                    try:
                        await self._write([values])
                        if not future.done():
                            future.set_result(None)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
            await asyncio.sleep(0)  # let more handlers enqueue: the next batch grows

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.session() as session:
            await session.execute(insert(Message), rows)

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
