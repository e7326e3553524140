"""State that several worker processes would share, behind small ports.

Each port has an in-process implementation here; Redis-backed ones live in
``bot/core/redis_shared.py``. Pick with :func:`bot.app.build_shared_state`.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol


class EventBus(Protocol):
    """Publish/subscribe of small JSON-able events (live pushes to web chats and consoles)."""

    async def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]: ...


class InMemoryEventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._queue_size = queue_size

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        for queue in list(self._subs.get(topic, ())):
            if queue.full():  # a stalled subscriber loses its oldest event, never blocks others
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subs[topic].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subs[topic].discard(queue)
            if not self._subs[topic]:
                self._subs.pop(topic, None)

    def subscriber_count(self, topic: str) -> int:
        return len(self._subs.get(topic, ()))


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``period`` seconds, allowing a burst of ``burst`` (default limit)."""

    limit: float
    period: float
    burst: float | None = None

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.limit)

    @property
    def per_second(self) -> float:
        return self.limit / self.period


class RateLimiter(Protocol):
    """Token buckets shared by every sender of one bot.

    ``reserve`` takes one token from each named bucket atomically, or none, and returns how many
    seconds to wait before trying again (0.0 = taken). ``penalize`` empties a bucket for
    ``seconds`` (after a platform's 429).
    """

    async def reserve(self, buckets: list[tuple[str, Rate]]) -> float: ...

    async def penalize(self, bucket: str, rate: Rate, seconds: float) -> None: ...


class InMemoryRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated_at)
        self._blocked_until: dict[str, float] = {}

    def _tokens(self, name: str, rate: Rate, now: float) -> float:
        tokens, updated = self._state.get(name, (rate.capacity, now))
        return min(rate.capacity, tokens + (now - updated) * rate.per_second)

    async def reserve(self, buckets: list[tuple[str, Rate]]) -> float:
        now = self._clock()
        wait = 0.0
        current: dict[str, float] = {}
        for name, rate in buckets:
            blocked = self._blocked_until.get(name, 0.0) - now
            tokens = self._tokens(name, rate, now)
            current[name] = tokens
            if blocked > 0:
                wait = max(wait, blocked)
            if tokens < 1.0 - 1e-9:
                wait = max(wait, (1.0 - tokens) / rate.per_second)
        if wait > 0:
            return max(wait, 1e-4)  # below clock resolution a waiter would spin
        for name, _rate in buckets:
            self._state[name] = (max(0.0, current[name] - 1.0), now)
        return 0.0

    async def penalize(self, bucket: str, rate: Rate, seconds: float) -> None:
        now = self._clock()
        self._blocked_until[bucket] = max(self._blocked_until.get(bucket, 0.0), now + seconds)
        self._state[bucket] = (0.0, now + seconds)


class Lock(Protocol):
    """A named mutual-exclusion lock with a lease (for leadership and critical sections)."""

    def hold(self, name: str, *, ttl: float = 30.0) -> Any: ...


class InMemoryLock:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def hold(self, name: str, *, ttl: float = 30.0) -> AsyncIterator[None]:
        async with self._locks[name]:
            yield


@dataclass(slots=True)
class SharedState:
    events: EventBus
    rate_limiter: RateLimiter
    locks: Lock


def in_memory_shared_state(clock: Callable[[], float] = time.monotonic) -> SharedState:
    return SharedState(
        events=InMemoryEventBus(), rate_limiter=InMemoryRateLimiter(clock), locks=InMemoryLock()
    )
