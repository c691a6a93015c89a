"""handler.settings: one validated configuration object, built from explicit environments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from handler.exceptions import ConfigurationError
from handler.settings import OperatorSettings, Settings, get_settings, operator_settings

BASE = {"AWS_REGION": "eu-west-1", "TARGET_ROLE_NAME": "OpsFanoutTargetRole"}


def from_env(**extra: str) -> Settings:
    return Settings.from_env({**BASE, **extra})


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """get_settings' cache is empty before and after the test (no leak to other tests)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_minimal_environment_gives_safe_defaults() -> None:
    """GIVEN only AWS_REGION and TARGET_ROLE_NAME
    WHEN settings are built
    THEN the role path is '/', no account is allowed, and the optional parts are off."""
    settings = from_env()

    assert settings == Settings(
        region="eu-west-1",
        target_role_name="OpsFanoutTargetRole",
        target_role_path="/",
        external_id=None,
        allowed_account_ids=frozenset(),
        allow_any_account=False,
        dead_letter_queue_url=None,
        ledger_table=None,
        max_workers=16,
        max_targets_per_message=500,
    )


def test_aws_default_region_is_used_when_aws_region_is_unset() -> None:
    """GIVEN AWS_DEFAULT_REGION but no AWS_REGION
    WHEN settings are built
    THEN the region is AWS_DEFAULT_REGION."""
    settings = Settings.from_env(
        {"AWS_DEFAULT_REGION": "ap-southeast-2", "TARGET_ROLE_NAME": "OpsFanoutTargetRole"}
    )

    assert settings.region == "ap-southeast-2"


def test_every_variable_is_read_into_its_field() -> None:
    """GIVEN every optional variable set
    WHEN settings are built
    THEN each lands in its field, trimmed."""
    settings = from_env(
        TARGET_ROLE_PATH="/ops/fanout/",
        EXTERNAL_ID="ext-id-123",
        ALLOW_ANY_ACCOUNT="true",
        DEAD_LETTER_QUEUE_URL=" https://sqs.eu-west-1.amazonaws.com/123456789012/dlq ",
        LEDGER_TABLE="fanout-ledger",
        MAX_WORKERS="16",
        MAX_TARGETS_PER_MESSAGE="50",
    )

    assert (
        settings.target_role_path,
        settings.external_id,
        settings.allow_any_account,
        settings.dead_letter_queue_url,
        settings.ledger_table,
        settings.max_workers,
        settings.max_targets_per_message,
    ) == (
        "/ops/fanout/",
        "ext-id-123",
        True,
        "https://sqs.eu-west-1.amazonaws.com/123456789012/dlq",
        "fanout-ledger",
        16,
        50,
    )


