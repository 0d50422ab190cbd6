"""The email channel's attachment store: the shared one in ``bot.attachments``."""

from bot.attachments import AttachmentSettings, AttachmentStore, allowed, sniff

__all__ = ["AttachmentSettings", "AttachmentStore", "allowed", "sniff"]
