"""The admin's user pages delete accounts through the upload service, so that a user's analysis files go with them
(nothing deletes files on a signal: see predictor/services/retention.py)."""
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from predictor import services

User = get_user_model()


class AccountAdmin(UserAdmin):
    def delete_model(self, request, obj):
        services.delete_account(user=obj)

    def delete_queryset(self, request, queryset):
        for user in list(queryset):
            services.delete_account(user=user)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AccountAdmin)
