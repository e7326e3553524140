"""In-memory fakes of the ports, for unit tests of the core."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bot.core.ports import Event, EventHandler
from bot.core.types import (
    Callback,
    ChatRef,
    OutgoingMessage,
    PlatformCapabilities,
    SendError,
    SentPart,
)


@dataclass
class SentRecord:
    chat: ChatRef
    text: str
    message: OutgoingMessage
    with_extras: bool
    platform_message_id: str


@dataclass
class FakePlatform:
    """A ChatPlatform that records sends and can be told to fail."""

    name: str = "fake"
    capabilities: PlatformCapabilities = field(default_factory=PlatformCapabilities)
    sent: list[SentRecord] = field(default_factory=list)
    failures: deque[SendError] = field(default_factory=deque)
    answered: list[tuple[str, str | None]] = field(default_factory=list)
    handler: EventHandler | None = None
    started: bool = False
    _next_id: int = 1

    def set_handler(self, handler: EventHandler) -> None:
        self.handler = handler

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def deliver(self, event: Event) -> None:
        assert self.handler is not None
        await self.handler(event)

    async def send_part(
        self, chat: ChatRef, text: str, message: OutgoingMessage, *, with_extras: bool
    ) -> SentPart:
        if self.failures:
            raise self.failures.popleft()
        mid = str(self._next_id)
        self._next_id += 1
        self.sent.append(SentRecord(chat, text, message, with_extras, mid))
        return SentPart(mid)

    async def answer_callback(self, callback: Callback, text: str | None = None) -> None:
        self.answered.append((callback.callback_id, text))

    def texts(self, chat_id: str | None = None) -> list[str]:
        return [r.text for r in self.sent if chat_id is None or r.chat.id == chat_id]


class FakeSleep:
    """Records requested sleeps and advances a manual clock instead of waiting."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.calls: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
