"""Staff view of the rate-limit lock-outs (read-only audit log)."""
from django.contrib import admin

from core.models import LockOut


@admin.register(LockOut)
class LockOutAdmin(admin.ModelAdmin):
    list_display = ("created_at", "scope", "client_ip", "username", "path", "retry_after_s")
    list_filter = ("scope",)
    search_fields = ("client_ip", "username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
