from django.apps import AppConfig


class PredictorConfig(AppConfig):
    name = "predictor"
    verbose_name = "Predictor and upload analysis"

    def ready(self):
        from django.db.models.signals import post_delete

        from predictor.models import Analysis

        post_delete.connect(_delete_files, sender=Analysis, dispatch_uid="predictor-analysis-files")


def _delete_files(sender, instance, **kwargs):
    """However an analysis goes (its page, "delete all", account deletion, the admin), its files go with it."""
    from django.core.files.storage import default_storage

    from predictor.services import analysis_files

    for name in analysis_files(instance):
        default_storage.delete(name)
