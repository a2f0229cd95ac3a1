"""The events of an upload, limited to the granularity its owner may see (docs/responsible-use.md).

"fine" is the full answer (events.py). "region" keeps only the coarse partitioning: its top cells, their outlines,
the estimate moved to the centre of the coarse cell that holds it, and country/region names. "country" keeps only
countries: the estimate at a point inside the country, candidates aggregated per country, no cells at all.
"withheld" keeps no location at all: no cells, no candidates, an estimate without a point (the scene stays).
The limit is applied before an event is stored or sent, so replay, pages and the JSON never hold more.
"""
from __future__ import annotations

import functools

import s2sphere

from predictor import events, places
from predictor.ml.geodesy import great_circle_km
from predictor.ml.partitions import Partitioning
from predictor.ml.prediction import Prediction
from predictor.policy import COUNTRY, FINE, REGION, WITHHELD

CENTRE_DECIMALS = 2
COUNTRY_DECIMALS = 1
FINE_DECIMALS = 3  # shown; the fine estimate is stored to 5
COUNTRY_MIN_RADIUS_KM = 500.0
COUNTRY_CANDIDATE_CELLS = 50
WITHHELD_LABEL = "No location given"


@functools.lru_cache(maxsize=65536)
def cell_centre(token: str) -> tuple[float, float]:
    """The geometric centre of an S2 cell, rounded: public knowledge about the partitioning, not about the photo."""
    point = s2sphere.LatLng.from_point(s2sphere.Cell(s2sphere.CellId.from_token(token)).get_center())
    return round(point.lat().degrees, CENTRE_DECIMALS), round(point.lng().degrees, CENTRE_DECIMALS)


@functools.lru_cache(maxsize=65536)
def cell_radius_km(token: str) -> float:
    """Distance from the centre of an S2 cell to its farthest corner."""
    cell = s2sphere.Cell(s2sphere.CellId.from_token(token))
    centre = s2sphere.LatLng.from_point(cell.get_center())
    corners = [s2sphere.LatLng.from_point(cell.get_vertex(k)) for k in range(4)]
    return max(float(great_circle_km(centre.lat().degrees, centre.lng().degrees, c.lat().degrees, c.lng().degrees))
               for c in corners)


@functools.cache
def country_point(name: str) -> tuple[float, float]:
    """A point inside the named Natural Earth country, rounded to a tenth of a degree."""
    frame = places.countries()
    rows = frame[frame["name"] == name]
    if rows.empty:
        return 0.0, 0.0
    point = rows.geometry.iloc[0].representative_point()
    return round(point.y, COUNTRY_DECIMALS), round(point.x, COUNTRY_DECIMALS)


@functools.cache
def country_radius_km(name: str) -> float:
    """How far the named Natural Earth country reaches from its point (`country_point`): the farthest corner of
    its bounding box, at most 2,500 km."""
    frame = places.countries()
    rows = frame[frame["name"] == name]
    if rows.empty:
        return 2500.0
    lat, lon = country_point(name)
    west, south, east, north = rows.geometry.iloc[0].bounds
    return float(min(2500.0, max(float(great_circle_km(lat, lon, y, x)) for x in (west, east) for y in (south, north))))


def country_label(place: dict) -> str:
    return places.place_label(place)


