"""Every sentence the web front shows, in one place."""

DEMO_BANNER = (
    "Local demo mode: there is no real sign-in, anyone can act as anyone. "
    "Use sign_in: proxy or email_link for real use."
)
CSRF_FAILED = "This form has expired or did not come from this site. Reload the page and try again."
SIGN_IN_REQUIRED = "Please sign in."
SIGN_IN_LINK_SENT = "Check your e-mail: we sent you a sign-in link. It works for {minutes} minutes."
SIGN_IN_LINK_LOGGED = (
    "No mail relay is configured, so the sign-in link was written to the server log (local trial only)."
)
SIGN_IN_LINK_INVALID = "This sign-in link is invalid or has expired. Ask for a new one."
SIGN_IN_BAD_EMAIL = "Enter a valid e-mail address."
SIGN_IN_DOMAIN_REFUSED = "This e-mail domain cannot sign in here."
SIGN_IN_PROXY_ONLY = (
    "Sign-in happens at your organisation's single sign-on gateway; this request did not come through it."
)
NOT_AN_AGENT = "This page is for the IT team (agents and admins)."
NO_SUCH_TICKET = "There is no ticket {number} you can see."
NO_SUCH_ARTICLE = "There is no article {article_id}."
CHAT_UNAVAILABLE = "The chat is not accepting messages right now. Please try again in a moment."
CHAT_BUSY = "We are handling a lot of messages right now and could not take yours. Please send it again in a minute."
RATED = "Thank you for rating ticket {number}."
SOLVED = "Glad it is solved: {number} is resolved. How did we do?"
TAKEN = "You now hold {number}; the bot stays silent in its conversation."
REPLIED = "Reply sent to the requester of {number}."
HANDED_BACK = "{number} is handed back to the bot."
PENDING = "{number} is waiting on the requester; its SLA clock is paused until they answer."
RESOLVED = "{number} is resolved; the requester is asked to rate it."
NOTE_ADDED = "Internal note added to {number} (the requester never sees it)."
UPDATED = "{number} updated: {fields}."
NOTHING_CHANGED = "Nothing changed."
QUEUE_TITLES = {
    "mine": "Mine",
    "groups": "My groups",
    "unassigned": "Unassigned",
    "at_risk": "At risk",
    "breached": "Breached",
    "all": "All tickets",
}
