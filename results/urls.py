"""Routes of the public model cards (/models/) and people-against-models results (/results/)."""
from django.urls import path

from results import views

urlpatterns = [
    path("models/", views.models, name="models"),
    path("results/", views.results, name="results"),
    path("results/rounds.csv", views.export, name="results-export"),
    path("<str:page>/chart/<slug:name>.svg", views.chart, name="results-chart"),
]
