"""The inference engine: one loaded model of any kind on one device, serving concurrent requests with dynamic batching.

A background thread gathers `submit()` calls until `max_batch_size` photos are waiting or the first has waited
`max_wait_ms`, runs them as one batch and resolves each request's Future. A photo that cannot be decoded fails its
own Future only. On CUDA the engine uses bf16 autocast and channels_last, decodes JPEG bytes on the GPU (nvJPEG)
and can compile the model's networks with fixed batch buckets (padded), warmed up before the first request.

The engine knows models only through `predictor.ml.model.GeoModel` and asks for optional capabilities (activation
or attention maps, scene categories, refinement) with `offers`; it never tests a model's kind.
"""
from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .hierarchy import HierarchyOutput
from .model import (CAPABILITIES, PHOTO_INPUT, ActivationMaps, AttentionMaps, GeoModel, MissingCapability,
                    ModelOutput, RetrievalRefinement, SceneCategories, offers)
from .prediction import (ATTENTION_MAP, CELL_MAP, HIERARCHY, S3_CONCEPTS, CellProbability, Prediction, Refined,
                         SceneResult)
from .preprocess import (DEFAULT_MAX_PIXELS, IMAGE_FORMATS, CropGeometry, ImageDecodeError, open_image,
                         prepare_pil, prepare_tensor)

logger = logging.getLogger(__name__)

DEFAULT_BUCKETS = (1, 4, 16, 64)
ImageSource = Image.Image | bytes | str | Path
_STOP = object()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no GPU is available to PyTorch")
    return device


@dataclass
class _Prepared:
    crops: torch.Tensor
    scene: torch.Tensor
    geometry: CropGeometry
    decode_ms: float


@dataclass
class _Request:
    source: ImageSource
    cam: bool
    future: Future
    cam_cells: int = 0
    submitted: float = field(default_factory=time.perf_counter)


