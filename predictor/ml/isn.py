"""The "isn" model kind: individual scene networks, ISN(M, f*, S3), as in the paper. A Places365 scene classifier
routes each photo to the geolocation network of its most probable S3 concept (indoor, natural, urban). A bundle
may instead hold one base(M) network, which then answers every photo. Offers class activation maps.

Bundle files, besides the container's (predictor.ml.bundle)::

    weights/geo_<concept>.safetensors   one GeoNetwork per S3 concept, or weights/geo_base.safetensors
    weights/scene.safetensors           Places365 scene classifier (365-way head)
    scene/places365_s3.csv              the 365 -> S3 mapping (predictor.ml.scenes CSV format)

config.json: "architecture" {backbone, num_classes, routing "isn-s3"|"single"}, "concepts", "networks"
{concept: file}, "scene" {backbone, num_classes, weights, mapping, input, untrained}, and for a trained bundle
"training" (how its networks were trained: crops, validation protocol, overlap; predictor.ml.train.card).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .bundle import (BundleError, BundleWriter, check_heads, check_weight_shapes, model_card_text, read_model_card,
                     read_partitionings, require_keys, state_dict_shapes)
from .cam import class_activation_maps
from .hierarchy import Hierarchy
from .model import CROP_INPUT, PHOTO_INPUT, ModelKind, ModelOutput, Runner, ServedNetwork
from .network import GeoNetwork
from .partitions import Partitioning, tiny_partitionings
from .prediction import S3_CONCEPTS
from .preprocess import CropGeometry, CropSpec, aggregate_crops
from .scenes import SceneMapping

KIND = "isn"
BASE = "base"
ROUTED, SINGLE = "isn-s3", "single"
SCENE_WEIGHTS = "weights/scene.safetensors"
SCENE_MAPPING = "scene/places365_s3.csv"


class SceneClassifier(nn.Module):
    """Places365 network (365-way head) plus the 365 -> S3 mapping matrix (row-stochastic, [365, 3])."""

    def __init__(self, network: GeoNetwork, labels: list[str], s3_matrix: np.ndarray):
        super().__init__()
        s3_matrix = np.asarray(s3_matrix, dtype=np.float32)
        if network.num_classes != [len(labels)] or s3_matrix.shape != (len(labels), len(S3_CONCEPTS)):
            raise ValueError(f"scene classifier: {network.num_classes} outputs, {len(labels)} labels and a "
                             f"{s3_matrix.shape} mapping do not agree")
        self.network = network
        self.labels = list(labels)
        self.register_buffer("s3_matrix", torch.from_numpy(s3_matrix))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Places365 probabilities [N, 365], S3 probabilities [N, 3]) in float32."""
        p365 = torch.softmax(self.network(x)[0].float(), dim=1)
        return p365, p365 @ self.s3_matrix

    def classify(self, scene_inputs: torch.Tensor, run: Runner | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `forward`, through the engine's runner, with S3 kept in float32 under autocast."""
        run = run or (lambda network, x: network(x))
        p365 = torch.softmax(run(self.network, scene_inputs)[0].float(), dim=1)
        with torch.autocast(device_type=p365.device.type, enabled=False):
            s3 = p365 @ self.s3_matrix
        return p365, s3


def load_scene_classifier(path: Path, config: dict) -> tuple[SceneClassifier, SceneMapping]:
    """The Places365 classifier and its S3 mapping named by config["scene"] (ISN and GeoCLIP bundles carry one)."""
    scene_network = GeoNetwork(config["scene"]["backbone"], [365])
    scene_network.load_state_dict(load_file(str(path / config["scene"]["weights"])))
    mapping = SceneMapping.from_csv(path / config["scene"]["mapping"])
    return SceneClassifier(scene_network, mapping.labels, mapping.matrix), mapping


def write_scene_classifier(writer: BundleWriter, scene_network: GeoNetwork, scene_mapping: SceneMapping, *,
                           untrained: bool) -> dict:
    """Save the scene classifier into a bundle being written; returns config.json's "scene" entry. `untrained`:
    its weights are random, so the scene it names (and, in an ISN, the routing) means nothing."""
    writer.save_module(SCENE_WEIGHTS, scene_network)
    scene_mapping.to_csv(writer.file(SCENE_MAPPING))
    return {"backbone": scene_network.backbone, "num_classes": 365, "weights": SCENE_WEIGHTS,
            "mapping": SCENE_MAPPING, "input": "whole photo resized to a square", "untrained": bool(untrained)}


def scene_classifier_untrained(config: dict) -> bool:
    """Whether a bundle's scene classifier has random weights: the whole bundle is untrained, or config.json's
    "scene" says so (a trained geolocation network beside a random scene classifier)."""
    return bool(config.get("untrained", False)) or bool((config.get("scene") or {}).get("untrained", False))


def check_scene_weights(path: Path, config: dict) -> None:
    try:
        with torch.device("meta"):
            expected = state_dict_shapes(GeoNetwork(config["scene"]["backbone"], [365]))
    except ValueError as error:
        raise BundleError(f"{path}: {error}") from None
    check_weight_shapes(path, config["scene"]["weights"], expected)


class ISN(nn.Module):
    """One GeoNetwork per S3 concept (or a single "base" network); `forward` routes rows by concept."""

    def __init__(self, networks: dict[str, GeoNetwork]):
        super().__init__()
        if set(networks) == {BASE}:
            self.concepts: tuple[str, ...] = (BASE,)
        elif set(networks) == set(S3_CONCEPTS):
            self.concepts = S3_CONCEPTS
        else:
            raise ValueError(f"an ISN needs networks for {S3_CONCEPTS} or one {BASE!r} network, "
                             f"not {sorted(networks)}")
        shapes = {(n.backbone, tuple(n.num_classes)) for n in networks.values()}
        if len(shapes) != 1:
            raise ValueError(f"all scene networks must share backbone and partitionings, got {sorted(shapes)}")
        self.networks = nn.ModuleDict({c: networks[c] for c in self.concepts})

    @property
    def routed(self) -> bool:
        return self.concepts != (BASE,)

    @property
    def num_classes(self) -> list[int]:
        return next(iter(self.networks.values())).num_classes

    def network_for(self, concept_index: int) -> GeoNetwork:
        return self.networks[self.concepts[concept_index] if self.routed else BASE]

    def forward(self, x: torch.Tensor, concepts: torch.Tensor,
                run=None) -> list[torch.Tensor]:
        """Logits per partitioning for rows `x` [R, 3, s, s], row r answered by the network of `concepts[r]`.

        `run(network, x)` may replace the plain call (the engine uses it for compiled, padded batches).
        """
        run = run or (lambda network, inputs: network(inputs))
        if not self.routed:
            return [t.float() for t in run(self.networks[BASE], x)]
        outputs: list[torch.Tensor] | None = None
        for c, concept in enumerate(self.concepts):
            rows = (concepts == c).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            logits = run(self.networks[concept], x.index_select(0, rows))
            if outputs is None:
                outputs = [torch.empty((x.shape[0], t.shape[1]), dtype=torch.float32, device=t.device)
                           for t in logits]
            for out, t in zip(outputs, logits):
                out.index_copy_(0, rows, t.float())
        assert outputs is not None, "empty batch"
        return outputs


@dataclass(eq=False)
class ISNModel:
    """A loaded ISN (or base) bundle: scene classifier, scene networks, partitionings, hierarchy."""

    name: str
    untrained: bool
    partitionings: list[Partitioning]  # coarse -> fine
    config: dict
    isn: ISN
    scene: SceneClassifier
    hierarchy: Hierarchy
    crops: CropSpec
    model_card: str = ""
    path: Path | None = None
    scene_mapping: SceneMapping | None = None  # category names, kept for saving and for `label_scenes`
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    kind = KIND

    @property
    def partitioning_names(self) -> list[str]:
        return [p.name for p in self.partitionings]

    @property
    def scene_untrained(self) -> bool:
        """The scene classifier has random weights (so has the ISN routing), even if the geo networks are trained."""
        return self.untrained or scene_classifier_untrained(self.config)

    @property
    def scene_labels(self) -> list[str]:
        return self.scene.labels

    def to(self, device: str | torch.device) -> "ISNModel":
        self.device = torch.device(device)
        self.isn.to(self.device).eval()
        self.scene.to(self.device).eval()
        return self

    def served_networks(self) -> list[ServedNetwork]:
        return [ServedNetwork(self.scene.network, PHOTO_INPUT),
                *(ServedNetwork(n, CROP_INPUT) for n in self.isn.networks.values())]

    @torch.inference_mode()
    def infer(self, crops: torch.Tensor, scene_inputs: torch.Tensor, *, run: Runner | None = None) -> ModelOutput:
        """crops [N * k, 3, s, s] (k crops per photo, photo-major) and scene inputs [N, 3, S, S] on the device."""
        k = self.crops.num_crops
        if crops.shape[0] != scene_inputs.shape[0] * k:
            raise ValueError(f"{crops.shape[0]} crops for {scene_inputs.shape[0]} photos with {k} crops each")
        p365, s3 = self.scene.classify(scene_inputs, run)
        concepts = s3.argmax(dim=1)
        logits = self.isn(crops, concepts.repeat_interleave(k), run=run)
        probabilities = [aggregate_crops(torch.softmax(t, dim=1), k, self.crops.aggregation) for t in logits]
        return ModelOutput(s3=s3, concepts=concepts, probabilities=probabilities, scene_probabilities=p365)

    def activation_maps(self, crops: torch.Tensor, *, concept: int, cells: list[tuple[str, int]],
                        geometry: CropGeometry) -> list[np.ndarray]:
        """CAMs of (partitioning name, class index) pairs from one pass of the network that answered the photo."""
        if not cells:
            return []
        network = self.isn.network_for(concept)
        heads = {name: head for head, name in enumerate(self.partitioning_names)}
        weights = torch.stack([network.class_weights(heads[name], index) for name, index in cells])
        with torch.inference_mode():
            features = network.features(crops)  # under the engine's autocast, like the forward pass
            with torch.autocast(device_type=features.device.type, enabled=False):
                return list(class_activation_maps(features.float(), weights.detach().float(), geometry))


# --- bundles ----------------------------------------------------------------------------------------------------------

def _architecture_lines(config: dict) -> list[str]:
    arch = config["architecture"]
    routing = ("ISN(M, f*, S3), one network per scene concept" if arch["routing"] == ROUTED
               else "one network for every photo")
    return [f"- Backbone: {arch['backbone']}, heads: {arch['num_classes']} "
            f"({', '.join(p['name'] for p in config['partitionings'])})",
            f"- Routing: {routing}",
            f"- Scene classifier: {config['scene']['backbone']} Places365 (365 classes) -> S3"]


def save_bundle(path: str | Path, *, name: str, networks: dict[str, GeoNetwork], partitionings: list[Partitioning],
                scene_network: GeoNetwork, scene_mapping: SceneMapping, model_card: dict | None = None,
                crops: CropSpec | None = None, untrained: bool = False, partitioning_names: list[str] | None = None,
                overwrite: bool = False, training: dict | None = None, scene_untrained: bool = False) -> Path:
    """Write an ISN bundle: `networks` is {"indoor", "natural", "urban"} or {"base"} -> GeoNetwork; `model_card` is
    {"training_data": str, "accuracy": {dataset: {threshold_km: fraction}} or str, "notes": str, "sections":
    [(title, [lines])]} (see `bundle.model_card_text`). `training` (how the networks were trained: crops,
    validation, data; see predictor.ml.train.card) is kept in config.json as it is; `scene_untrained` marks a
    random scene classifier beside trained networks (an untrained bundle's is untrained anyway)."""
    crops = crops or CropSpec()
    isn = ISN(networks)  # validates the set of concepts and that the networks agree
    sizes = [len(p) for p in partitionings]
    if isn.num_classes != sizes:
        raise BundleError(f"network heads {isn.num_classes} do not match the partitionings' cell counts {sizes}")
    with BundleWriter(path, name=name, overwrite=overwrite) as writer:
        entries = writer.write_partitionings(partitionings, partitioning_names)
        network_files = {concept: writer.save_module(f"weights/geo_{concept}.safetensors", networks[concept],
                                                     metadata={"concept": concept})
                         for concept in isn.concepts}
        scene = write_scene_classifier(writer, scene_network, scene_mapping, untrained=untrained or scene_untrained)
        any_net = networks[isn.concepts[0]]
        fields = {"architecture": {"backbone": any_net.backbone, "num_classes": any_net.num_classes,
                                   "routing": ROUTED if isn.routed else SINGLE},
                  "concepts": list(isn.concepts), "networks": network_files, "scene": scene}
        if training is not None:
            fields["training"] = training
        card = model_card_text(name, untrained=untrained, card=dict(model_card or {}), config_input=crops.to_config(),
                               architecture=_architecture_lines({**fields, "partitionings": entries}))
        return writer.finish(kind=KIND, untrained=untrained, crops=crops, partitionings=entries, card=card, **fields)


def save_model(path: str | Path, model: ISNModel, *, model_card: dict | None = None, name: str | None = None,
               overwrite: bool = False) -> Path:
    """Save a loaded (or freshly trained) ISNModel as a bundle, with its training record and scene flag."""
    return save_bundle(path, name=name or model.name, networks=dict(model.isn.networks.items()),
                       partitionings=model.partitionings, scene_network=model.scene.network,
                       scene_mapping=model.scene_mapping, model_card=model_card or {}, crops=model.crops,
                       untrained=model.untrained, partitioning_names=model.partitioning_names, overwrite=overwrite,
                       training=model.config.get("training"), scene_untrained=model.scene_untrained)


def _validate(path: Path, config: dict) -> list[str]:
    require_keys(path / "config.json", config, ("architecture", "concepts", "networks", "scene"))
    arch = config["architecture"]
    try:
        num_classes = [int(n) for n in arch["num_classes"]]
        files = [config["networks"][c] for c in config["concepts"]]
        files += [config["scene"]["weights"], config["scene"]["mapping"]]
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{path}: malformed architecture, networks or scene in config.json ({error})") from None
    check_heads(path, config, num_classes)
    return files


def _check_weights(path: Path, config: dict) -> None:
    arch = config["architecture"]
    try:
        with torch.device("meta"):
            geo_shapes = state_dict_shapes(GeoNetwork(arch["backbone"], [int(n) for n in arch["num_classes"]]))
    except ValueError as error:
        raise BundleError(f"{path}: {error}") from None
    for concept in config["concepts"]:
        check_weight_shapes(path, config["networks"][concept], geo_shapes)
    check_scene_weights(path, config)


def load_isn_bundle(path: Path, config: dict) -> ISNModel:
    """Build the model of a verified ISN bundle directory (on the CPU)."""
    arch = config["architecture"]
    num_classes = [int(n) for n in arch["num_classes"]]
    try:
        partitionings = read_partitionings(path, config)
        hierarchy = Hierarchy(partitionings)
        networks = {}
        for concept in config["concepts"]:
            network = GeoNetwork(arch["backbone"], num_classes)
            network.load_state_dict(load_file(str(path / config["networks"][concept])))
            networks[concept] = network
        scene, mapping = load_scene_classifier(path, config)
        isn = ISN(networks)
        crops = CropSpec.from_config(config["input"])
    except BundleError:
        raise
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise BundleError(f"{path}: cannot load bundle: {error}") from None
    return ISNModel(name=config["name"], untrained=bool(config.get("untrained", False)), partitionings=partitionings,
                    config=config, isn=isn, scene=scene, hierarchy=hierarchy, crops=crops,
                    model_card=read_model_card(path, config), path=path, scene_mapping=mapping)


def _summary(config: dict) -> str:
    arch = config.get("architecture", {})
    cells = "/".join(str(n) for n in arch.get("num_classes", []))
    routing = "ISN(M, f*, S3)" if arch.get("routing") == ROUTED else "single network"
    return f"{arch.get('backbone', '?')} {routing}, cells {cells}"


ISN_KIND = ModelKind(name=KIND, validate=_validate, check_weights=_check_weights, load=load_isn_bundle,
                     summary=_summary)


# --- models built in memory -----------------------------------------------------------------------------------------

def random_model(*, partitionings: list[Partitioning], backbone: str = "resnet50", scene_backbone: str = "resnet50",
                 routed: bool = True, name: str = "random", crops: CropSpec | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> ISNModel:
    """An untrained ISNModel of real architecture, built in memory (benchmarks, tests of full-size shapes)."""
    torch.manual_seed(seed)
    sizes = [len(p) for p in partitionings]
    concepts = S3_CONCEPTS if routed else (BASE,)
    isn = ISN({c: GeoNetwork(backbone, sizes) for c in concepts})
    mapping = SceneMapping.load_default()
    scene = SceneClassifier(GeoNetwork(scene_backbone, [365]), mapping.labels, mapping.matrix)
    model = ISNModel(name=name, untrained=True, partitionings=list(partitionings),
                     config={"kind": KIND, "architecture": {"backbone": backbone, "num_classes": sizes,
                                                            "routing": ROUTED if routed else SINGLE}},
                     isn=isn, scene=scene, hierarchy=Hierarchy(list(partitionings)), crops=crops or CropSpec(),
                     scene_mapping=mapping)
    return model.to(device)


def make_tiny_bundle(path: str | Path, *, seed: int = 0, name: str = "tiny-untrained", untrained: bool = True) -> Path:
    """A small random-weight ISN bundle (tiny backbone, small nested partitionings), marked untrained (tests of
    flows that need a trained model pass `untrained=False`).

    Builds in well under a second and predicts in a few milliseconds per photo on a CPU.
    """
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        partitionings = tiny_partitionings(seed)
        sizes = [len(p) for p in partitionings]
        networks = {concept: GeoNetwork("tiny", sizes) for concept in S3_CONCEPTS}
        scene_network = GeoNetwork("tiny", [365])
    finally:
        torch.random.set_rng_state(torch_state)
    return save_bundle(
        path, name=name, networks=networks, partitionings=partitionings, scene_network=scene_network,
        scene_mapping=SceneMapping.load_default(), untrained=untrained, overwrite=True,
        model_card={"training_data": "none: random weights (seed %d)" % seed, "accuracy": "not measured: untrained",
                    "notes": "A demonstration bundle so the app runs without a trained model. Replace it with "
                             "`manage.py install_model`."})
