"""Websocket routes of the predictor."""
from django.urls import path

from predictor.consumers import AnalysisConsumer

websocket_urlpatterns: list = [
    path("ws/analysis/<int:analysis_id>/", AnalysisConsumer.as_asgi()),
]
