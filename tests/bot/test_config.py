"""Settings from config.yaml: strict validation, one clear line per problem, no secret in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import TierZero
from bot.config import ConfigError, Settings, load_settings, settings_from_mapping
from bot.registry import build_channels
from tests.conftest import REPO_ROOT
from tests.fixtures.fakes import it_retriever

SECRET = "hunter2-do-not-print"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TIERZERO_CONFIG", "TIERZERO_API_TOKEN", "TIERZERO_WEBHOOK_URL", "TZ_TEST_VALUE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./config.yaml unless a test writes one


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(text: str, folder: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(folder, text))
    return str(caught.value)


# -- loading -------------------------------------------------------------------------


def test_defaults_load_when_there_is_no_config_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings == Settings().model_copy(
        update={
            "data_dir": tmp_path / "data",
            "kb": Settings().kb.model_copy(update={"path": tmp_path / "kb"}),
        }
    )
    assert settings.server.host == "127.0.0.1"
    assert settings.channels == {"http_api": {}}
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'tierzero.db'}"
    assert settings.index_dir == tmp_path / "data" / "index"


def test_tierzero_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "etc", "server:\n  port: 9000\n")
    monkeypatch.setenv("TIERZERO_CONFIG", str(path))
    assert load_settings().server.port == 9000


def test_a_named_config_file_that_is_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERZERO_CONFIG", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: file not found"):
        load_settings()


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, "# nothing set\n")).pipeline.workers == 16


def test_the_repository_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "TEAMS_APP_ID", "TIERZERO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(REPO_ROOT / "config.yaml")
    assert settings.data_dir == REPO_ROOT / "data"
    assert settings.kb.path == REPO_ROOT / "kb"
    # Its token and webhook reference unset variables: absent, so loopback-only and no push.
    assert settings.channels["http_api"] == {}
    app = TierZero(settings, retriever=it_retriever())
    try:
        channels = build_channels(app.channel_context())
    finally:
        app.db.dispose()
    # `make run` on a fresh machine: what needs no account runs; Slack and Teams say what they need.
    assert [c.name for c in channels.enabled] == ["http_api", "web", "email"]
    assert set(channels.disabled) == {"slack", "teams"}
    assert "SLACK_BOT_TOKEN" in channels.disabled["slack"] and "TEAMS_APP_ID" in channels.disabled["teams"]


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("servr:\n  port: 80\n", "servr"),
        ("server:\n  hots: 0.0.0.0\n", "server.hots"),
        ("agent:\n  answer_treshold: 0.5\n", "agent.answer_treshold"),
    ],
)
def test_an_unknown_key_is_one_line_naming_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    error = config_error(text, tmp_path)
    assert error == f"{tmp_path / 'config.yaml'}: unknown key '{key}'"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("server:\n  port: eighty\n", "server.port", "valid integer"),
        ("server:\n  port: 70000\n", "server.port", "less than or equal to 65535"),
        ("pipeline:\n  workers: [1, 2]\n", "pipeline.workers", "valid integer"),
        ("log_level: LOUD\n", "log_level", "should match pattern"),
        ("database: sqlite:///x.db\n", "database", "valid dictionary"),
        ("channels:\n  - http_api\n", "channels", "valid dictionary"),
    ],
)
def test_a_wrong_type_names_the_key_and_what_was_expected(tmp_path: Path, text: str, key: str, expected: str) -> None:
    error = config_error(text, tmp_path)
    assert len(error.splitlines()) == 1
    assert error.startswith(f"{tmp_path / 'config.yaml'}: {key}: ")
    assert expected in error


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    error = config_error("server:\n  port: eighty\n  hots: x\npipeline:\n  workers: 0\n", tmp_path)
    lines = error.splitlines()
    assert len(lines) == 3
    assert any("server.port" in line for line in lines)
    assert any("unknown key 'server.hots'" in line for line in lines)
    assert any("pipeline.workers" in line for line in lines)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("server:\n  port: 80\n  host: [127.0.0.1\n", 4),
        ("server:\n  host: x\n port: 1\n", 3),
        ("data_dir: data\nlog_level: INFO: DEBUG\n", 2),
    ],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    error = config_error(text, tmp_path)
    assert error.startswith(f"{tmp_path / 'config.yaml'} (line {line}): not valid YAML: ")
    assert len(error.splitlines()) == 1


def test_a_top_level_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    error = config_error("- server\n- port\n", tmp_path)
    assert error.endswith("expected a mapping of settings at the top level")


# -- environment references -----------------------------------------------------------------


def test_env_references_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ_TEST_VALUE", "9090")
    monkeypatch.setenv("TIERZERO_API_TOKEN", SECRET)
    settings = load_settings(
        write_config(
            tmp_path,
            (
                "server:\n"
                "  port: ${TZ_TEST_VALUE}\n"
                "  host: ${TZ_UNSET_HOST:-127.0.0.2}\n"
                "database:\n"
                "  url: postgresql+psycopg://tz:${TZ_UNSET_PASSWORD:-pw}@db:${TZ_TEST_VALUE}/tz\n"
                "channels:\n"
                "  http_api:\n"
                "    auth_token: ${TIERZERO_API_TOKEN}\n"
                "    webhook_url: ${TIERZERO_WEBHOOK_URL}\n"
            ),
        )
    )
    assert settings.server.port == 9090
    assert settings.server.host == "127.0.0.2"
    assert settings.database.url == "postgresql+psycopg://tz:pw@db:9090/tz"
    # Set: the value; unset without a default: absent, not the literal text, "" or None.
    assert settings.channels["http_api"] == {"auth_token": SECRET}


def test_an_unset_reference_reads_as_absent_so_the_default_applies(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "server:\n  port: ${TZ_TEST_VALUE}\n"))
    assert settings.server.port == 8080
    # A YAML null is not a reference: it stays null (and is an error where null is not allowed).
    with pytest.raises(ConfigError, match=r"server\.host: Input should be a valid string \(got None\)"):
        load_settings(write_config(tmp_path, "server:\n  host:\n"))


def test_an_unset_reference_inside_a_string_reads_as_empty(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "database:\n  url: postgresql://tz:${TZ_TEST_VALUE}@db/tz\n"))
    assert settings.database.url == "postgresql://tz:@db/tz"


@pytest.mark.parametrize(
    "text",
    [
        # A secret-looking key with a bad value.
        "channels:\n  http_api: {}\ndatabase:\n  password: ${TIERZERO_API_TOKEN}\n",
        # A whole section given as a reference to a secret (a URL with a password).
        "database: ${TIERZERO_API_TOKEN}\n",
        "server:\n  port: ${TIERZERO_API_TOKEN}\n",
        "channels:\n  http_api: ${TIERZERO_API_TOKEN}\n",
    ],
)
def test_secret_values_never_appear_in_error_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("TIERZERO_API_TOKEN", f"postgresql://tz:{SECRET}@db/tz")
    error = config_error(text, tmp_path)
    assert SECRET not in error
    assert len(error.splitlines()) == 1


def test_a_channel_section_never_shows_a_secret_in_errors(tmp_path: Path) -> None:
    # A token written as a bare number is the wrong type; the error must not repeat it.
    settings = settings_from_mapping({"data_dir": str(tmp_path), "channels": {"http_api": {"auth_token": 424242}}})
    app = TierZero(settings, retriever=it_retriever())
    try:
        with pytest.raises(ConfigError) as caught:
            build_channels(app.channel_context())
    finally:
        app.db.dispose()
    error = str(caught.value)
    assert error.startswith("config: channels.http_api: auth_token: ")
    assert "424242" not in error


# -- paths and overrides ----------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "tierzero"
    settings = load_settings(
        write_config(
            folder,
            (
                "data_dir: state\n"
                "kb:\n  path: ../articles\n  index_dir: cache/index\n"
                "database:\n  url: sqlite:///state/tz.db\n"
            ),
        )
    )
    assert settings.data_dir == folder / "state"
    assert settings.kb.path == folder / "../articles"
    assert settings.kb.index_dir == folder / "cache/index"
    assert settings.index_dir == folder / "cache/index"
    assert settings.database_url == f"sqlite:///{folder / 'state' / 'tz.db'}"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    settings = load_settings(
        write_config(
            tmp_path / "etc", f"data_dir: {tmp_path / 'var'}\ndatabase:\n  url: sqlite:///{tmp_path / 'db.sqlite'}\n"
        )
    )
    assert settings.data_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite:///{tmp_path / 'db.sqlite'}"


def test_the_default_database_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "data_dir: state\n"))
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'tierzero.db'}"


def test_tierzero_database_url_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write_config(tmp_path, "database:\n  url: sqlite:///from-file.db\n"))
    monkeypatch.setenv("TIERZERO_DATABASE_URL", "postgresql+psycopg://tz@db.example/tz")
    assert settings.database_url == "postgresql+psycopg://tz@db.example/tz"
    monkeypatch.setenv("TIERZERO_DATABASE_URL", "")
    assert settings.database_url == f"sqlite:///{tmp_path / 'from-file.db'}"


# -- channels -------------------------------------------------------------------------------------


def _build(tmp_path: Path, channels: dict[str, object]) -> object:
    settings = settings_from_mapping({"data_dir": str(tmp_path), "channels": channels})
    app = TierZero(settings, retriever=it_retriever())
    try:
        return build_channels(app.channel_context())
    finally:
        app.db.dispose()


def test_an_unknown_channel_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _build(tmp_path, {"slak": {"bot_token": "x"}})
    assert str(caught.value) == (
        "config: channels.slak: unknown channel 'slak'; known channels: email, http_api, slack, teams, terminal, web"
    )


def test_a_channel_turned_off_is_reported_disabled(tmp_path: Path) -> None:
    channels = _build(tmp_path, {"http_api": {"enabled": False}})
    assert channels.enabled == [] and channels.disabled == {"http_api": "turned off in config.yaml"}


def test_a_channel_listed_without_settings_uses_its_defaults(tmp_path: Path) -> None:
    # "http_api:" with every setting commented out reads as null.
    settings = load_settings(write_config(tmp_path, "channels:\n  http_api:\n    # auth_token: x\n"))
    assert settings.channels == {"http_api": {}}


def test_an_unknown_key_in_a_channel_section_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _build(tmp_path, {"http_api": {"auth_tokn": "x"}})
    assert str(caught.value) == "config: channels.http_api: unknown key 'auth_tokn'"


def test_a_short_api_token_refuses_to_start(tmp_path: Path) -> None:
    settings = settings_from_mapping({"data_dir": str(tmp_path), "channels": {"http_api": {"auth_token": "short"}}})
    with pytest.raises(ConfigError) as caught:
        build_channels(TierZero(settings, retriever=it_retriever()).channel_context())
    assert str(caught.value) == (
        "config: channels.http_api: auth_token: Value error, must be at least 16 characters (use a long random token)"
    )
