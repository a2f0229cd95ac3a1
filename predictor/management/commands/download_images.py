"""Download the photos of a URL list into a folder that preprocess_images reads.

    manage.py download_images --urls mp16_urls.csv --output data/mp16 --size-suffix z --shuffle
    manage.py preprocess_images --source csv --metadata mp16_places365.csv --images data/mp16/images ...

Every photo passes the app's image door (core.images) and is stored re-encoded, without metadata. Outcomes are
appended to OUTPUT/downloads.csv (source URL, licence, author, status); running the command again resumes.
"""
from __future__ import annotations

import random
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from predictor.ml.train.download import (FLICKR_SIZES, METADATA_FILE, RECORD_FILE, CleanPhoto, DownloadOptions,
                                         DownloadReport, ImageRefused, download, read_url_list, write_metadata)


def through_the_door(data: bytes) -> CleanPhoto:
    """The bytes as the app stores any photo: checked, decoded, upright, re-encoded, metadata dropped."""
    from core import images

    try:
        clean = images.clean_upload(data)
    except images.RejectedImage as error:
        # 400: damaged or cut off; 413/415: too large, or not a photo the app accepts.
        raise ImageRefused("corrupt" if error.status == 400 else "refused", error.message) from None
    return CleanPhoto(clean.jpeg, clean.width, clean.height)


class Command(BaseCommand):
    help = "Fetch the photos of a URL list (bounded, rate-limited, retried, resumable) through the image door."

    def add_arguments(self, parser):
        parser.add_argument("--urls", required=True, type=Path,
                            help="CSV of id,url (TIB's headerless lists) or with a header naming id, url and "
                                 "optionally lat, lon, author, license")
        parser.add_argument("--output", required=True, type=Path,
                            help="writes OUTPUT/images/<id>.jpg, OUTPUT/downloads.csv and OUTPUT/metadata.csv")
        parser.add_argument("--size-suffix", choices=sorted(FLICKR_SIZES),
                            help="fetch this Flickr size (z = 640 px, as TIB did); other URLs are fetched as listed")
        parser.add_argument("--workers", type=int, default=16, help="downloads in flight at once (default 16)")
        parser.add_argument("--per-host", type=float, default=10.0,
                            help="requests per second to any one host (default 10; 0 = no limit)")
        parser.add_argument("--retries", type=int, default=3, help="further tries for transient failures")
        parser.add_argument("--backoff", type=float, default=1.0,
                            help="seconds before the first retry, doubled for each next one (default 1)")
        parser.add_argument("--timeout", type=float, default=20.0, help="seconds a server may stay silent")
        parser.add_argument("--shuffle", action="store_true", help="fetch in a shuffled order (spreads the hosts)")
        parser.add_argument("--seed", type=int, default=0, help="order of --shuffle")
        parser.add_argument("--limit", type=int, help="fetch at most this many of the listed photos")

    def handle(self, *args, **options):
        for name in ("workers", "retries"):
            if options[name] < (1 if name == "workers" else 0):
                raise CommandError(f"--{name} must be at least {1 if name == 'workers' else 0}")
        if not options["urls"].is_file():
            raise CommandError(f"{options['urls']}: no such file")
        report = DownloadReport()
        try:
            rows = read_url_list(options["urls"], report)
        except (ValueError, UnicodeDecodeError) as error:
            raise CommandError(str(error)) from None
        if options["shuffle"]:
            random.Random(options["seed"]).shuffle(rows)
        if options["limit"] is not None:
            report.left = max(0, len(rows) - max(0, options["limit"]))
            rows = rows[:max(0, options["limit"])]
        if not rows:
            raise CommandError(f"{options['urls']}: no usable row (id and http(s) URL)"
                               + (f"; e.g. {report.examples[0]}" if report.examples else ""))
        download_options = DownloadOptions(
            workers=options["workers"], per_host=options["per_host"], retries=options["retries"],
            backoff=options["backoff"], timeout=options["timeout"], max_bytes=settings.UPLOAD_MAX_BYTES,
            size_suffix=options["size_suffix"])
        output: Path = options["output"]
        try:
            output.mkdir(parents=True, exist_ok=True)
            download(rows, output, clean=through_the_door, options=download_options, report=report,
                     progress=options["verbosity"] > 0)
            with_coordinates = write_metadata(output)
        except OSError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(report.summary())
        for example in report.examples[:5]:
            self.stdout.write(f"  {example}")
        self.stdout.write(f"record of every photo (source URL, licence, outcome): {output / RECORD_FILE}")
        if with_coordinates:
            self.stdout.write(f"{with_coordinates} photos with coordinates listed in {output / METADATA_FILE}")
        if report.interrupted:
            raise CommandError("interrupted: run the same command again to continue where it stopped")
        if report.counts["failed"]:
            self.stderr.write(f"warning: {report.counts['failed']} downloads failed on every try (network or "
                              "server errors); running the command again tries them again")
        if not report.counts["fetched"] and not report.already:
            raise CommandError("no photo could be fetched")
