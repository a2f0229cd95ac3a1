"""Pieces below both apps (games and predictor) that neither owns: the image door, rate limiting, outage pages.

Dependencies point one way: geoweb, games and predictor may import core; core imports neither app.
"""
