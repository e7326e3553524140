"""Redis-backed implementations of the shared-state ports (``bot/core/shared.py``), for
running several worker processes against one Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from bot.core.shared import Rate, SharedState

# Takes one token from every bucket, or none. KEYS: bucket keys. ARGV: now, then per bucket
# (rate per second, capacity). Returns "0" when taken, else the seconds to wait (as a string).
_RESERVE = """
local now = tonumber(ARGV[1])
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local cap = tonumber(ARGV[2 * i + 1])
  local data = redis.call('HMGET', key, 'tokens', 'ts', 'blocked')
  local tokens = tonumber(data[1]) or cap
  local ts = tonumber(data[2]) or now
  local blocked = tonumber(data[3]) or 0
  if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate) end
  state[i] = tokens
  if blocked > now then wait = math.max(wait, blocked - now) end
  if tokens < 1 - 1e-9 then wait = math.max(wait, (1 - tokens) / rate) end
end
if wait > 0 then return tostring(math.max(wait, 0.0001)) end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local cap = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', key, 'tokens', math.max(0, state[i] - 1), 'ts', now)
  redis.call('EXPIRE', key, math.ceil(cap / rate) + 60)
end
return "0"
"""

_PENALIZE = """
local now = tonumber(ARGV[1])
local seconds = tonumber(ARGV[2])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
redis.call('HSET', KEYS[1], 'blocked', math.max(blocked, now + seconds), 'tokens', 0,
           'ts', now + seconds)
redis.call('EXPIRE', KEYS[1], math.ceil(seconds) + 120)
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisRateLimiter:
    """Token buckets in Redis hashes, updated atomically by a Lua script."""

    def __init__(self, redis: Redis, *, prefix: str = "kizuna:rl:",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self._reserve = redis.register_script(_RESERVE)
        self._penalize = redis.register_script(_PENALIZE)

    async def reserve(self, buckets: list[tuple[str, Rate]]) -> float:
        keys = [self.prefix + name for name, _ in buckets]
        args: list[Any] = [repr(self.clock())]
        for _, rate in buckets:
            args += [repr(rate.per_second), repr(rate.capacity)]
        result = await self._reserve(keys=keys, args=args)
        return float(result)

    async def penalize(self, bucket: str, rate: Rate, seconds: float) -> None:
        await self._penalize(keys=[self.prefix + bucket], args=[repr(self.clock()),
                                                              repr(seconds)])


class RedisEventBus:
    """Publish/subscribe over Redis channels (JSON payloads)."""

    def __init__(self, redis: Redis, *, prefix: str = "kizuna:ev:") -> None:
        self.redis = redis
        self.prefix = prefix

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        await self.redis.publish(self.prefix + topic, json.dumps(event, ensure_ascii=False))

    async def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.prefix + topic)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message["data"]
                yield json.loads(data.decode() if isinstance(data, bytes) else data)
        finally:
            await pubsub.unsubscribe(self.prefix + topic)
            await pubsub.aclose()


class RedisLock:
    """A lease lock (SET NX PX + compare-and-delete)."""

    def __init__(self, redis: Redis, *, prefix: str = "kizuna:lock:",
                 poll: float = 0.05) -> None:
        self.redis = redis
        self.prefix = prefix
        self.poll = poll
        self._release = redis.register_script(_RELEASE)

    @asynccontextmanager
    async def hold(self, name: str, *, ttl: float = 30.0) -> AsyncIterator[None]:
        key = self.prefix + name
        token = secrets.token_hex(16)
        while not await self.redis.set(key, token, nx=True, px=int(ttl * 1000)):
            await asyncio.sleep(self.poll)
        try:
            yield
        finally:
            await self._release(keys=[key], args=[token])


def redis_shared_state(url: str, *, prefix: str = "kizuna:") -> SharedState:
    redis = Redis.from_url(url)
    return SharedState(
        events=RedisEventBus(redis, prefix=prefix + "ev:"),
        rate_limiter=RedisRateLimiter(redis, prefix=prefix + "rl:"),
        locks=RedisLock(redis, prefix=prefix + "lock:"),
    )
