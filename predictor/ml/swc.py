"""The "swc" model kind: Search within Cell with Prediction Density (visloc-estimation; see predictor.ml.retrieval).

One geolocation network (any backbone of predictor.ml.network) with its classification heads and a retrieval head
on the same pooled features, a Places365 scene classifier (for the S3 scene the safeguards read), and optionally a
background collection: every training photo's embedding, coordinate and fine cell (`manage.py build_background`).
After the cells are decoded, the model searches the background photos inside the most probable f* cell(s), clusters
the nearest ones with DBSCAN and answers with the medoid of the largest cluster (`RetrievalRefinement`); PD says
whether the photo is localizable. Without a background photo in the cell it keeps the classifier's answer and says so.

Bundle files, besides an ISN bundle's single network and scene classifier (predictor.ml.isn)::

    weights/retrieval.safetensors   the RetrievalHead
    background/background.json, embeddings.f16, coords.f32, offsets.i64   (optional) the background collection

config.json adds "retrieval" {weights, in_dim, dim, positive_km, contrastive_weight}, "search" (SearchSettings) and
"background" ({folder, images, ...} or null).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .bundle import BundleError, BundleWriter, check_weight_shapes, model_card_text, require_keys, state_dict_shapes
from .hierarchy import HierarchyOutput
from .isn import BASE, ISN_KIND, SINGLE, ISNModel, write_scene_classifier
from .model import CROP_INPUT, PHOTO_INPUT, ModelKind, ModelOutput, Runner, ServedNetwork
from .network import GeoNetwork
from .partitions import Partitioning
from .prediction import Refined
from .preprocess import CropGeometry, CropSpec, aggregate_crops
from .retrieval import (BACKGROUND_FILES, EMBEDDING_DIM, BackgroundCollection, RetrievalHead, SearchSettings,
                        refine, unit_vectors)
from .scenes import SceneMapping

KIND = "swc"
RETRIEVAL_WEIGHTS = "weights/retrieval.safetensors"
BACKGROUND_FOLDER = "background"


class SwCNetwork(nn.Module):
    """GeoNetwork + RetrievalHead on its pooled features: forward -> [logits per partitioning..., embedding]."""

    def __init__(self, geo: GeoNetwork, retrieval: RetrievalHead | None = None, *, dim: int = EMBEDDING_DIM):
        super().__init__()
        self.geo = geo
        self.retrieval = retrieval if retrieval is not None else RetrievalHead(geo.feature_dim, dim)
        if self.retrieval.in_dim != geo.feature_dim:
            raise ValueError(f"retrieval head takes {self.retrieval.in_dim} features, the backbone gives "
                             f"{geo.feature_dim}")
        # What the training loop and checkpoints read from a GeoNetwork.
        self.backbone, self.num_classes = geo.backbone, geo.num_classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.geo.pool(self.geo.body(x)).flatten(1)
        return [head(pooled) for head in self.geo.heads] + [self.retrieval(pooled)]


@dataclass
class SwCOutput(ModelOutput):
    embeddings: torch.Tensor | None = None  # [N, dim], crops averaged, unit length


@dataclass(eq=False)
class SwCModel:
    """A loaded swc bundle: the ISN-format single network and scene classifier, the retrieval head, the background
    collection (or None) and the search settings."""

    base: ISNModel
    network: SwCNetwork
    background: BackgroundCollection | None
    search: SearchSettings
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    kind = KIND

    # --- GeoModel members, from the ISN-format part ---
    name = property(lambda self: self.base.name)
    untrained = property(lambda self: self.base.untrained)
    partitionings = property(lambda self: self.base.partitionings)
    hierarchy = property(lambda self: self.base.hierarchy)
    crops = property(lambda self: self.base.crops)
    config = property(lambda self: self.base.config)
    model_card = property(lambda self: self.base.model_card)
    path = property(lambda self: self.base.path)
    scene = property(lambda self: self.base.scene)
    scene_mapping = property(lambda self: self.base.scene_mapping)
    scene_untrained = property(lambda self: self.base.scene_untrained)
    scene_labels = property(lambda self: self.base.scene_labels)

    @property
    def partitioning_names(self) -> list[str]:
        return self.base.partitioning_names

    def to(self, device: str | torch.device) -> "SwCModel":
        self.device = torch.device(device)
        self.base.to(self.device)
        self.network.to(self.device).eval()
        return self

    def served_networks(self) -> list[ServedNetwork]:
        return [ServedNetwork(self.base.scene.network, PHOTO_INPUT), ServedNetwork(self.network, CROP_INPUT)]

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> SwCOutput:
        run = run or (lambda network, x: network(x))
        k = self.crops.num_crops
        if crops.shape[0] != scene_inputs.shape[0] * k:
            raise ValueError(f"{crops.shape[0]} crops for {scene_inputs.shape[0]} photos with {k} crops each")
        p365, s3 = self.base.scene.classify(scene_inputs, run)
        *logits, embedding = run(self.network, crops)
        probabilities = [aggregate_crops(torch.softmax(t.float(), dim=1), k, self.crops.aggregation) for t in logits]
        embeddings = torch.nn.functional.normalize(embedding.float().view(-1, k, embedding.shape[-1]).mean(dim=1),
                                                   dim=1)
        return SwCOutput(s3=s3, concepts=s3.argmax(dim=1), probabilities=probabilities, scene_probabilities=p365,
                         embeddings=embeddings)

    def refine(self, output: ModelOutput, decoded: HierarchyOutput) -> list[Refined | None]:
        fine = self.partitionings[-1]
        if getattr(self, "_cell_xyz", None) is None:
            self._cell_xyz = unit_vectors(fine.lat, fine.lon)
        embeddings = output.embeddings.float().cpu().numpy()
        fstar = decoded.hierarchy.float().cpu().numpy()
        answers = []
        for row in range(embeddings.shape[0]):
            result = refine(embedding=embeddings[row], fine_probabilities=fstar[row], cell_lat=fine.lat,
                            cell_lon=fine.lon, background=self.background, settings=self.search,
                            cell_tokens=fine.tokens, cell_xyz=self._cell_xyz)
            answers.append(Refined(lat=result.lat, lon=result.lon, score=result.density,
                                   localizable=result.localizable, note=result.note))
        return answers

    def activation_maps(self, crops: torch.Tensor, *, concept: int, cells: list[tuple[str, int]],
                        geometry: CropGeometry) -> list[np.ndarray]:
        return self.base.activation_maps(crops, concept=0, cells=cells, geometry=geometry)


# --- bundles ----------------------------------------------------------------------------------------------------


def save_swc_bundle(path: str | Path, *, name: str, network: SwCNetwork, partitionings: list[Partitioning],
                    scene_network: GeoNetwork, scene_mapping: SceneMapping, model_card: dict | None = None,
                    crops: CropSpec | None = None, untrained: bool = False, overwrite: bool = False,
                    training: dict | None = None, scene_untrained: bool = False,
                    search: SearchSettings | None = None, background: str | Path | None = None,
                    retrieval_training: dict | None = None, partitioning_names: list[str] | None = None) -> Path:
    """Write an swc bundle; `background` is a folder written by `retrieval.write_background` (copied in)."""
    crops = crops or CropSpec()
    search = search or SearchSettings()
    sizes = [len(p) for p in partitionings]
    if network.geo.num_classes != sizes:
        raise BundleError(f"network heads {network.geo.num_classes} do not match the partitionings' cell counts "
                          f"{sizes}")
    background_entry = None
    if background is not None:
        collection = BackgroundCollection(background)
        if collection.cells != sizes[-1] or collection.dim != network.retrieval.dim:
            raise BundleError(f"{background}: a background collection of {collection.cells} cells and "
                              f"{collection.dim}-d embeddings does not fit {sizes[-1]} fine cells and a "
                              f"{network.retrieval.dim}-d retrieval head")
        background_entry = {"folder": BACKGROUND_FOLDER, "images": collection.images,
                            "cells_with_images": int(collection.manifest.get("cells_with_images", 0)),
                            "megabytes_per_million_images": collection.manifest.get("megabytes_per_million_images")}
    with BundleWriter(path, name=name, overwrite=overwrite) as writer:
        entries = writer.write_partitionings(partitionings, partitioning_names)
        geo_file = writer.save_module(f"weights/geo_{BASE}.safetensors", network.geo, metadata={"concept": BASE})
        writer.save_module(RETRIEVAL_WEIGHTS, network.retrieval)
        scene = write_scene_classifier(writer, scene_network, scene_mapping, untrained=untrained or scene_untrained)
        if background is not None:
            for rel in BACKGROUND_FILES:
                shutil.copyfile(Path(background) / rel, writer.file(f"{BACKGROUND_FOLDER}/{rel}"))
        fields = {"architecture": {"backbone": network.geo.backbone, "num_classes": network.geo.num_classes,
                                   "routing": SINGLE},
                  "concepts": [BASE], "networks": {BASE: geo_file}, "scene": scene,
                  "retrieval": {"weights": RETRIEVAL_WEIGHTS, "in_dim": network.retrieval.in_dim,
                                "dim": network.retrieval.dim, **(retrieval_training or {})},
                  "search": search.to_dict(), "background": background_entry}
        if training is not None:
            fields["training"] = training
        lines = [f"- Backbone: {network.geo.backbone}, heads: {network.geo.num_classes}",
                 f"- Retrieval head: residual MLP -> {network.retrieval.dim}-d unit embedding",
                 f"- Search within Cell: top_k {search.top_k}, DBSCAN eps {search.eps_km:g} km, top {search.top_cells} "
                 f"cell(s); PD at {search.conf_scale_km:g} km, localizable above {search.conf_thres:g}",
                 "- Background collection: " + (f"{background_entry['images']} photos" if background_entry
                                                else "none (answers are the classifier's; `build_background`)"),
                 f"- Scene classifier: {scene_network.backbone} Places365 (365 classes) -> S3"]
        card = model_card_text(name, untrained=untrained, card=dict(model_card or {}), config_input=crops.to_config(),
                               architecture=lines)
        return writer.finish(kind=KIND, untrained=untrained, crops=crops, partitionings=entries, card=card, **fields)


def save_swc_from_networks(path: str | Path, *, networks: dict, **kwargs) -> Path:
    """`isn.save_bundle`'s signature for export: {"base": SwCNetwork} -> an swc bundle (no background yet)."""
    if set(networks) != {BASE} or not isinstance(networks[BASE], SwCNetwork):
        raise BundleError("an swc bundle holds one base network trained with a retrieval head, not ISNs "
                          f"{sorted(networks)}")
    return save_swc_bundle(path, network=networks[BASE], **kwargs)


