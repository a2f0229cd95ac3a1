"""Staff views of the responsible-use records: the upload audit log (read-only), the kill-switch toggle, terms."""
from django.contrib import admin

from predictor.models import SiteSettings, TermsAcceptance, UploadAudit


@admin.register(UploadAudit)
class UploadAuditAdmin(admin.ModelAdmin):
    list_display = ("created_at", "username", "image_sha256", "model_name", "granularity", "coarsening_reason",
                    "analysis_id")
    list_filter = ("granularity", "model_name")
    search_fields = ("username", "image_sha256")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin):
    list_display = ("__str__", "uploads_paused", "updated_at")

    def has_add_permission(self, request):
        return not SiteSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TermsAcceptance)
class TermsAcceptanceAdmin(admin.ModelAdmin):
    list_display = ("user", "version", "accepted_at")
    search_fields = ("user__username",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
