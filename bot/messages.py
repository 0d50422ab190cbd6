"""Every sentence tierzero says to a requester, in one place (wording, later translation)."""

GREETING = (
    "Hi! I'm tierzero, the IT help bot. Tell me what's going wrong "
    '(for example "my VPN keeps disconnecting") and I\'ll look it up. '
    'Say "talk to a person" at any time to reach the IT team.'
)
ASK_FOR_QUESTION = "What can I help you with? Describe the problem in a sentence or two."
ANSWER_INTRO = "Here's what our knowledge base says:"
ANSWER_RETRY_INTRO = "Sorry that didn't help. Let's try another article:"
ANSWER_FOOTER = "Did that solve it?"
SOURCE_LINE = "Source: {title} ({link})"
CLARIFY_QUESTION = "I found more than one article that could fit. Which one is closest to your problem?"
CLARIFY_NONE_OF_THESE = "None of these"
OFFER_CLOSE = "Glad that helped! Shall I close this conversation?"
CLOSED = "Great, I've closed this conversation. Message me any time you need IT help."
KEEP_OPEN = "OK, I'll keep it open. What else can I help with?"
ESCALATED = (
    "I've opened ticket {number} for you and passed it to the IT team. "
    "A person will reply here; you don't need to repeat anything."
)
FIRST_RESPONSE_DUE = "Expected first response by {due}."
ESCALATION_REASONS = {
    "requested": "You asked for a person.",
    "low_confidence": "I couldn't find an article that answers this confidently.",
    "unhelpful": "The articles I found didn't solve it.",
}
QUEUED_NOTE = "Thanks, I've added that to ticket {number}. The IT team will reply here."
AGENT_JOINED = "{agent} from the IT team has joined the conversation (ticket {number})."
HANDED_BACK = "The IT team has handed this conversation back to me. Ticket {number} stays open; ask me anything."
TICKET_RESOLVED = "Ticket {number} has been resolved. If the problem comes back, just reply here."
REOPENED = "Welcome back! This is a new conversation."
CSAT_REQUEST = "How did we do on ticket {number}? Rate the help you got from 1 (poor) to 5 (excellent)."
CSAT_THANKS = "Thanks for your rating!"

BUTTON_SOLVED = "That solved it"
BUTTON_HUMAN = "Talk to a person"
BUTTON_CLOSE = "Yes, close it"
BUTTON_KEEP_OPEN = "I still need help"

# Refusals of bad input: shown to the requester, never a stack trace.
EMPTY_MESSAGE = "Your message was empty. Please type your question."
MESSAGE_TOO_LONG = "Your message is {length} characters long; the limit is {limit}. Please shorten it."
INTERNAL_ERROR = "Sorry, something went wrong on our side. Your message was saved; please try again shortly."