def _validate(path: Path, config: dict) -> list[str]:
    files = ISN_KIND.validate(path, config)
    require_keys(path / "config.json", config, ("retrieval", "search"))
    if config["architecture"].get("routing") != SINGLE:
        raise BundleError(f"{path}: an swc bundle holds one network (routing {SINGLE!r})")
    files.append(config["retrieval"]["weights"])
    entry = config.get("background")
    if entry:
        files += [f"{entry['folder']}/{rel}" for rel in BACKGROUND_FILES]
    return files


def _head_shapes(config: dict) -> dict:
    with torch.device("meta"):
        return state_dict_shapes(RetrievalHead(int(config["retrieval"]["in_dim"]), int(config["retrieval"]["dim"])))


def _check_weights(path: Path, config: dict) -> None:
    ISN_KIND.check_weights(path, config)
    check_weight_shapes(path, config["retrieval"]["weights"], _head_shapes(config))


def load_swc_bundle(path: Path, config: dict) -> SwCModel:
    base = ISN_KIND.load(path, config)
    try:
        geo = base.isn.networks[BASE]
        head = RetrievalHead(int(config["retrieval"]["in_dim"]), int(config["retrieval"]["dim"]))
        head.load_state_dict(load_file(str(path / config["retrieval"]["weights"])))
        network = SwCNetwork(geo, head)
        entry = config.get("background")
        background = BackgroundCollection(path / entry["folder"]) if entry else None
        if background is not None and background.cells != len(base.partitionings[-1]):
            raise BundleError(f"{path}: the background collection has {background.cells} cells, the finest "
                              f"partitioning {len(base.partitionings[-1])}")
    except BundleError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise BundleError(f"{path}: cannot load bundle: {error}") from None
    return SwCModel(base=base, network=network, background=background,
                    search=SearchSettings.from_dict(config.get("search")))


