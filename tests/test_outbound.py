"""The one outbound path, against an in-memory platform."""

from __future__ import annotations

import pytest

from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.shared import InMemoryRateLimiter, Rate
from bot.core.types import (
    Button,
    ChatKind,
    ChatRef,
    Image,
    OutgoingMessage,
    PermanentSendError,
    PlatformCapabilities,
    RetryAfter,
    TransientSendError,
)
from models import MessageStatus
from models.repositories import ChatRepository, ContactRepository, MessageRepository
from tests.fakes import FakePlatform, FakeSleep, ManualClock

PRIVATE = ChatRef("fake", ChatKind.PRIVATE, "100")
GROUP = ChatRef("fake", ChatKind.GROUP, "-200", "Moms")


def make(db, platform=None, limits=None, clock=None):  # type: ignore[no-untyped-def]
    clock = clock or ManualClock()
    platform = platform or FakePlatform()
    sleep = FakeSleep(clock)
    out = Outbound(
        db=db, platforms={platform.name: platform}, rate_limiter=InMemoryRateLimiter(clock),
        metrics=Metrics(), limits={"fake": limits or PlatformLimits.unlimited()}, sleep=sleep,
    )
    return out, platform, sleep


async def stored(db, message_id):  # type: ignore[no-untyped-def]
    from models import Message

    async with db.session() as s:
        return await s.get(Message, message_id)


async def test_send_is_stored_and_delivered(sqlite_db):
    out, platform, _ = make(sqlite_db)
    result = await out.send(PRIVATE, OutgoingMessage("hello"))
    assert result.ok and platform.texts() == ["hello"]
    row = await stored(sqlite_db, result.message_id)
    assert row.status is MessageStatus.SENT and row.platform_message_id == "1"


async def test_long_text_is_split_and_buttons_go_last(sqlite_db):
    out, platform, _ = make(sqlite_db)
    text = ("Line of text. " * 200 + "\n\n") * 3
    msg = OutgoingMessage(text, buttons=[[Button("OK", callback_data="ok")]], reply_to="7")
    result = await out.send(PRIVATE, msg)
    assert result.ok and len(platform.sent) >= 2
    assert all(len(r.text) <= 4096 for r in platform.sent)
    assert [r.with_extras for r in platform.sent] == [False] * (len(platform.sent) - 1) + [True]
    assert platform.sent[0].message.reply_to == "7"
    assert all(r.message.reply_to is None for r in platform.sent[1:])
    assert result.platform_message_ids == [r.platform_message_id for r in platform.sent]


async def test_retry_after_is_waited_out(sqlite_db):
    out, platform, sleep = make(sqlite_db)
    platform.failures.extend([RetryAfter(3), RetryAfter(5)])
    result = await out.send(PRIVATE, OutgoingMessage("hi"))
    assert result.ok and platform.texts() == ["hi"]
    assert 3 in sleep.calls and 5 in sleep.calls
    assert out.metrics.rate_limited.labels("fake")._value.get() == 2


async def test_transient_errors_retry_with_backoff_then_give_up(sqlite_db):
    out, platform, sleep = make(sqlite_db)
    platform.failures.extend([TransientSendError("Bad Gateway")] * 2)
    assert (await out.send(PRIVATE, OutgoingMessage("a"))).ok
    assert len(sleep.calls) == 2 and sleep.calls[1] > sleep.calls[0] * 0.9
    platform.failures.extend([TransientSendError("Bad Gateway")] * 10)
    result = await out.send(PRIVATE, OutgoingMessage("b"))
    assert not result.ok and result.attempts == out.max_attempts
    row = await stored(sqlite_db, result.message_id)
    assert row.status is MessageStatus.FAILED and "Bad Gateway" in row.error


async def test_blocked_user_is_marked_and_no_longer_sent_to(sqlite_db):
    out, platform, _ = make(sqlite_db)
    async with sqlite_db.session() as s:
        await ContactRepository(s).identify("fake", "100")
    platform.failures.append(
        PermanentSendError("Forbidden: bot was blocked by the user", recipient_unreachable=True))
    first = await out.send(PRIVATE, OutgoingMessage("one"))
    assert not first.ok and first.unreachable
    second = await out.send(PRIVATE, OutgoingMessage("two"))
    assert not second.ok and second.unreachable and platform.sent == []
    async with sqlite_db.session() as s:
        ident = await ContactRepository(s).get_identity("fake", "100")
        assert ident is not None and not ident.reachable
        assert await MessageRepository(s).count(status=MessageStatus.FAILED) == 2


async def test_removed_group_is_not_sent_to(sqlite_db):
    out, platform, _ = make(sqlite_db)
    platform.failures.append(PermanentSendError(
        "Forbidden: bot was kicked from the group chat", recipient_unreachable=True))
    assert not (await out.send(GROUP, OutgoingMessage("x"))).ok
    async with sqlite_db.session() as s:
        chat = await ChatRepository(s).get("fake", "-200")
        assert chat is not None and not chat.bot_present
    assert not (await out.send(GROUP, OutgoingMessage("y"))).ok
    assert platform.sent == []


async def test_bad_markup_falls_back_to_plain_text(sqlite_db):
    from bot.core.types import MarkupError

    out, platform, _ = make(sqlite_db)
    platform.failures.append(MarkupError("Bad Request: can't parse entities"))
    result = await out.send(PRIVATE, OutgoingMessage("<b>bold &amp; <i>broken", format="html"))
    assert result.ok and platform.texts() == ["bold & broken"]


async def test_rich_parts_degrade_to_text(sqlite_db):
    plain = FakePlatform(capabilities=PlatformCapabilities(buttons=False, images=False))
    out, platform, _ = make(sqlite_db, platform=plain)
    msg = OutgoingMessage("Pick one", buttons=[[Button("Shop", url="https://s.example")],
                                               [Button("Help", callback_data="h")]],
                          image=Image(url="https://img.example/a.png"))
    assert (await out.send(PRIVATE, msg)).ok
    sent = platform.sent[0]
    assert "1) Shop: https://s.example" in sent.text and "2) Help" in sent.text
    assert "https://img.example/a.png" in sent.text and sent.message.image is None


async def test_rate_limiter_spaces_sends_per_private_chat(sqlite_db):
    clock = ManualClock()
    limits = PlatformLimits(overall=Rate(30, 1), private_chat=Rate(1, 1, burst=1),
                            group_chat=Rate(20, 60, burst=3))
    out, platform, sleep = make(sqlite_db, limits=limits, clock=clock)
    start = clock()
    for i in range(5):
        assert (await out.send(PRIVATE, OutgoingMessage(f"m{i}"))).ok
    assert clock() - start == pytest.approx(4.0, abs=0.01)  # 1 per second after the first


async def test_empty_message_is_refused(sqlite_db):
    out, _, _ = make(sqlite_db)
    with pytest.raises(ValueError):
        await out.send(PRIVATE, OutgoingMessage("   "))
