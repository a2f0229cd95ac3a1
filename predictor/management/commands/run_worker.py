"""Run the inference worker standalone: claims queued analyses in batches until SIGTERM or Ctrl-C."""
import signal

from django.core.management.base import BaseCommand

from predictor.worker import Worker, apply_memory_limit, new_worker_id


class Command(BaseCommand):
    help = "Run the upload-analysis inference worker (one process per GPU)."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=None, help="analyses claimed at once (WORKER_BATCH)")
        parser.add_argument("--once", action="store_true", help="run one batch (if any is queued) and exit")

    def handle(self, *args, batch=None, once=False, **options):
        worker = Worker(worker_id=new_worker_id("worker"), batch=batch)
        if once:
            count = worker.run_once()
            self.stdout.write(f"ran {count} analyses")
            return
        # A worker process of its own: capped like the embedded one (WORKER_MEMORY_LIMIT_MB).
        self.stderr.write(apply_memory_limit())

        def stop(signum, frame):
            self.stderr.write("stopping after the batch in hand")
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run_forever()
