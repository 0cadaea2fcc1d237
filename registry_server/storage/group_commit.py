"""Group commit: writes that arrive while one is committing wait, then go into the database
together in one transaction, so N concurrent writers pay for one WAL flush instead of N.

The caller supplies `commit(batch) -> results` (one result or exception per item, in
order); `submit(item)` returns that item's result or raises its exception. A failing batch
transaction fails every item in it; one item failing inside a batch (its own savepoint)
fails only that item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        commit: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        max_batch: int,
        name: str = "group-commit",
        on_batch: Callable[[int], None] | None = None,
    ):
        self._commit = commit
        self.on_batch = on_batch  # called with each batch's size (the batch-size metric)
        self.max_batch = max_batch
        self.name = name
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=self.name)
        return await done

    async def _drain(self) -> None:
        """Commits the waiting items, a batch at a time, until none wait."""
        while self._pending:
            batch = [(i, f) for i, f in self._pending[: self.max_batch] if not f.done()]
            del self._pending[: self.max_batch]
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await self._commit([i for i, _ in batch])
            except asyncio.CancelledError:
                for _, f in batch:
                    f.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - the transaction failed: every item did
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(batch, results, strict=True):
                if f.done():
                    continue
                if isinstance(r, BaseException):
                    f.set_exception(r)
                else:
                    f.set_result(r)
