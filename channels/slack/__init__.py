"""Slack: requesters ask in DMs, mentions and threads; agents work tickets in a triage channel."""

from channels.slack.channel import SlackChannel

__all__ = ["SlackChannel"]
