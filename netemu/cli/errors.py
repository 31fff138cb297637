"""The CLI's user-facing error, in a module of its own: netemu.cli.main catches it for every verb
without loading the HTTP client (netemu.cli.client) that only the verbs talking to a lab need."""
from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed as `error: ...`, exit code 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
