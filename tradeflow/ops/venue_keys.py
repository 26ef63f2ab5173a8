"""API keys of the real venues (Alpaca, ccxt exchanges), from the environment or
from the file named by TRADEFLOW_VENUE_CREDENTIALS_FILE (outside the
repository, `NAME=value` lines or a JSON object; the environment wins).

A key is a Secret: its repr and str are masked, so a key that ends up in a log
line, a traceback's locals or an exception message shows as `***`. Only the
SDK call that needs it reads `.reveal()`. A missing key is one line naming the
variable (and the file, when one is set), never a value.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tradeflow.ops.roles import CredentialsError, read_secrets_file

VENUE_CREDENTIALS_FILE_VAR = "TRADEFLOW_VENUE_CREDENTIALS_FILE"


class MissingCredential(CredentialsError):
    """A venue key that is set nowhere; the message names the variable."""


@dataclass(frozen=True)
class Secret:
    name: str
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return f"Secret({self.name}=***)"


def venue_secret(name: str, environ: Mapping[str, str] | None = None) -> Secret:
    """The key `name` from the environment, else from the venue credentials file."""
    env = os.environ if environ is None else environ
    if env.get(name):
        return Secret(name, env[name])
    file = env.get(VENUE_CREDENTIALS_FILE_VAR)
    if file and (value := read_secrets_file(Path(file)).get(name)):
        return Secret(name, value)
    where = f" or in {VENUE_CREDENTIALS_FILE_VAR} ({file})" if file else f" (or in a file named by {VENUE_CREDENTIALS_FILE_VAR})"
    raise MissingCredential(f"missing credential: set {name}{where}")
