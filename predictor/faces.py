"""Face detection for the sensitive-scene rule: OpenCV's frontal-face Haar cascade, shipped inside the
opencv-python-headless wheel (cv2.data.haarcascades), so it works offline. Limits: docs/responsible-use.md."""
from __future__ import annotations

import functools
import threading

import numpy as np
from PIL import Image

# alt2 rather than "default": on the 30 outdoor photos under shared/data the default cascade found faces in 6
# (leaves, branches, a cloud), alt2 in none, and both find the face in matplotlib's grace_hopper.jpg.
CASCADE = "haarcascade_frontalface_alt2.xml"
# Faces are looked for on a copy at most this many pixels on its longer side; smaller faces are missed.
DETECT_MAX_SIDE = 1024
MIN_FACE_PX = 24
_lock = threading.Lock()


@functools.cache
def _classifier():
    import cv2

    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if classifier.empty():
        raise RuntimeError(f"the OpenCV cascade {CASCADE} could not be loaded")
    return classifier


def count_faces(photo: Image.Image) -> int:
    """Number of frontal faces the cascade finds in the photo. Raises on a detector failure (callers fail closed)."""
    import cv2

    grey = photo.convert("L")
    if max(grey.size) > DETECT_MAX_SIDE:
        grey = grey.copy()
        grey.thumbnail((DETECT_MAX_SIDE, DETECT_MAX_SIDE), Image.Resampling.BICUBIC)
    pixels = cv2.equalizeHist(np.asarray(grey, dtype=np.uint8))
    with _lock:  # one classifier object per process; detectMultiScale is not documented as thread-safe
        found = _classifier().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(MIN_FACE_PX, MIN_FACE_PX))
    return int(len(found))
