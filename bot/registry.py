"""Channels by name, from the ``tierzero.channels`` entry points, built from config.yaml."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from bot.channel import Channel, ChannelContext, ChannelDisabled
from bot.config import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tierzero.channels"


def available_channels() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


@dataclass
class ChannelSet:
    enabled: list[Channel] = field(default_factory=list)
    disabled: dict[str, str] = field(default_factory=dict)  # name -> why


def channel_class(name: str) -> type[Channel]:
    """The adapter class registered as ``name``; only that one is imported."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = ", ".join(available_channels())
        raise ConfigError(f"config: channels.{name}: unknown channel '{name}'; known channels: {known}")
    channel: type[Channel] = next(iter(found)).load()
    return channel


def build_channels(context: ChannelContext) -> ChannelSet:
    """Every channel named under ``channels:``; those that cannot run are reported, not fatal."""
    channels = ChannelSet()
    for name, section in context.settings.channels.items():
        cls = channel_class(name)
        section = dict(section or {})
        if section.pop("enabled", True) is False:
            channels.disabled[name] = "turned off in config.yaml"
            continue
        try:
            channels.enabled.append(cls.from_config(section, context=context))
        except ChannelDisabled as exc:
            channels.disabled[name] = str(exc)
    return channels