class Limiter:
    """Builds the partitions, heat-map and estimate events of one prediction at one level."""

    def __init__(self, prediction: Prediction, partitionings: list[Partitioning], level: str):
        self.prediction = prediction
        self.partitionings = list(partitionings)
        self.level = level
        self.coarse = self.partitionings[0]  # bundles list partitionings from coarse to fine
        self.coarse_cells = list(prediction.top_cells.get(self.coarse.name, []))
        self._named: list[dict] | None = None

    # --- the three events that carry locations -------------------------------------------------------------------

    def partitions_event(self) -> dict:
        if self.level == FINE:
            return events.partitions_event(self.prediction)
        if self.level == REGION:
            cells = [self._coarse_cell(c) for c in self.coarse_cells[:events.PARTITION_TOP_CELLS]]
            return {"type": "partitions", "partitionings": {self.coarse.name: cells}, "granularity": REGION}
        return {"type": "partitions", "partitionings": {}, "granularity": self.level}

    def heatmap_event(self) -> dict:
        if self.level == FINE:
            return events.heatmap_event(self.prediction, self.partitionings)
        if self.level in (COUNTRY, WITHHELD):
            return {"type": "heatmap", "geojson": {"type": "FeatureCollection", "features": []}, "cells": 0,
                    "granularity": self.level}
        only_coarse = Prediction(
            model_name=self.prediction.model_name, untrained=self.prediction.untrained, scene=self.prediction.scene,
            top_cells={self.coarse.name: self.coarse_cells}, argmax={}, lat=0.0, lon=0.0, confidence=0.0)
        event = events.heatmap_event(only_coarse, self.partitionings)
        for feature in event["geojson"]["features"]:
            lat, lon = cell_centre(feature["properties"]["token"])
            feature["properties"]["lat"], feature["properties"]["lon"] = lat, lon
        event["granularity"] = REGION
        return event

    def estimate_event(self) -> dict:
        """The estimate the page shows, and what its confidence and circle mean at this level.

        At a limited level the estimate is the first of the shown candidates (the most probable coarse cell, or
        the country with the most probability among the coarse cells), and its confidence is that candidate's
        probability: what the page shows must not be about the hidden fine estimate.
        """
        if self.level == FINE:
            return {**events.estimate_event(self.prediction), "granularity": FINE, "decimals": FINE_DECIMALS,
                    "confidence_of": "probability within 25 km", "radius_of": "half of the probability"}
        if self.level == WITHHELD:
            return {"type": "estimate", "lat": None, "lon": None, "place": None, "label": WITHHELD_LABEL,
                    "confidence": None, "radius_km": None, "candidates": [], "granularity": WITHHELD,
                    "decimals": None, "confidence_of": "", "radius_of": ""}
        if self.level == REGION:
            cells = self.coarse_cells[:events.ESTIMATE_CANDIDATES]
            named = self._named_coarse_cells()[:len(cells)]
            candidates = [dict(self._coarse_cell(c), place=p, label=places.place_label(p))
                          for c, p in zip(cells, named)]
            if candidates:
                top = candidates[0]
                lat, lon, place = top["lat"], top["lon"], top["place"]
                radius, confidence = cell_radius_km(top["token"]), top["probability"]
            else:  # a model that ranks no coarse cells: its own estimate's cell
                token = self._coarse_token_at(self.prediction.lat, self.prediction.lon)
                lat, lon = cell_centre(token) if token else (round(self.prediction.lat), round(self.prediction.lon))
                [place] = places.reverse_geocode([(lat, lon)])
                radius, confidence = (cell_radius_km(token) if token else 250.0), 0.0
            return self._estimate(lat, lon, place, confidence, radius, candidates, decimals=CENTRE_DECIMALS,
                                  confidence_of="probability of this cell", radius_of="the estimated cell")
        candidates = self._country_candidates()
        if candidates:
            top = candidates[0]
            lat, lon, place, confidence = top["lat"], top["lon"], top["place"], top["probability"]
        else:
            [place] = places.reverse_geocode([(self.prediction.lat, self.prediction.lon)])
            lat, lon = country_point(place["country"])
            confidence = 0.0
        return self._estimate(lat, lon, place, confidence, max(COUNTRY_MIN_RADIUS_KM, country_radius_km(
            place["country"])), candidates, decimals=COUNTRY_DECIMALS,
            confidence_of="probability of this country", radius_of="around the estimated country")

    def refined_event(self) -> dict | None:
        """A refining model's judgement (Search within Cell: prediction density, localizable) and, at fine level
        only, its refined point and what was done. None for models that do not refine. The background photos the
        answer came from are never sent, nor their positions."""
        refined = self.prediction.refined
        if refined is None:
            return None
        event = {"type": "refined", "density": round(float(refined.score), 6), "localizable": bool(refined.localizable),
                 "granularity": self.level}
        if self.level == FINE:
            event.update(lat=round(float(refined.lat), 5), lon=round(float(refined.lon), 5), note=refined.note,
                         decimals=FINE_DECIMALS)
        elif self.level == WITHHELD:
            event.update(lat=None, lon=None, note="No location is given for this photo.")
        else:
            event.update(lat=None, lon=None, note=f"The refined estimate is not shown at {self.level} level.")
        return event

    def answer_cell(self):
        """The coarse cell a limited answer stands for, whose activation map the page may show: at region level
        the estimated cell, at country level the most probable coarse cell inside the estimated country. None at
        fine level (the estimate's own fine cell is used), when the answer is withheld, or when there is none."""
        if self.level in (FINE, WITHHELD) or not self.coarse_cells:
            return None
        if self.level == REGION:
            return self.coarse_cells[0]
        candidates = self._country_candidates()
        country = candidates[0]["place"]["country"] if candidates else None
        for cell, place in zip(self.coarse_cells, self._named_coarse_cells()):
            if place["country"] == country:
                return cell
        return None

    # --- helpers -------------------------------------------------------------------------------------------------

    def _estimate(self, lat, lon, place, confidence, radius, candidates, *, decimals, confidence_of, radius_of):
        place = {k: place[k] for k in ("country", "iso2", "continent", "region", "offshore")}
        return {"type": "estimate", "lat": lat, "lon": lon, "place": place, "label": places.place_label(place),
                "confidence": round(float(confidence), 6), "radius_km": round(min(radius, 2500.0), 1),
                "candidates": candidates, "granularity": self.level, "decimals": decimals,
                "confidence_of": confidence_of, "radius_of": radius_of}

    def _named_coarse_cells(self) -> list[dict]:
        """Country and region of the centres of the most probable coarse cells (computed once)."""
        if self._named is None:
            cells = self.coarse_cells[:COUNTRY_CANDIDATE_CELLS]
            self._named = places.reverse_geocode([cell_centre(c.token) for c in cells])
        return self._named

    def _coarse_cell(self, cell) -> dict:
        lat, lon = cell_centre(cell.token)
        return {"token": cell.token, "class_index": int(cell.class_index),
                "probability": round(float(cell.probability), 6), "lat": lat, "lon": lon}

    def _coarse_token_at(self, lat: float, lon: float) -> str | None:
        index = self.coarse.class_of(lat, lon)
        if index is not None:
            return self.coarse.tokens[index]
        return self.coarse_cells[0].token if self.coarse_cells else None

    def _country_candidates(self) -> list[dict]:
        cells = self.coarse_cells[:COUNTRY_CANDIDATE_CELLS]
        named = self._named_coarse_cells()
        totals: dict[str, float] = {}
        first_place: dict[str, dict] = {}
        for cell, place in zip(cells, named):
            totals[place["country"]] = totals.get(place["country"], 0.0) + float(cell.probability)
            first_place.setdefault(place["country"], place)
        ranked = sorted(totals, key=lambda name: -totals[name])[:events.ESTIMATE_CANDIDATES]
        out = []
        for name in ranked:
            place = {**first_place[name], "offshore": False}
            lat, lon = country_point(name)
            out.append({"token": None, "probability": round(totals[name], 6), "lat": lat, "lon": lon,
                        "place": place, "label": places.place_label(place)})
        return out
