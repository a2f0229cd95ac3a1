"""The app's routes plus a plain Django hello-world view, served by the same process for bench_game_api.py."""
from django.http import HttpResponse
from django.urls import path

from geoweb.urls import urlpatterns as app_urlpatterns


def hello(request):
    return HttpResponse("hello, world", content_type="text/plain")


urlpatterns = [path("bench/hello/", hello)] + app_urlpatterns
