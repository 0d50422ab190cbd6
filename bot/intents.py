"""Recognising what a short message means: asking for a human, thanks, greetings.

Plain patterns, not a model: these phrases are few, must never be missed, and
are cheap to check before retrieval. Patterns are anchored so that a question
that merely mentions "agent" (e.g. "the VPN agent won't start") is still a
question.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"[^\w'\s-]+")
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped (apostrophes and hyphens kept), single spaces."""
    text = text.replace("\u2019", "'").lower()
    return _WS.sub(" ", _PUNCTUATION.sub(" ", text)).strip(" -")


_HUMAN_REQUEST = re.compile(
    r"""
    \b(talk|speak|chat|connect|put\ me\ through|transfer)\b[^.?!]{0,25}?
        \b(human|person|someone|somebody|agent|technician|tech|operator|representative|rep|staff
           |it\ support|helpdesk|help\ desk|service\ desk)\b
    | \b(real|live|human|actual)\ (person|agent|human|being|support)\b
    | \b(open|create|raise|log|file|submit)\ (a\ |an\ )?(support\ )?(ticket|case|incident|request)\b
    | ^(human|agent|person|operator|representative|escalate|helpdesk|help\ desk|ticket)(\ please)?$
    | ^(i\ want|i\ need|i'd\ like|can\ i\ get|get\ me)\ (a|an|to\ talk\ to\ a|to\ speak\ to\ a)?\ ?
        (human|person|agent|technician)\b
    """,
    re.VERBOSE,
)

_GREETING = re.compile(
    r"^(hi|hello|hey|hiya|howdy|yo|greetings|good\ (morning|afternoon|evening|day))"
    r"(\ (there|team|bot|tierzero|all|everyone))?$"
)

_THANKS = re.compile(
    r"\b(thanks?|thank\ you|thx|ty|cheers|much\ appreciated"
    r"|(that|it|this)\ (fixed|solved|resolved|worked|did\ it|helped)"
    r"|(it's|it\ is|everything's|everything\ is|all)\ (working|fixed|sorted|good)"
    r"|it\ works|works\ now|problem\ solved|solved|fixed|sorted)\b"
)
_NEGATION = re.compile(r"\b(not|no|didn't|doesn't|don't|isn't|still|but|won't|can't|cannot|never)\b")
# Thanks is a short message; a long one that says "thanks" is usually a new question.
THANKS_MAX_WORDS = 8

_NEGATIVE_FEEDBACK = re.compile(
    r"^(no|nope|nah|not\ really)$"
    r"|^(didn't\ work|did\ not\ work|doesn't\ work|does\ not\ work"
    r"|still\ (not\ working|broken|the\ same|doesn't\ work|happening)"
    r"|that\ (didn't|did\ not|doesn't|does\ not)\ (help|work|fix\ it|solve\ it)"
    r"|not\ helpful|that's\ not\ it|wrong\ article|no\ luck)\b"
)

_YES = re.compile(r"^(y|yes|yeah|yep|yup|sure|please\ do|ok|okay|close(\ it)?|yes\ please|go\ ahead)$")
_NO = re.compile(r"^(n|no|nope|not\ yet|don't|do\ not|keep\ it\ open)$")


def asks_for_human(text: str) -> bool:
    return bool(_HUMAN_REQUEST.search(normalise(text)))


def is_greeting(text: str) -> bool:
    return bool(_GREETING.match(normalise(text)))


def is_thanks(text: str) -> bool:
    words = normalise(text)
    return (
        len(words.split()) <= THANKS_MAX_WORDS
        and bool(_THANKS.search(words))
        and not _NEGATION.search(words)
        and "?" not in text
    )


def is_negative_feedback(text: str) -> bool:
    return bool(_NEGATIVE_FEEDBACK.match(normalise(text)))


def is_yes(text: str) -> bool:
    return bool(_YES.match(normalise(text)))


def is_no(text: str) -> bool:
    return bool(_NO.match(normalise(text)))
