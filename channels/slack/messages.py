"""Everything the Slack channel itself says to people (the core's sentences are in ``bot.messages``)."""

NOT_SERVED = "tierzero is not set up for this workspace. Ask your IT team to add its team id to the configuration."
NOT_READY = "tierzero is starting up; please try again in a moment."
BUSY = "tierzero is very busy right now and could not take that. Please try again in {seconds} seconds."
COMMAND_USAGE = (
    "*{command} <question>* asks the IT help bot privately (I answer in our direct messages).\n"
    "*{command} tickets* lists your open tickets."
)
COMMAND_ASKED = "Got it. I'm answering in our direct messages: {link}"
COMMAND_FAILED = "Sorry, I could not open a direct message with you just now. Please try again in a moment."
ASKED_PRIVATELY = "You asked: {question}"
NO_OPEN_TICKETS = "You have no open tickets."
OPEN_TICKETS = "Your open tickets:"
TICKET_LINE = "• *{number}* {subject} ({status})"
PRESSED = "{user} chose: {label}"

# Agents
NOT_AN_AGENT = "Only IT agents can do that. Ask the IT team if you should be one."
NOT_A_TICKET_THREAD = "This thread is not linked to a ticket."
AGENT_TOOK = "{agent} took {number}."
AGENT_HANDED_BACK = "{agent} handed {number} back to the bot."
AGENT_RESOLVED = "{agent} resolved {number}; the requester was asked for a rating."
AGENT_ACTION_FAILED = "Could not do that: {reason}"
REPLY_NOT_RELAYED = "Not sent to the requester: {reason}"

# Ticket cards
CARD_TITLE = "{number}: {subject}"
BUTTON_TAKE = "Take"
BUTTON_RESOLVE = "Resolve"
BUTTON_HAND_BACK = "Hand back to bot"
SLA_LABELS = {
    "ok": "on track",
    "at_risk": ":warning: at risk",
    "breached": ":red_circle: breached",
    "met": ":white_check_mark: met",
    "paused": "paused",
}
ENTRY_PREFIX = {
    "requester_message": ":speech_balloon: *Requester*",
    "agent_reply": ":technologist: *{author}*",
    "note": ":memo: *Note from {author}*",
    "sla_at_risk": ":warning: *SLA at risk*",
    "sla_breached": ":red_circle: *SLA breached*",
    "delivery_failed": ":x: *A reply could not be delivered*",
    "delivery_unknown": ":grey_question: *A reply may not have been delivered*",
    "csat": ":star: *Rating*",
}

# Bad input: shown in Slack, never a stack trace.
INVALID_MESSAGE = "I could not take that message: {reason}"
