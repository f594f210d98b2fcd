"""Secrets: environment over `.env`, nothing shown in reprs, redaction of every form."""

from __future__ import annotations

import os
import pickle

import attrs
import pytest

from extmm.config import ConfigError, parse_config
from extmm.ops import secrets as sec

API_KEY = "9f3c1b7e2a4d4c0f8e6b5a3d2c1b0a99"
PRIVATE_KEY = "0x04a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f"
PUBLIC_KEY = "0x6e2b0c2d9b9d1f4d2e0a6d8f5c3b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4"
VAULT = "123456"

FULL_ENV = {
    sec.API_KEY_VAR: API_KEY,
    sec.PRIVATE_KEY_VAR: PRIVATE_KEY,
    sec.PUBLIC_KEY_VAR: PUBLIC_KEY,
    sec.VAULT_ID_VAR: VAULT,
}


@pytest.fixture(autouse=True)
def empty_registry():
    sec.clear_registered_secrets()
    yield
    sec.clear_registered_secrets()


def write_env(path, values: dict[str, str]):
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


def test_real_environment_wins_over_env_file(tmp_path):
    env_file = write_env(tmp_path / ".env", FULL_ENV)
    other_key = "0123456789abcdef0123456789abcdef"
    loaded = sec.load_secrets(env_file, environ={sec.API_KEY_VAR: other_key})
    assert loaded.api_key.reveal() == other_key
    assert loaded.stark_private_key.reveal() == PRIVATE_KEY  # filled in from the file
    assert loaded.vault_id == 123456 and loaded.stark_public_key == PUBLIC_KEY


def test_a_set_but_empty_variable_is_not_overridden_by_the_file(tmp_path):
    env_file = write_env(tmp_path / "creds.env", FULL_ENV)
    loaded = sec.load_secrets(env_file, environ={sec.API_KEY_VAR: ""})
    assert loaded.api_key is None
    assert loaded.missing() == (sec.API_KEY_VAR,)
    assert not loaded.has_trading_credentials and not loaded.has_api_key


def test_default_env_file_is_dot_env_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sec.load_secrets(environ={}).missing() == sec.SECRET_VARS  # no ./.env: fine
    write_env(tmp_path / ".env", FULL_ENV)
    loaded = sec.load_secrets(environ={})
    assert loaded.has_trading_credentials and loaded.missing() == ()
    assert sec.load_secrets(environ={}, read_env_file=False).missing() == sec.SECRET_VARS


def test_loading_never_writes_to_the_process_environment(tmp_path, monkeypatch):
    for name in sec.SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    sec.load_secrets(write_env(tmp_path / ".env", FULL_ENV))
    assert dict(os.environ) == before


def test_process_environment_is_the_default_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    assert sec.load_secrets().has_trading_credentials


def test_an_explicit_env_file_must_exist(tmp_path):
    with pytest.raises(sec.SecretsError, match="not found"):
        sec.load_secrets(tmp_path / "nope.env", environ={})


def test_env_file_values_are_taken_literally(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"{sec.API_KEY_VAR}=abc${{HOME}}defgh\n", encoding="utf-8")
    assert sec.load_secrets(env_file, environ={}).api_key.reveal() == "abc${HOME}defgh"


@pytest.mark.parametrize(
    "name, bad",
    [
        (sec.PRIVATE_KEY_VAR, "0xnothexatall-but-secret"),
        (sec.PUBLIC_KEY_VAR, "not-hex"),
        (sec.VAULT_ID_VAR, "-5"),
        (sec.API_KEY_VAR, "two words-secret"),
    ],
)
def test_malformed_values_name_the_variable_but_never_the_value(name, bad):
    with pytest.raises(sec.SecretsError) as info:
        sec.load_secrets(environ={**FULL_ENV, name: bad}, read_env_file=False)
    message = str(info.value)
    assert message.startswith(f"{name}: expected")
    assert bad not in message and "secret" not in message


def test_reprs_and_strings_never_show_the_secret_values():
    loaded = sec.load_secrets(environ=FULL_ENV, read_env_file=False)
    shown = [repr(loaded), str(loaded), f"{loaded.api_key}", f"{loaded.stark_private_key!r}", repr(attrs.asdict(loaded))]
    for text in shown:
        assert API_KEY not in text and PRIVATE_KEY[2:] not in text.lower()
    assert "***" in repr(loaded)
    assert PUBLIC_KEY in repr(loaded)  # public, and useful when checking a setup
    assert loaded.api_key.reveal() == API_KEY
    assert loaded.stark_private_key == sec.SecretValue(PRIVATE_KEY)
    assert loaded.stark_private_key != sec.SecretValue(PRIVATE_KEY.upper())


def test_secret_values_refuse_to_be_pickled():
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(sec.SecretValue(API_KEY))


def private_key_forms() -> list[str]:
    digits = PRIVATE_KEY[2:]
    return [
        PRIVATE_KEY,
        digits,
        PRIVATE_KEY.upper(),
        "0X" + digits.upper(),
        hex(int(digits, 16)),  # what printing the parsed integer gives: no leading zero
        str(int(digits, 16)),  # the integer in decimal
    ]


@pytest.mark.parametrize("form", private_key_forms())
def test_redact_masks_the_private_key_in_any_form(form):
    loaded = sec.load_secrets(environ=FULL_ENV, read_env_file=False, register=False)
    text = f"signing failed for key={form}, retrying"
    assert sec.redact(text, loaded) == "signing failed for key=***, retrying"


def test_redact_masks_the_api_key_everywhere_and_leaves_other_text_alone():
    loaded = sec.load_secrets(environ=FULL_ENV, read_env_file=False, register=False)
    text = f"X-Api-Key: {API_KEY}; again {API_KEY.upper()}; vault {VAULT}; public {PUBLIC_KEY}"
    assert sec.redact(text, loaded) == f"X-Api-Key: ***; again ***; vault {VAULT}; public {PUBLIC_KEY}"
    assert sec.redact("nothing to hide", sec.Secrets()) == "nothing to hide"


def test_loaded_secrets_are_registered_for_the_log_filter():
    text = f"key {API_KEY} pk {PRIVATE_KEY}"
    assert sec.redact_known(text) == text
    sec.load_secrets(environ=FULL_ENV, read_env_file=False, register=False)
    assert sec.redact_known(text) == text
    sec.load_secrets(environ=FULL_ENV, read_env_file=False)
    assert sec.redact_known(text) == "key *** pk ***"
    sec.clear_registered_secrets()
    assert sec.redact_known(text) == text


def test_register_secret_accepts_plain_strings_and_ignores_trivially_short_ones():
    sec.register_secret("s3cr3t-token-value")
    sec.register_secret("0")
    assert sec.redact_known("a s3cr3t-token-value 0 b") == "a *** 0 b"


def test_secrets_in_the_config_file_are_refused_without_echoing_them():
    data = {"markets": [{"name": "BTC-USD"}], "api_key": API_KEY}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.problems == ["api_key: unknown key"]
