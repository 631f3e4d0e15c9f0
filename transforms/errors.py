"""The one shape of a refusal: a stable reason code (what dead letters count by) and detail."""

from __future__ import annotations


class Rejected(Exception):
    """Input a stage cannot turn into records; `reason` is a short, stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