def _summary(config: dict) -> str:
    arch = config.get("architecture", {})
    background = config.get("background")
    return (f"{arch.get('backbone', '?')} search within cell, cells "
            f"{'/'.join(str(n) for n in arch.get('num_classes', []))}, background "
            + (f"{background.get('images')} photos" if background else "none"))


SWC_KIND = ModelKind(name=KIND, validate=_validate, check_weights=_check_weights, load=load_swc_bundle,
                     summary=_summary)


def make_tiny_swc_bundle(path: str | Path, *, seed: int = 0, name: str = "tiny-swc", untrained: bool = True,
                         background: str | Path | None = None, search: SearchSettings | None = None) -> Path:
    """A small random-weight swc bundle (tiny backbone, the tiny partitionings, a 32-d retrieval head)."""
    from .partitions import tiny_partitionings

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        partitionings = tiny_partitionings(seed)
        geo = GeoNetwork("tiny", [len(p) for p in partitionings])
        network = SwCNetwork(geo, dim=32)
        scene_network = GeoNetwork("tiny", [365])
    finally:
        torch.random.set_rng_state(state)
    return save_swc_bundle(path, name=name, network=network, partitionings=partitionings,
                           scene_network=scene_network, scene_mapping=SceneMapping.load_default(),
                           untrained=untrained, overwrite=True, search=search, background=background,
                           model_card={"training_data": f"none: random weights (seed {seed})",
                                       "accuracy": "not measured: untrained"})
