"""Pieces below both apps (games and predictor) that neither owns: the image door, rate limiting, outage pages, and
the Im2GPS file formats.

- images.py: the only door for every image the app stores or serves (uploads, game photos, the starter pack).
- photo_metadata.py: JPEG segments (every comment) and WebP chunks, read without decoding; the metadata check.
- im2gps.py: the one reader of the Im2GPS / GeoEstimation files (results, metadata CSV, the photos' comments),
  Django-free so that predictor/ml (evaluation) and games (import) share its rules.
- ratelimit.py, outage.py: HTTP 429 and 503 handling.

Dependencies point one way: geoweb, games and predictor may import core; core imports neither app. photo_metadata
and im2gps import no Django (predictor/ml may use them).
"""
