"""Routes of the upload analysis and the partition explorer (the game-image explorer is in games.urls)."""
from django.urls import path

from predictor import views

urlpatterns = [
    path("analyze/", views.analyze, name="analyze"),
    path("analyze/<int:analysis_id>/", views.analysis_page, name="analysis"),
    path("analyze/<int:analysis_id>/photo.jpg", views.analysis_photo, name="analysis-photo"),
    path("analyze/<int:analysis_id>/thumbnail.jpg", views.analysis_thumbnail, name="analysis-thumbnail"),
    path("analyze/<int:analysis_id>/cam.png", views.analysis_cam, name="analysis-cam"),
    path("analyze/<int:analysis_id>/cam/<int:index>.png", views.analysis_cell_cam, name="analysis-cell-cam"),
    path("analyze/<int:analysis_id>/delete/", views.delete_analysis, name="analysis-delete"),
    path("analyses/", views.my_analyses, name="my-analyses"),
    path("analyses/delete-all/", views.delete_all_analyses, name="analyses-delete-all"),
    path("terms/", views.terms, name="terms"),
    path("explore/partitions/", views.partition_explorer, name="partition-explorer"),
    path("explore/partitions/<str:name>.geojson", views.partition_cells, name="partition-cells"),
]
