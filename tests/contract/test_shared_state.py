"""One contract suite for the shared-state ports, run against every implementation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.shared import (
    InMemoryEventBus,
    InMemoryLock,
    InMemoryRateLimiter,
    Rate,
)
from tests.conftest import REDIS_URL, requires_redis
from tests.fakes import ManualClock

IMPLS = ["memory", pytest.param("redis", marks=requires_redis)]


@pytest.fixture(params=IMPLS)
async def impl(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    clock = ManualClock(1_700_000_000.0)
    if request.param == "memory":
        yield {"limiter": InMemoryRateLimiter(clock), "bus": InMemoryEventBus(),
               "lock": InMemoryLock(), "clock": clock}
        return
    from redis.asyncio import Redis

    from bot.core.redis_shared import RedisEventBus, RedisLock, RedisRateLimiter

    redis = Redis.from_url(REDIS_URL)
    prefix = f"kztest:{uuid.uuid4().hex[:8]}:"
    yield {"limiter": RedisRateLimiter(redis, prefix=prefix, clock=clock),
           "bus": RedisEventBus(redis, prefix=prefix), "lock": RedisLock(redis, prefix=prefix,
                                                                         poll=0.005),
           "clock": clock}
    keys = await redis.keys(prefix + "*")
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_bucket_allows_burst_then_rate(impl):
    limiter, clock = impl["limiter"], impl["clock"]
    rate = Rate(2, 1.0, burst=3)
    results = [await limiter.reserve([("b", rate)]) for _ in range(4)]
    assert results[:3] == [0.0, 0.0, 0.0]
    assert results[3] == pytest.approx(0.5, abs=0.01)
    clock.advance(0.5)
    assert await limiter.reserve([("b", rate)]) == 0.0


async def test_reserve_is_all_or_nothing(impl):
    limiter = impl["limiter"]
    wide, narrow = Rate(100, 1.0), Rate(1, 1.0, burst=1)
    assert await limiter.reserve([("all", wide), ("chat", narrow)]) == 0.0
    assert await limiter.reserve([("all", wide), ("chat", narrow)]) > 0
    # The refused attempt took nothing from the wide bucket: 99 more fit.
    for _ in range(99):
        assert await limiter.reserve([("all", wide)]) == 0.0
    assert await limiter.reserve([("all", wide)]) > 0


async def test_penalize_blocks_for_retry_after(impl):
    limiter, clock = impl["limiter"], impl["clock"]
    rate = Rate(30, 1.0)
    await limiter.penalize("p", rate, 5)
    assert await limiter.reserve([("p", rate)]) == pytest.approx(5, abs=0.05)
    clock.advance(5.1)
    assert await limiter.reserve([("p", rate)]) == 0.0


async def test_event_bus_delivers_to_every_subscriber_of_a_topic(impl):
    bus = impl["bus"]
    got: dict[str, list[dict[str, Any]]] = {"a1": [], "a2": [], "b": []}
    ready = asyncio.Event()

    async def listen(name: str, topic: str, n: int) -> None:
        agen = bus.subscribe(topic)
        first = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.05)  # let the subscription register (Redis is asynchronous)
        ready.set()
        got[name].append(await first)
        while len(got[name]) < n:
            got[name].append(await agen.__anext__())
        await agen.aclose()

    tasks = [asyncio.create_task(listen("a1", "t:a", 2)),
             asyncio.create_task(listen("a2", "t:a", 2)),
             asyncio.create_task(listen("b", "t:b", 1))]
    await ready.wait()
    await asyncio.sleep(0.05)
    await bus.publish("t:a", {"n": 1, "text": "こんにちは"})
    await bus.publish("t:b", {"n": 9})
    await bus.publish("t:a", {"n": 2})
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert got["a1"] == got["a2"] == [{"n": 1, "text": "こんにちは"}, {"n": 2}]
    assert got["b"] == [{"n": 9}]


async def test_lock_is_mutually_exclusive(impl):
    lock = impl["lock"]
    inside = 0
    peak = 0

    async def worker() -> None:
        nonlocal inside, peak
        async with lock.hold("job", ttl=5):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(5))), 10)
    assert peak == 1
