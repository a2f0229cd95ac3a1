"""Top-level URL map: accounts, admin, the basemap, and each app's own routes."""
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from geoweb import accounts, health
from core.ratelimit import limit_by_ip
from predictor import views as predictor_views

urlpatterns = [
    # The admin's login counts against the same per-address login limit as the site's (one allowance for both).
    path(f"{settings.ADMIN_PATH}login/", limit_by_ip("login", username_field="username")(admin.site.login)),
    path(settings.ADMIN_PATH, admin.site.urls),
    path("accounts/login/", limit_by_ip("login", username_field="username")(auth_views.LoginView.as_view()),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/delete/", predictor_views.delete_account, name="account-delete"),
    path("healthz", health.healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page's <link rel=icon> says.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.ico"), permanent=True)),
    path("basemap/countries.geojson", predictor_views.basemap, name="basemap"),
    path("", include("predictor.urls")),
    path("", include("games.urls")),
    path("", include("results.urls")),
]

# A database outage noticed outside a view (e.g. while the session is saved) still gets the 503 page.
handler500 = "core.outage.server_error"

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
