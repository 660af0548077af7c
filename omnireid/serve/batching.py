"""Micro-batching: concurrent requests share one model call.

Requests put their preprocessed image on a queue and await a future. One worker task takes the
first waiting image, gathers whatever else arrives within ``max_wait_ms`` (up to ``max_batch``),
runs the model once in a dedicated thread (the event loop keeps serving), and resolves every
future with its row (or with the model's exception). The model is only ever called from that one
thread, so backends that are not thread safe are safe here.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import Counter
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


class MicroBatcher:
    def __init__(self, model: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 2.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.batch_sizes: Counter[int] = Counter()  # how many model calls had each batch size
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnireid-model")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, image: np.ndarray) -> np.ndarray:
        """The model's output row for one preprocessed image."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def _gather(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            waiting = [(image, future) for image, future in batch if not future.done()]  # drop cancelled requests
            if not waiting:
                continue
            images = np.stack([image for image, _ in waiting])
            try:
                outputs = await loop.run_in_executor(self._executor, self.model, images)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                logger.exception("the model failed on a batch of %d", len(waiting))
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batch_sizes[len(waiting)] += 1
            for row, (_, future) in enumerate(waiting):
                if not future.done():
                    future.set_result(outputs[row])
