"""Bot Framework token checks, against a fake OpenID metadata document and JWKS on localhost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.teams.auth import BotFrameworkTokenValidator, KeysUnavailable, OpenIdKeys, TokenRejected
from channels.teams.config import BOT_FRAMEWORK_ISSUER
from tests.channels.teams.conftest import APP_ID, TeamsBot, activity
from tests.channels.teams.fakes import FakeBotFramework, SigningKey

SERVICE_URL = "https://smba.trafficmanager.net/amer/"


@pytest.fixture
async def validator(bot_framework: FakeBotFramework) -> AsyncIterator[BotFrameworkTokenValidator]:
    keys = OpenIdKeys(bot_framework.openid_url)
    yield BotFrameworkTokenValidator(app_id=APP_ID, keys=keys, issuer=BOT_FRAMEWORK_ISSUER)


async def check(validator: BotFrameworkTokenValidator, token: str, *, channel: str = "msteams") -> Any:
    return await validator.validate(f"Bearer {token}", channel_id=channel, service_url=SERVICE_URL)


async def test_a_valid_token_is_accepted(validator: BotFrameworkTokenValidator, signing_key: SigningKey) -> None:
    claims = await check(validator, signing_key.token(app_id=APP_ID, service_url=SERVICE_URL))
    assert claims["aud"] == APP_ID
    assert claims["serviceurl"] == SERVICE_URL


async def test_a_token_expired_less_than_five_minutes_ago_is_accepted(
    validator: BotFrameworkTokenValidator, signing_key: SigningKey
) -> None:
    token = signing_key.token(app_id=APP_ID, service_url=SERVICE_URL, expires_in=-240)
    assert (await check(validator, token))["aud"] == APP_ID


UNKNOWN_KEY = SigningKey(kid="not-published")
UNENDORSED_KEY = SigningKey(kid="webchat-only", endorsements=("webchat",))


@pytest.mark.parametrize(
    ("case", "make_token", "reason"),
    [
        (
            "wrong issuer",
            lambda k: k.token(app_id=APP_ID, service_url=SERVICE_URL, issuer="https://evil.example"),
            "issuer",
        ),
        (
            "wrong audience",
            lambda k: k.token(app_id="22222222-2222-2222-2222-222222222222", service_url=SERVICE_URL),
            "audience",
        ),
        ("expired", lambda k: k.token(app_id=APP_ID, service_url=SERVICE_URL, expires_in=-400), "expired"),
        ("unknown key id", lambda k: UNKNOWN_KEY.token(app_id=APP_ID, service_url=SERVICE_URL), "unknown key"),
        ("unendorsed channel", lambda k: UNENDORSED_KEY.token(app_id=APP_ID, service_url=SERVICE_URL), "not endorsed"),
        (
            "serviceUrl mismatch",
            lambda k: k.token(app_id=APP_ID, service_url="https://attacker.example/"),
            "serviceurl",
        ),
        (
            "signed by another key with our kid",
            lambda k: UNKNOWN_KEY.token(app_id=APP_ID, service_url=SERVICE_URL, kid=k.kid),
            "signature",
        ),
        ("not a JWT", lambda k: "not-a-token", "malformed"),
    ],
)
async def test_bad_tokens_are_rejected(
    validator: BotFrameworkTokenValidator,
    bot_framework: FakeBotFramework,
    signing_key: SigningKey,
    case: str,
    make_token: Any,
    reason: str,
) -> None:
    bot_framework.keys.append(UNENDORSED_KEY)
    with pytest.raises(TokenRejected, match=f"(?i){reason}"):
        await check(validator, make_token(signing_key))


async def test_a_token_without_expiry_is_rejected(
    validator: BotFrameworkTokenValidator, signing_key: SigningKey
) -> None:
    import jwt

    token = signing_key.token(app_id=APP_ID, service_url=SERVICE_URL)
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["exp"]
    unsigned_exp = jwt.encode(claims, signing_key._private, algorithm="RS256", headers={"kid": signing_key.kid})
    with pytest.raises(TokenRejected, match="exp"):
        await check(validator, unsigned_exp)


async def test_an_unsigned_token_is_rejected(validator: BotFrameworkTokenValidator) -> None:
    import jwt

    token = jwt.encode(
        {"iss": BOT_FRAMEWORK_ISSUER, "aud": APP_ID, "serviceurl": SERVICE_URL}, key="", algorithm="none"
    )
    with pytest.raises(TokenRejected, match="RS256"):
        await check(validator, token)


async def test_the_token_must_be_a_bearer_token(validator: BotFrameworkTokenValidator, signing_key: SigningKey) -> None:
    token = signing_key.token(app_id=APP_ID, service_url=SERVICE_URL)
    for header in (None, "", token, f"Basic {token}", "Bearer "):
        with pytest.raises(TokenRejected):
            await validator.validate(header, channel_id="msteams", service_url=SERVICE_URL)


async def test_a_new_key_is_picked_up_by_refreshing_the_metadata(
    validator: BotFrameworkTokenValidator, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    await check(validator, signing_key.token(app_id=APP_ID, service_url=SERVICE_URL))
    rolled = SigningKey(kid="rolled-over")
    bot_framework.keys.append(rolled)
    # Within the refresh gap an unknown key is refused without hammering the metadata endpoint...
    with pytest.raises(TokenRejected, match="unknown key"):
        await check(validator, rolled.token(app_id=APP_ID, service_url=SERVICE_URL))
    assert bot_framework.metadata_requests == 1


async def test_metadata_that_cannot_be_fetched_is_not_a_token_problem() -> None:
    keys = OpenIdKeys("http://127.0.0.1:9/nothing-listens-here")
    validator = BotFrameworkTokenValidator(app_id=APP_ID, keys=keys, issuer=BOT_FRAMEWORK_ISSUER)
    with pytest.raises(KeysUnavailable):
        await check(validator, UNKNOWN_KEY.token(app_id=APP_ID, service_url=SERVICE_URL))


# -- through the real server -------------------------------------------------------


@pytest.mark.parametrize(
    "token_for",
    [
        lambda bot, body: bot.token(body, issuer="https://sts.windows.net/someone/"),
        lambda bot, body: bot.token(body, expires_in=-3600),
        lambda bot, body: UNKNOWN_KEY.token(app_id=APP_ID, service_url=body["serviceUrl"]),
        lambda bot, body: bot.key.token(app_id=APP_ID, service_url="https://other.example/"),
        lambda bot, body: "garbage",
    ],
    ids=["issuer", "expired", "unknown-kid", "serviceurl", "garbage"],
)
async def test_the_endpoint_answers_401_to_bad_tokens_and_stores_nothing(teams: TeamsBot, token_for: Any) -> None:
    body = activity(teams.fake, text="my vpn drops")
    response = await teams.post(body, token=token_for(teams, body))
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert teams.fake.received == []


async def test_the_endpoint_answers_401_without_an_authorization_header(teams: TeamsBot) -> None:
    response = await teams.client.post("/api/messages", json=activity(teams.fake, text="hello"))
    assert response.status_code == 401


async def test_a_rolled_over_key_is_accepted_after_the_refresh_gap(
    bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    now = [1000.0]
    keys = OpenIdKeys(bot_framework.openid_url, clock=lambda: now[0])
    validator = BotFrameworkTokenValidator(app_id=APP_ID, keys=keys, issuer=BOT_FRAMEWORK_ISSUER)
    await check(validator, signing_key.token(app_id=APP_ID, service_url=SERVICE_URL))
    rolled = SigningKey(kid="rolled-over-later")
    bot_framework.keys.append(rolled)
    now[0] += 6 * 60
    claims = await check(validator, rolled.token(app_id=APP_ID, service_url=SERVICE_URL))
    assert claims["aud"] == APP_ID
    assert bot_framework.metadata_requests == 2
