"""Credentials from the environment or a `.env` file, kept out of every repr and log line.

Real environment variables win over `.env` (python-dotenv's "never override" rule); the
config file never holds secrets. Loaded secrets join a process-wide registry that the
logging filter uses (`redact_known`) to mask them in any text.
"""

from __future__ import annotations

import hmac
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs
from dotenv import dotenv_values

API_KEY_VAR = "EXTENDED_API_KEY"
PRIVATE_KEY_VAR = "EXTENDED_STARK_PRIVATE_KEY"
PUBLIC_KEY_VAR = "EXTENDED_STARK_PUBLIC_KEY"
VAULT_ID_VAR = "EXTENDED_VAULT_ID"
SECRET_VARS = (API_KEY_VAR, PRIVATE_KEY_VAR, PUBLIC_KEY_VAR, VAULT_ID_VAR)

DEFAULT_ENV_FILE = Path(".env")
MASK = "***"
# Shorter values are not real keys; masking them would blank out ordinary log text.
MIN_SECRET_LENGTH = 8

_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


class SecretsError(ValueError):
    """Credentials are malformed; `problems` name the variables, never their values."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SecretValue:
    """A string that shows as `***` everywhere; `reveal()` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a secret must be a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretValue('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((SecretValue, self._value))

    # Copies stay in memory; serialising (pickle) would put the value somewhere else.
    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretValue:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("secret values cannot be pickled")


@attrs.frozen(kw_only=True)
class Secrets:
    """Exchange credentials. The public key and vault id are not secret (the venue
    publishes them as `l2Key` / `l2Vault`); the API key and Stark private key are."""

    api_key: SecretValue | None = None
    stark_private_key: SecretValue | None = None
    stark_public_key: str | None = None
    vault_id: int | None = None

    def missing(self) -> tuple[str, ...]:
        """Names of the environment variables that supplied nothing."""
        values = {
            API_KEY_VAR: self.api_key,
            PRIVATE_KEY_VAR: self.stark_private_key,
            PUBLIC_KEY_VAR: self.stark_public_key,
            VAULT_ID_VAR: self.vault_id,
        }
        return tuple(name for name, value in values.items() if value is None)

    @property
    def has_api_key(self) -> bool:
        """Enough for read-only calls, cancels and the dead man's switch (SPEC §2.1)."""
        return self.api_key is not None

    @property
    def has_trading_credentials(self) -> bool:
        """Enough to sign and place orders."""
        return not self.missing()

    def secret_values(self) -> tuple[SecretValue, ...]:
        return tuple(v for v in (self.api_key, self.stark_private_key) if v is not None)


# -- loading -----------------------------------------------------------------------------


def load_secrets(
    env_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    read_env_file: bool = True,
    register: bool = True,
) -> Secrets:
    """Read the four `EXTENDED_*` variables: the real environment first, then `env_file`.

    `env_file` None means `./.env` if it exists; an explicit path must exist. Nothing is
    written to `os.environ`. Loaded secrets are registered for `redact_known` unless
    `register` is False. Raises SecretsError for a missing explicit file or bad values.
    """
    real = os.environ if environ is None else environ
    from_file: Mapping[str, str | None] = {}
    if read_env_file:
        path = Path(env_file) if env_file is not None else DEFAULT_ENV_FILE
        if path.is_file():
            # interpolate=False: a key is taken literally, never expanded from other vars.
            from_file = dotenv_values(path, interpolate=False)
        elif env_file is not None:
            raise SecretsError([f"{path}: env file not found"])

    def lookup(name: str) -> str | None:
        raw = real[name] if name in real else from_file.get(name)
        raw = (raw or "").strip()
        return raw or None

    problems: list[str] = []
    api_key = lookup(API_KEY_VAR)
    if api_key is not None and any(ch.isspace() for ch in api_key):
        problems.append(f"{API_KEY_VAR}: expected a single token without spaces")
    private_key = lookup(PRIVATE_KEY_VAR)
    if private_key is not None and not _HEX.fullmatch(private_key):
        problems.append(f"{PRIVATE_KEY_VAR}: expected a hex string such as 0x1a2b…")
    public_key = lookup(PUBLIC_KEY_VAR)
    if public_key is not None and not _HEX.fullmatch(public_key):
        problems.append(f"{PUBLIC_KEY_VAR}: expected a hex string such as 0x1a2b…")
    vault_raw = lookup(VAULT_ID_VAR)
    vault_id: int | None = None
    if vault_raw is not None:
        if vault_raw.isdecimal():
            vault_id = int(vault_raw)
        else:
            problems.append(f"{VAULT_ID_VAR}: expected a non-negative integer (the account's l2Vault)")
    if problems:
        raise SecretsError(problems)
    secrets = Secrets(
        api_key=SecretValue(api_key) if api_key is not None else None,
        stark_private_key=SecretValue(private_key) if private_key is not None else None,
        stark_public_key=public_key,
        vault_id=vault_id,
    )
    if register:
        for value in secrets.secret_values():
            register_secret(value)
    return secrets


# -- redaction ---------------------------------------------------------------------------


def _patterns(value: str) -> list[str]:
    """Regex alternatives for one secret: the text itself, and for a hex key also the
    forms it takes once parsed (with or without 0x, leading zeros dropped, decimal)."""
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return []
    out = [re.escape(value)]
    if _HEX.fullmatch(value):
        digits = value[2:] if value[:2].lower() == "0x" else value
        core = digits.lstrip("0")
        if len(core) >= MIN_SECRET_LENGTH:
            out.append(r"(?:0x)?0*" + re.escape(core))
            decimal = str(int(core, 16))
            if len(decimal) >= MIN_SECRET_LENGTH:
                out.append(decimal)
    return out


def _compile(values: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = sorted({p for v in values for p in _patterns(v)}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _plain(value: str | SecretValue) -> str:
    return value.reveal() if isinstance(value, SecretValue) else value


def redact(text: str, secrets: Secrets) -> str:
    """`text` with every occurrence of the API key and private key replaced by `***`."""
    pattern = _compile(v.reveal() for v in secrets.secret_values())
    return pattern.sub(MASK, text) if pattern else text


_registry_lock = threading.Lock()
_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str | SecretValue) -> None:
    """Mask `value` in everything `redact_known` sees from now on (thread-safe)."""
    global _registered_pattern
    plain = _plain(value)
    with _registry_lock:
        if plain in _registered:
            return
        _registered.add(plain)
        _registered_pattern = _compile(_registered)


def redact_known(text: str) -> str:
    """`text` with every registered secret masked; for the logging filter."""
    pattern = _registered_pattern
    return pattern.sub(MASK, text) if pattern else text


def clear_registered_secrets() -> None:
    """Forget every registered secret (tests; a process normally never needs this)."""
    global _registered_pattern
    with _registry_lock:
        _registered.clear()
        _registered_pattern = None
