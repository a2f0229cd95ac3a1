"""The exceptions of the upload services."""
from __future__ import annotations


class UploadRefused(Exception):
    """The upload is refused for a reason other than the photo itself (paused, over quota)."""

    def __init__(self, message: str, *, status: int, retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class AnalysisGone(Exception):
    """The analysis was deleted or taken over by another worker while this one worked on it."""