class InferenceEngine:
    """Load once, batch concurrent requests, return `Prediction`s in request order."""

    def __init__(self, model: GeoModel, *, device: str | torch.device = "cpu", max_batch_size: int = 32,
                 max_wait_ms: float = 10, top_k: int = 10, precision: str = "auto", compile: bool = False,
                 batch_buckets: tuple[int, ...] | None = None, gpu_decode: bool = True,
                 decode_workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, start: bool = True):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.max_batch_size = int(max_batch_size)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.top_k = int(top_k)
        self.max_pixels = max_pixels
        self.cuda = self.device.type == "cuda"
        self.gpu_decode = gpu_decode and self.cuda
        if precision == "auto":
            precision = "bf16" if self.cuda else "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
        self.precision = precision
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self._served = self.model.served_networks()
        # What the model offers is fixed once it is loaded; the checks are structural and cost ~20 us each.
        self._offers = {capability: offers(self.model, capability) for capability in CAPABILITIES}
        if self.cuda:
            for served in self._served:
                served.module.to(memory_format=torch.channels_last)
        self.buckets = tuple(sorted(set(batch_buckets or DEFAULT_BUCKETS)))
        self._compiled: dict[int, torch.nn.Module] | None = None
        self._compile = compile
        self._decoder = ThreadPoolExecutor(max_workers=decode_workers or min(4, os.cpu_count() or 1),
                                           thread_name_prefix="geoweb-decode")
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._serve, name="geoweb-engine", daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._startup_error is not None:
                raise RuntimeError(f"inference engine failed to start: {self._startup_error}")

    # --- public API -------------------------------------------------------------------------------------------

    def offers(self, capability: type) -> bool:
        """Whether the served model has an optional capability (e.g. `ActivationMaps`, `AttentionMaps`)."""
        if capability not in self._offers:
            self._offers[capability] = offers(self.model, capability)
        return self._offers[capability]

    @property
    def offers_maps(self) -> bool:
        """Whether `cam=True` gives a map: activation maps (of the estimate's cell) or attention maps."""
        return self.offers(ActivationMaps) or self.offers(AttentionMaps)

    def submit(self, image: ImageSource, *, cam: bool = False, cam_cells: int = 0) -> Future:
        """Queue one photo (PIL image, encoded bytes or a file path); the Future resolves to a `Prediction`.

        `cam` adds `Prediction.cam`: the activation map of the estimate's cell, or for models with attention maps
        instead, where the model looked (`cam_kind` says which). `cam_cells` > 0 adds `Prediction.cell_cams` for
        the top `cam_cells` cells of every partitioning and of the hierarchy (activation maps only). Asking a model
        for maps it does not offer raises `MissingCapability`: check `offers_maps` / `offers(ActivationMaps)`.
        """
        if self._closed:
            raise RuntimeError("the inference engine is closed")
        self._check_maps(cam=cam, cam_cells=cam_cells)
        request = _Request(source=image, cam=cam, cam_cells=max(0, int(cam_cells)), future=Future())
        self._queue.put(request)
        return request.future

    def predict_many(self, images, *, cam: bool = False, cam_cells: int = 0) -> list[Prediction | Exception]:
        """Predictions for many photos, in order; a photo that fails yields its Exception instead."""
        futures = [self.submit(image, cam=cam, cam_cells=cam_cells) for image in images]
        results: list[Prediction | Exception] = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as error:  # each photo's own failure is its result
                results.append(error)
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._decoder.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_maps(self, *, cam: bool, cam_cells: int) -> None:
        if cam and not self.offers_maps:
            raise MissingCapability(f"model {self.model.name} (kind {self.model.kind}) gives no activation or "
                                    "attention maps")
        if cam_cells and not self.offers(ActivationMaps):
            raise MissingCapability(f"model {self.model.name} (kind {self.model.kind}) gives no per-cell "
                                    "activation maps")

    # --- the serving thread -----------------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            if self._compile:
                self._compile_and_warm_up()
        except BaseException as error:  # reported to the constructor
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.predict_batch([r.source for r in live], cam=[r.cam for r in live],
                                             cam_cells=[r.cam_cells for r in live],
                                             submitted=[r.submitted for r in live])
            except Exception as error:  # a model failure (e.g. out of memory) fails this batch, not the engine
                logger.exception("inference batch of %d failed", len(live))
                results = [error] * len(live)
            for request, result in zip(live, results):
                if isinstance(result, Exception):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)
        # Anything still queued after close() is answered, not left hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(RuntimeError("the inference engine was closed"))

    # --- one batch --------------------------------------------------------------------------------------------

    def predict_batch(self, sources: list[ImageSource], *, cam: bool | list[bool] = False,
                      cam_cells: int | list[int] = 0,
                      submitted: list[float] | None = None) -> list[Prediction | Exception]:
        """Run a list of photos as one batch on the calling thread (the engine thread uses this too)."""
        self._check_maps(cam=any(cam) if isinstance(cam, list) else cam,
                         cam_cells=max(cam_cells, default=0) if isinstance(cam_cells, list) else cam_cells)
        with torch.inference_mode():
            return self._predict_batch(sources, cam=cam, cam_cells=cam_cells, submitted=submitted)

    def _predict_batch(self, sources, *, cam, cam_cells, submitted) -> list[Prediction | Exception]:
        started = time.perf_counter()
        cams = cam if isinstance(cam, list) else [cam] * len(sources)
        cell_counts = cam_cells if isinstance(cam_cells, list) else [cam_cells] * len(sources)
        prepared = self._prepare(sources)
        ok = [i for i, p in enumerate(prepared) if isinstance(p, _Prepared)]
        results: list[Prediction | Exception] = list(prepared)  # exceptions stay in place
        if not ok:
            return results
        # Photos decoded on the GPU and on the CPU can share a batch.
        crops = torch.cat([prepared[i].crops.to(self.device, non_blocking=True) for i in ok])
        scene = torch.stack([prepared[i].scene.to(self.device, non_blocking=True) for i in ok])
        if self.cuda:
            crops = crops.contiguous(memory_format=torch.channels_last)
            scene = scene.contiguous(memory_format=torch.channels_last)
        model_start = time.perf_counter()
        with self._autocast():
            output = self.model.infer(crops, scene, run=self._runner())
        decoded = self.model.hierarchy.decode(output.probabilities, top_k=self.top_k)
        refined = self.model.refine(output, decoded) if self.offers(RetrievalRefinement) else [None] * len(ok)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        model_ms = (time.perf_counter() - model_start) * 1000
        k = self.model.crops.num_crops
        for row, i in enumerate(ok):
            item: _Prepared = prepared[i]
            prediction = self._prediction(row, output, decoded, refined[row])
            if cams[i] or cell_counts[i]:
                self._add_maps(prediction, crops[row * k:(row + 1) * k], int(output.concepts[row]),
                               int(decoded.hierarchy_argmax[row]) if cams[i] else None, cell_counts[i],
                               item.geometry)
            done = time.perf_counter()
            prediction.timings_ms = {
                "decode_ms": round(item.decode_ms, 2), "model_ms": round(model_ms, 2), "batch_size": float(len(ok)),
                "queue_ms": round(((started - submitted[i]) if submitted else 0.0) * 1000, 2),
                "total_ms": round((done - (submitted[i] if submitted else started)) * 1000, 2)}
            results[i] = prediction
        return results

    def _autocast(self):
        if self._dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._dtype)

    def _prepare(self, sources: list[ImageSource]) -> list[_Prepared | Exception]:
        results: list[_Prepared | Exception | None] = [None] * len(sources)
        gpu_rows = [i for i, s in enumerate(sources) if self.gpu_decode and isinstance(s, (bytes, bytearray))
                    and bytes(s[:3]) == b"\xff\xd8\xff"]
        if gpu_rows:
            for i, value in zip(gpu_rows, self._decode_jpegs_on_gpu([bytes(sources[i]) for i in gpu_rows])):
                results[i] = value
        cpu_rows = [i for i in range(len(sources)) if results[i] is None]
        for i, value in zip(cpu_rows, self._decoder.map(self._prepare_on_cpu, [sources[i] for i in cpu_rows])):
            results[i] = value
        return results

    def _prepare_on_cpu(self, source: ImageSource) -> _Prepared | Exception:
        spec = self.model.crops
        start = time.perf_counter()
        try:
            image = open_image(source, max_pixels=self.max_pixels, draft_short_side=spec.short_side)
            crops, scene, geometry = prepare_pil(image, spec)
        except ImageDecodeError as error:
            return error
        except Exception as error:  # a hostile file must not take the batch down with it
            return ImageDecodeError(f"unreadable image: {error}")
        return _Prepared(crops, scene, geometry, (time.perf_counter() - start) * 1000)

    def _decode_jpegs_on_gpu(self, blobs: list[bytes]) -> list[_Prepared | Exception]:
        """nvJPEG decode of a list of JPEGs; header checks (format, pixel limit) with Pillow first."""
        from torchvision.io import ImageReadMode, decode_jpeg

        start = time.perf_counter()
        out: list[_Prepared | Exception | None] = [None] * len(blobs)
        valid = []
        for i, blob in enumerate(blobs):
            try:
                with Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS) as header:
                    if header.width * header.height > self.max_pixels:
                        raise ImageDecodeError(f"image has {header.width}x{header.height} pixels, more than the "
                                               f"limit of {self.max_pixels:,}")
                valid.append(i)
            except ImageDecodeError as error:
                out[i] = error
            except Exception as error:
                out[i] = ImageDecodeError(f"not a supported image: {error}")
        tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in valid]

        def decode(data):
            with warnings.catch_warnings():
                # torchvision 0.29 marks its codecs deprecated in favour of TorchCodec; nvJPEG decode still works.
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True)

        try:
            decoded = decode(tensors) if tensors else []
        except RuntimeError:
            decoded = []
            for i, t in zip(valid, tensors):  # one bad JPEG fails the list call: find out which, per photo
                try:
                    decoded.append(decode(t))
                except RuntimeError:
                    # nvJPEG refuses some valid files (e.g. CMYK): Pillow decides whether the photo is readable.
                    decoded.append(self._prepare_on_cpu(blobs[i]))
        per_image_ms = (time.perf_counter() - start) * 1000 / max(1, len(blobs))
        for i, image in zip(valid, decoded):
            if isinstance(image, (Exception, _Prepared)):
                out[i] = image
                continue
            crops, scene, geometry = prepare_tensor(image, self.model.crops)
            out[i] = _Prepared(crops, scene, geometry, per_image_ms)
        return out

    # --- compiled, padded execution ---------------------------------------------------------------------------

    def _networks(self) -> list[torch.nn.Module]:
        return [served.module for served in self._served]

    def _input_of(self, network: torch.nn.Module) -> str:
        return next(served.input for served in self._served if served.module is network)

    def _rows_per_photo(self, network: torch.nn.Module) -> int:
        return 1 if self._input_of(network) == PHOTO_INPUT else self.model.crops.num_crops

    def _compile_and_warm_up(self) -> None:
        import torch._dynamo

        # Networks of one class share a forward (ISN's GeoNetworks): each (network, bucket) is one more compiled
        # variant of it.
        variants = len(self._networks()) * len(self.buckets) + 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, variants)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, variants * 4)
        mode = "reduce-overhead" if self.cuda else "default"
        self._compiled = {id(n): torch.compile(n, mode=mode, dynamic=False) for n in self._networks()}
        spec = self.model.crops
        k = spec.num_crops
        for bucket in self.buckets:
            # Inference tensors, like the ones served later: Dynamo guards on the dispatch keys too.
            with torch.inference_mode(), self._autocast():
                crops = torch.zeros((bucket * k, 3, spec.size, spec.size), device=self.device)
                scene = torch.zeros((bucket, 3, spec.scene_size, spec.scene_size), device=self.device)
                if self.cuda:
                    crops = crops.contiguous(memory_format=torch.channels_last)
                    scene = scene.contiguous(memory_format=torch.channels_last)
                for network in self._networks():
                    for _ in range(2):
                        self._run_padded(network, scene if self._input_of(network) == PHOTO_INPUT else crops)

    def _run_padded(self, network: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """Run in chunks padded up to the compiled bucket sizes, so no new shape is ever compiled."""
        compiled = self._compiled[id(network)]
        per_photo = self._rows_per_photo(network)
        sizes = [b * per_photo for b in self.buckets]
        outputs: list[list[torch.Tensor]] = []
        start = 0
        while start < x.shape[0]:
            rows = min(x.shape[0] - start, sizes[-1])
            bucket = next(s for s in sizes if s >= rows)
            chunk = x[start:start + rows]
            if bucket > rows:
                chunk = torch.cat([chunk, chunk.new_zeros((bucket - rows, *chunk.shape[1:]))])
                if self.cuda:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
            # CUDA-graph outputs are overwritten by the next replay: copy what we keep.
            outputs.append([t[:rows].float().clone() for t in compiled(chunk)])
            start += rows
        return [torch.cat(parts) for parts in zip(*outputs)]

    def _runner(self):
        if self._compiled is None:
            return None
        return self._run_padded

    def activation_maps(self, crops: torch.Tensor, *, concept: int, cells: list[tuple[str, int]],
                        geometry: CropGeometry) -> list:
        """Maps of chosen cells for one photo's crops, outside a batch: for a cell the batch made no map of."""
        self._check_maps(cam=False, cam_cells=1)
        with torch.inference_mode(), self._autocast():
            return self.model.activation_maps(crops.to(self.device), concept=concept, cells=cells, geometry=geometry)

    # --- results ----------------------------------------------------------------------------------------------

    def _add_maps(self, prediction: Prediction, crops: torch.Tensor, concept: int, fine_class: int | None,
                  cells: int, geometry: CropGeometry) -> None:
        """`cam` (when `fine_class` is given: the estimate's fine cell) and the maps of the top `cells` cells of each
        partitioning, from a model with activation maps; or the attention map of a model with those instead."""
        if not self.offers(ActivationMaps):
            with self._autocast():
                prediction.cam = self.model.attention_map(crops, geometry=geometry)
            prediction.cam_kind = ATTENTION_MAP
            return
        names = self.model.partitioning_names
        wanted: list[tuple[str, int]] = []
        if cells:
            for name in [*names, HIERARCHY]:
                partitioning = names[-1] if name == HIERARCHY else name
                wanted += [(partitioning, c.class_index) for c in prediction.top_cells.get(name, [])[:cells]]
        if fine_class is not None:
            wanted.append((names[-1], fine_class))
        wanted = list(dict.fromkeys(wanted))  # hierarchy cells repeat the finest partitioning's
        with self._autocast():
            maps = self.model.activation_maps(crops, concept=concept, cells=wanted, geometry=geometry)
        if cells:
            prediction.cell_cams = dict(zip(wanted, maps))
        if fine_class is not None:
            prediction.cam = maps[wanted.index((names[-1], fine_class))]
            prediction.cam_kind = CELL_MAP

    def _prediction(self, row: int, output: ModelOutput, decoded: HierarchyOutput,
                    refined: Refined | None = None) -> Prediction:
        model = self.model
        s3 = output.s3[row].float().cpu().numpy()
        s3 = s3 / s3.sum() if s3.sum() > 0 else s3
        categories = []
        if output.scene_probabilities is not None and self.offers(SceneCategories):
            scores = output.scene_probabilities[row].float().cpu()
            top_scene = torch.topk(scores, min(5, scores.shape[0]))
            categories = [(model.scene_labels[int(j)], float(v)) for v, j in zip(top_scene.values, top_scene.indices)]
        scene = SceneResult(s3={c: float(s3[j]) for j, c in enumerate(S3_CONCEPTS)},
                            concept=S3_CONCEPTS[int(output.concepts[row])], places365_top=categories)
        names = model.partitioning_names + [HIERARCHY]
        cell_sources = model.partitionings + [model.partitionings[-1]]
        top_cells, argmax = {}, {}
        for level, (name, partitioning) in enumerate(zip(names, cell_sources)):
            values = decoded.top_values[level][row].tolist()
            indices = decoded.top_indices[level][row].tolist()
            top_cells[name] = [CellProbability(partitioning=name, class_index=int(j), token=partitioning.tokens[j],
                                               probability=float(v), lat=float(partitioning.lat[j]),
                                               lon=float(partitioning.lon[j])) for v, j in zip(values, indices)]
            best = int(decoded.hierarchy_argmax[row]) if name == HIERARCHY else int(decoded.argmax[level][row])
            argmax[name] = (float(partitioning.lat[best]), float(partitioning.lon[best]))
        for name, points in output.points.items():
            argmax[name] = tuple(float(v) for v in points[row].tolist())
        lat, lon = argmax[HIERARCHY]
        confidence = float(decoded.confidence[row])
        if output.estimate is not None:  # the model's own answer (e.g. a GeoCLIP gallery point)
            lat, lon = (float(v) for v in output.estimate[row].tolist())
            if output.estimate_confidence is not None:
                confidence = float(output.estimate_confidence[row])
        if refined is not None:
            lat, lon = refined.lat, refined.lon
        overlays = {name: maps[row].cpu().numpy() for name, maps in output.overlays.items()}
        return Prediction(model_name=model.name, untrained=model.untrained, scene=scene, top_cells=top_cells,
                          argmax=argmax, lat=lat, lon=lon, confidence=confidence, refined=refined, overlays=overlays,
                          scene_untrained=bool(model.scene_untrained))
