"""Translate aiogram types into Kizuna's neutral types (and nothing else)."""

from __future__ import annotations

from aiogram.types import CallbackQuery, ChatJoinRequest, ChatMemberUpdated, Message, MessageEntity
from aiogram.types import Chat as TgChat
from aiogram.types import User as TgUser

from bot.core.types import (
    BotMembershipChanged,
    Callback,
    ChatKind,
    ChatRef,
    Image,
    IncomingMessage,
    InviteLink,
    JoinRequest,
    MemberChanged,
    MemberStatus,
    UserRef,
)

PLATFORM = "telegram"


def chat_ref(chat: TgChat) -> ChatRef:
    kind = ChatKind.PRIVATE if chat.type == "private" else ChatKind.GROUP
    title = chat.title or chat.full_name if kind is ChatKind.GROUP else None
    return ChatRef(PLATFORM, kind, str(chat.id), title)


def user_ref(user: TgUser) -> UserRef:
    return UserRef(
        PLATFORM,
        str(user.id),
        display_name=user.full_name or None,
        username=user.username,
        language_code=user.language_code,
        is_bot=user.is_bot,
    )


def _entity_text(text: str, entity: MessageEntity) -> str:
    # Entity offsets count UTF-16 code units.
    raw = text.encode("utf-16-le")
    return raw[entity.offset * 2 : (entity.offset + entity.length) * 2].decode(
        "utf-16-le", errors="replace"
    )


def incoming_message(message: Message, *, bot_id: int, bot_username: str) -> IncomingMessage:
    text = message.text if message.text is not None else (message.caption or "")
    entities = message.entities if message.text is not None else message.caption_entities
    command: str | None = None
    command_args = ""
    mentions_bot = False
    me = bot_username.lower()
    for entity in entities or ():
        if entity.type == "bot_command" and entity.offset == 0:
            token = _entity_text(text, entity)[1:]
            name, _, target = token.partition("@")
            if not target or target.lower() == me:
                command = name.lower()
                command_args = text[len(_entity_text(text, entity)) :].strip()
        elif entity.type == "mention" and _entity_text(text, entity)[1:].lower() == me:
            mentions_bot = True
        elif entity.type == "text_mention" and entity.user and entity.user.id == bot_id:
            mentions_bot = True
    reply = message.reply_to_message
    if reply is not None and reply.forum_topic_created is not None:
        # In a forum topic every message "replies" to the topic's creation message; that is
        # where it was written, not something the user answered.
        reply = None
    reply_to_bot = bool(reply and reply.from_user and reply.from_user.id == bot_id)
    image = None
    if message.photo:
        image = Image(file_id=message.photo[-1].file_id)
    sender = message.from_user
    sender_ref = (
        user_ref(sender)
        if sender is not None
        else UserRef(PLATFORM, str(message.chat.id), display_name=message.chat.title)
    )
    return IncomingMessage(
        chat=chat_ref(message.chat),
        sender=sender_ref,
        text=text,
        message_id=str(message.message_id),
        date=message.date,
        command=command,
        command_args=command_args,
        mentions_bot=mentions_bot,
        reply_to_bot=reply_to_bot,
        reply_to_message_id=str(reply.message_id) if reply else None,
        image=image,
        thread_id=thread_id(message),
    )


def thread_id(message: Message) -> str | None:
    """The forum topic a message was written in (None: a plain chat or the General topic).

    Outside forums ``message_thread_id`` also marks reply threads; only topic messages count.
    """
    if message.is_topic_message and message.message_thread_id is not None:
        return str(message.message_thread_id)
    return None


def callback(query: CallbackQuery) -> Callback | None:
    message = query.message
    if message is None or query.data is None:
        return None
    return Callback(
        chat=chat_ref(message.chat),
        sender=user_ref(query.from_user),
        data=query.data,
        callback_id=query.id,
        message_id=str(message.message_id),
    )


def _status(value: str) -> MemberStatus:
    try:
        return MemberStatus(value)
    except ValueError:
        return MemberStatus.MEMBER if value == "creator" else MemberStatus.LEFT


def membership(update: ChatMemberUpdated) -> BotMembershipChanged:
    status = _status

    return BotMembershipChanged(
        chat=chat_ref(update.chat),
        actor=user_ref(update.from_user) if update.from_user else None,
        old_status=status(update.old_chat_member.status),
        new_status=status(update.new_chat_member.status),
    )


def member_changed(update: ChatMemberUpdated) -> MemberChanged:
    """A ``chat_member`` update (someone else's membership) as a neutral event."""
    link = update.invite_link.invite_link if update.invite_link is not None else None
    return MemberChanged(
        chat=chat_ref(update.chat),
        user=user_ref(update.new_chat_member.user),
        actor=user_ref(update.from_user) if update.from_user else None,
        old_status=_status(update.old_chat_member.status),
        new_status=_status(update.new_chat_member.status),
        invite_link=link,
        via_join_request=bool(update.via_join_request),
    )


def join_request(request: ChatJoinRequest) -> JoinRequest:
    link = request.invite_link.invite_link if request.invite_link is not None else None
    return JoinRequest(
        chat=chat_ref(request.chat), user=user_ref(request.from_user), invite_link=link,
        date=request.date,
    )


def invite_link(data: object) -> InviteLink:
    from aiogram.types import ChatInviteLink

    assert isinstance(data, ChatInviteLink)
    return InviteLink(
        url=data.invite_link, member_limit=data.member_limit, expires_at=data.expire_date,
        creates_join_request=bool(data.creates_join_request),
    )
