"""Microsoft Teams: requesters chat with the bot, agents work tickets from a Teams channel."""

from channels.teams.channel import TeamsChannel

__all__ = ["TeamsChannel"]
