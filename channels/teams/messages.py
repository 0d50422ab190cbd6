"""What the Teams channel says itself (the core's replies come from ``bot.messages``)."""

from bot import messages as core

WELCOME = core.GREETING

# Above an agent's reply to a requester.
AGENT_HEADER = "{name} (IT support):"

# Card wording.
SOURCES = "Sources"
OPTIONS = "Options: {options}"
TICKET = "Ticket"
TAKE = "Take"
RESOLVE = "Resolve"
HAND_BACK = "Hand back to bot"
FACT_REQUESTER = "Requester"
FACT_STATUS = "Status"
FACT_PRIORITY = "Priority"
FACT_CATEGORY = "Category"
FACT_GROUP = "Group"
FACT_ASSIGNEE = "Assignee"
FACT_SLA = "SLA"
FACT_FIRST_RESPONSE_DUE = "First response due"
FACT_RESOLUTION_DUE = "Resolution due"
FACT_CSAT = "Rating"
UNASSIGNED = "nobody yet"
SLA_STATES = {"ok": "on track", "at_risk": "at risk", "breached": "breached", "met": "met", "paused": "paused"}
CONVERSATION_SO_FAR = "Conversation so far"

# Timeline entries mirrored into a ticket's thread.
TIMELINE = {
    "requester_message": "{author} (requester): {text}",
    "agent_reply": "{author} replied to the requester: {text}",
    "note": "Note from {author}: {text}",
    "sla_at_risk": "SLA at risk: {text}",
    "sla_breached": "SLA breached: {text}",
    "delivery_failed": "Could not deliver a reply to the requester: {text}",
    "delivery_unknown": "A reply to the requester may not have arrived: {text}",
    "csat": "The requester rated the help: {text}",
}
TIMELINE_OTHER = "{author}: {text}"

# Answers to agents in the agent channel.
NOT_AN_AGENT = (
    "Sorry {name}, only the agents listed in tierzero's configuration can work on tickets. "
    "Nothing was sent to the requester."
)
TOOK = "{agent} took {number}. Replies in this thread go to the requester."
RESOLVED = "{agent} resolved {number}."
HANDED_BACK = "{agent} handed {number} back to the bot."
NO_TICKET_IN_THREAD = "This thread is not linked to a ticket, so nothing was sent."
ACTION_FAILED = "Could not {action} {number}: {reason}"
DONE = "Done."
