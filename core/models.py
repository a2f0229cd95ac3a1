"""Records kept by core: the audit log of rate-limit lock-outs (who was shut out of what, from where, how long)."""
from __future__ import annotations

from django.db import models


class LockOut(models.Model):
    """One row each time a client goes over a rate limit (core/ratelimit.py): the start of a lock-out, not every
    refused request. For logins, the user name that was tried is kept, so staff can see an attack on an account."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    scope = models.CharField(max_length=40, db_index=True)  # the rule in settings.RATE_LIMITS: login, upload, ...
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    username = models.CharField(max_length=150, blank=True)
    path = models.CharField(max_length=200, blank=True)
    retry_after_s = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "rate-limit lock-out"

    def __str__(self) -> str:
        return f"{self.scope} lock-out of {self.client_ip or 'unknown address'} at {self.created_at:%Y-%m-%d %H:%M}"
