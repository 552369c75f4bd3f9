"""The one error type a person is meant to read."""

from __future__ import annotations


class UserError(Exception):
    """A failure with a message a person can act on; becomes a `Failed` event as is."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
