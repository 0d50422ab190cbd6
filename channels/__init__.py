"""Channel adapters: each turns one platform's events into ``bot.model.InboundMessage``
and delivers ``OutboundReply`` values back.

An adapter implements ``bot.channel.Channel`` (re-exported here) and registers
under the ``tierzero.channels`` entry-point group in pyproject.toml.
"""

from bot.channel import Channel, ChannelContext, ChannelDisabled

__all__ = ["Channel", "ChannelContext", "ChannelDisabled"]
