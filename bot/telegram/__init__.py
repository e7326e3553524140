"""Telegram adapter on aiogram 3: the only package that imports aiogram."""

from bot.telegram.platform import TelegramPlatform

__all__ = ["TelegramPlatform"]
