from django.apps import AppConfig


class GamesConfig(AppConfig):
    name = "games"
    verbose_name = "Play mode"

    def ready(self):
        from games import recompute
        from predictor import jobs

        # Every process registers the kind; only the inference workers claim and run such jobs.
        jobs.register(recompute.KIND, run=recompute.run_job, on_requeued=recompute.job_requeued,
                      on_failed=recompute.job_failed)