def test_allowed_account_ids_are_split_on_commas_and_trimmed() -> None:
    """GIVEN ALLOWED_ACCOUNT_IDS with spaces, an empty item and a trailing comma
    WHEN settings are built
    THEN the allow-list holds exactly the account ids."""
    settings = from_env(ALLOWED_ACCOUNT_IDS=" 111111111111 , 222222222222,,333333333333, ")

    assert settings.allowed_account_ids == {"111111111111", "222222222222", "333333333333"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param(
            {"ALLOWED_ACCOUNT_IDS": "111111111111,12345"}, "ALLOWED_ACCOUNT_IDS", id="acct"
        ),
        pytest.param({"TARGET_ROLE_NAME": "role/with/slash"}, "TARGET_ROLE_NAME", id="role-name"),
        pytest.param({"TARGET_ROLE_NAME": ""}, "TARGET_ROLE_NAME", id="role-name-missing"),
        pytest.param({"TARGET_ROLE_PATH": "ops"}, "TARGET_ROLE_PATH", id="role-path"),
        pytest.param({"TARGET_ROLE_PATH": "/ops"}, "TARGET_ROLE_PATH", id="role-path-no-end"),
        pytest.param({"EXTERNAL_ID": "a b"}, "EXTERNAL_ID", id="external-id"),
        pytest.param({"ALLOW_ANY_ACCOUNT": "maybe"}, "ALLOW_ANY_ACCOUNT", id="allow-any"),
        pytest.param({"MAX_WORKERS": "0"}, "MAX_WORKERS", id="max-workers-zero"),
        pytest.param({"MAX_WORKERS": "-4"}, "MAX_WORKERS", id="max-workers-negative"),
        pytest.param({"MAX_WORKERS": "eight"}, "MAX_WORKERS", id="max-workers-word"),
        pytest.param(
            {"MAX_TARGETS_PER_MESSAGE": "1.5"}, "MAX_TARGETS_PER_MESSAGE", id="max-targets"
        ),
        pytest.param({"AWS_REGION": ""}, "AWS_REGION", id="no-region"),
        pytest.param({"ALLOWED_OU_IDS": "r-ab12"}, "ALLOWED_OU_IDS", id="ou-id"),
        pytest.param({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS", id="max-attempts"),
        pytest.param({"SESSION_POLICY_SCOPE": "all"}, "SESSION_POLICY_SCOPE", id="policy-scope"),
    ],
)
def test_invalid_configuration_is_refused_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    """GIVEN one variable with an invalid value
    WHEN settings are built
    THEN ConfigurationError is raised and its message names that variable."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**BASE, **env})

    assert variable in caught.value.reason


def test_invalid_account_error_lists_only_the_bad_ids() -> None:
    """GIVEN an allow-list with one good and one 11-digit id
    WHEN settings are built
    THEN the error names the bad id and not the good one."""
    with pytest.raises(ConfigurationError) as caught:
        from_env(ALLOWED_ACCOUNT_IDS="111111111111,22222222222")

    assert "22222222222" in caught.value.reason
    assert "111111111111" not in caught.value.reason


def test_a_superscript_digit_for_max_workers_is_a_configuration_error() -> None:
    """GIVEN MAX_WORKERS='²' (a Unicode digit int() does not accept)
    WHEN settings are built
    THEN ConfigurationError naming MAX_WORKERS is raised, not a bare ValueError."""
    with pytest.raises(ConfigurationError, match="MAX_WORKERS"):
        from_env(MAX_WORKERS="\u00b2")


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " True "])
def test_allow_any_account_accepts_the_usual_spellings_of_true(value: str) -> None:
    """GIVEN ALLOW_ANY_ACCOUNT spelled as one of the usual true values
    WHEN settings are built
    THEN allow_any_account is True."""
    assert from_env(ALLOW_ANY_ACCOUNT=value).allow_any_account is True


@pytest.mark.parametrize("value", ["", "false", "0", "no", "off", "False"])
def test_allow_any_account_accepts_the_usual_spellings_of_false(value: str) -> None:
    """GIVEN ALLOW_ANY_ACCOUNT empty or spelled as a false value
    WHEN settings are built
    THEN allow_any_account is False."""
    assert from_env(ALLOW_ANY_ACCOUNT=value).allow_any_account is False


def test_allowed_ou_ids_are_split_on_commas_and_trimmed() -> None:
    """GIVEN ALLOWED_OU_IDS with two OU ids, spaces and an empty item
    WHEN settings are built
    THEN allowed_ou_ids holds exactly the two OU ids."""
    settings = from_env(ALLOWED_OU_IDS=" ou-ab12-11111111 ,, ou-cd34-22222222 ")

    assert settings.allowed_ou_ids == {"ou-ab12-11111111", "ou-cd34-22222222"}


def test_get_settings_reads_the_environment_once(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN get_settings called once
    WHEN the environment changes and it is called again
    THEN the same object comes back, still with the first value."""
    monkeypatch.setenv("TARGET_ROLE_NAME", "FirstRole")
    first = get_settings()

    monkeypatch.setenv("TARGET_ROLE_NAME", "SecondRole")

    assert get_settings() is first
    assert first.target_role_name == "FirstRole"


def test_get_settings_rereads_the_environment_after_cache_clear(
    fresh_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN settings read with TARGET_ROLE_NAME=FirstRole
    WHEN the variable changes and the cache is cleared
    THEN get_settings returns the new value."""
    monkeypatch.setenv("TARGET_ROLE_NAME", "FirstRole")
    get_settings()
    monkeypatch.setenv("TARGET_ROLE_NAME", "SecondRole")

    get_settings.cache_clear()

    assert get_settings().target_role_name == "SecondRole"


def test_rate_limits_override_the_plugins_declared_rates() -> None:
    """GIVEN RATE_LIMITS with a burst and without one
    WHEN settings are read THEN each API maps to (rate, burst), burst defaulting to the rate."""
    settings = Settings.from_env(
        {
            "AWS_REGION": "us-east-1",
            "TARGET_ROLE_NAME": "OpsFanoutTargetRole",
            "RATE_LIMITS": "cloudfront:CreateInvalidation=5/10, ssm:SendCommand=0.5",
        }
    )

    assert settings.rate_limits == {
        "cloudfront:CreateInvalidation": (5.0, 10),
        "ssm:SendCommand": (0.5, 1),
    }


@pytest.mark.parametrize("raw", ["bogus", "cloudfront:CreateInvalidation=0", "x=1/2"])
def test_malformed_rate_limits_are_a_configuration_error(raw: str) -> None:
    """GIVEN a malformed RATE_LIMITS entry WHEN settings are read
    THEN a ConfigurationError names the variable and the entry."""
    with pytest.raises(ConfigurationError, match="RATE_LIMITS"):
        Settings.from_env({"AWS_REGION": "us-east-1", "TARGET_ROLE_NAME": "R", "RATE_LIMITS": raw})


# --- what the operator tools read (handler.api.operator_settings) -------------------------------


def test_operator_settings_need_none_of_the_worker_only_variables() -> None:
    """GIVEN an operator's shell with none of the worker's variables
    WHEN the operator settings are read
    THEN there is no role name, no allow-list and no ledger table (nothing invented)."""
    assert operator_settings({}) == OperatorSettings(target_role_name=None)


def test_operator_settings_read_the_variables_as_the_worker_does() -> None:
    """GIVEN the role, allow-list and ledger variables, with stray blanks
    WHEN the operator settings are read
    THEN they hold the same values the worker's Settings would."""
    env = {
        **BASE,
        "TARGET_ROLE_PATH": "/ops/",
        "EXTERNAL_ID": "rotate-me-2026",
        "ALLOWED_ACCOUNT_IDS": " 111111111111, 222222222222 ,",
        "LEDGER_TABLE": " fanout-ledger ",
    }

    operator, worker = operator_settings(env), Settings.from_env(env)

    assert (
        operator.target_role_name,
        operator.target_role_path,
        operator.external_id,
        operator.allowed_account_ids,
        operator.ledger_table,
    ) == (
        worker.target_role_name,
        worker.target_role_path,
        worker.external_id,
        worker.allowed_account_ids,
        worker.ledger_table,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"TARGET_ROLE_NAME": "no spaces"}, "TARGET_ROLE_NAME", id="role-name"),
        pytest.param({"TARGET_ROLE_PATH": "ops"}, "TARGET_ROLE_PATH", id="role-path"),
        pytest.param({"ALLOWED_ACCOUNT_IDS": "1234"}, "ALLOWED_ACCOUNT_IDS", id="accounts"),
    ],
)
def test_operator_settings_refuse_what_the_worker_refuses(
    env: dict[str, str], variable: str
) -> None:
    """GIVEN a malformed variable WHEN the operator settings are read THEN the same
    ConfigurationError as the worker's names it."""
    with pytest.raises(ConfigurationError) as caught:
        operator_settings(env)

    assert variable in caught.value.reason


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        pytest.param({}, False, id="no-allow-list-set"),
        pytest.param({"ALLOWED_ACCOUNT_IDS": "111111111111"}, True, id="not-listed"),
        pytest.param(
            {"ALLOWED_ACCOUNT_IDS": "111111111111", "ALLOW_ANY_ACCOUNT": "true"},
            False,
            id="any-account",
        ),
        pytest.param(
            {"ALLOWED_ACCOUNT_IDS": "111111111111", "ALLOWED_OU_IDS": "ou-ab12-abcdefgh"},
            False,
            id="maybe-in-an-ou",
        ),
    ],
)
def test_an_account_is_refused_only_when_the_worker_certainly_would(
    env: dict[str, str], refused: bool
) -> None:
    """GIVEN an account that ALLOWED_ACCOUNT_IDS does not name
    WHEN the operator settings are asked whether the worker refuses it
    THEN yes only with an allow-list set and neither ALLOW_ANY_ACCOUNT nor OUs to admit it."""
    assert operator_settings(env).refuses("222222222222") is refused
    assert not operator_settings(env).refuses("111111111111")
