"""Sign-up; log in and log out are Django's own views."""
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.ratelimit import limit_by_ip
from core.redirects import safe_next


@require_http_methods(["GET", "POST"])
@limit_by_ip("signup", username_field="username")
def signup(request):
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(safe_next(request, request.GET.get("next"), default="home"))
    return render(request, "registration/signup.html", {"form": form})
