"""Building an swc bundle's background collection from training shards (`manage.py build_background`).

Every usable photo of the shards (a class in every partitioning) is embedded with the bundle's retrieval head (one
centre crop at the bundle's crop size), and its embedding, coordinate and fine cell are written grouped by cell
(predictor.ml.retrieval.write_background). The result is a new bundle: the input bundle's files plus
`background/`.

Resumable: embeddings go to numbered parts in `<output>.work/` (each part written atomically, the stream being
read in a fixed order), so a run that was stopped continues after the last complete part. The work folder is
removed when the bundle is in place.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .bundle import BundleError
from .kinds import load_bundle
from .retrieval import SearchSettings, bytes_per_image, write_background
from .swc import KIND, SwCModel, save_swc_bundle

PART = "part-{:06d}.npz"


def _parts(work: Path) -> list[Path]:
    return sorted(work.glob("part-*.npz"))


def build_background(bundle: str | Path, shards: str | Path, output: str | Path, *, name: str | None = None,
                     batch_size: int = 64, part_size: int = 4096, device: str = "cpu", workers: int = 0,
                     progress: bool = True, overwrite: bool = False, max_images: int | None = None,
                     search: dict | None = None) -> dict:
    """Embed the shards' photos with `bundle` (an swc bundle) and write `output`, a new bundle with the background
    collection; `search` overrides the bundle's SearchSettings (top_k, eps_km, conf_thres, ...). Returns {"bundle", "images", "cells_with_images", "bytes", "bytes_per_million", "resumed_from"}."""
    from .train.shards import ShardStream, collate_samples, eval_transform

    output = Path(output)
    if output.exists() and not overwrite:
        raise BundleError(f"{output} already exists (give --overwrite to replace it)")
    model = load_bundle(bundle, device=device)
    if not isinstance(model, SwCModel):
        raise BundleError(f"{bundle} is a {model.kind!r} bundle; a background collection needs an {KIND!r} bundle "
                          "(a network trained with a retrieval head: train --contrastive-weight, export_bundle)")
    fine = model.partitionings[-1]
    stream = ShardStream(shards, partitionings=model.partitionings, shuffle=False, rank=0, world_size=1,
                         transform=eval_transform(model.crops.size))
    total = stream.usable_samples()
    if max_images is not None:
        total = min(total, max_images)
    work = output.parent / f"{output.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    stamp = {"bundle": str(Path(bundle).resolve()), "shards": str(Path(shards).resolve()),
             "config_sha": json.dumps(model.config.get("files", {}), sort_keys=True)}
    stamp_path = work / "build.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) != stamp:
        raise BundleError(f"{work} holds a build of another bundle or other shards: remove it to start over")
    stamp_path.write_text(json.dumps(stamp))
    done_parts = _parts(work)
    done = sum(int(np.load(p)["cells"].shape[0]) for p in done_parts)
    resumed_from = done

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=done, desc="background", unit="photo")
    network = model.network
    buffer: dict[str, list] = {"embeddings": [], "coords": [], "cells": []}

    def flush() -> None:
        if not buffer["cells"]:
            return
        index = len(_parts(work))
        fd, tmp = tempfile.mkstemp(dir=work, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as handle:
            np.savez(handle, embeddings=np.concatenate(buffer["embeddings"]).astype(np.float16),
                     coords=np.concatenate(buffer["coords"]).astype(np.float32),
                     cells=np.concatenate(buffer["cells"]).astype(np.int64))
        os.replace(tmp, work / PART.format(index))
        for values in buffer.values():
            values.clear()

    seen = 0
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate_samples)
    pending = 0
    with torch.inference_mode():
        for images, targets, lats, lons, _ in loader:
            n = targets.shape[0]
            if max_images is not None and seen >= max_images:
                break
            if seen + n <= done:  # embedded by an earlier run
                seen += n
                continue
            skip = max(0, done - seen)
            keep = slice(skip, n if max_images is None else min(n, max_images - seen))
            seen += n
            *_, embedding = network(images[keep].to(model.device))
            buffer["embeddings"].append(embedding.float().cpu().numpy())
            buffer["coords"].append(np.stack([lats[keep].numpy(), lons[keep].numpy()], axis=1))
            buffer["cells"].append(targets[keep, -1].numpy())
            kept = int(buffer["cells"][-1].shape[0])
            pending += kept
            if bar is not None:
                bar.update(kept)
            if pending >= part_size:
                flush()
                pending = 0
    flush()
    if bar is not None:
        bar.close()

    parts = [np.load(p) for p in _parts(work)]
    embeddings = (np.concatenate([p["embeddings"] for p in parts]) if parts
                  else np.zeros((0, model.network.retrieval.dim), np.float16))
    coords = np.concatenate([p["coords"] for p in parts]) if parts else np.zeros((0, 2), np.float32)
    cells = np.concatenate([p["cells"] for p in parts]) if parts else np.zeros(0, np.int64)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        folder = write_background(Path(scratch) / "background", embeddings=embeddings, coords=coords, cells=cells,
                                  num_cells=len(fine), partitioning=fine.name,
                                  extra={"shards": str(shards), "crop": f"centre {model.crops.size} px"})
        base = model.base
        path = save_swc_bundle(output, name=name or f"{model.name}-background", network=model.network,
                               partitionings=model.partitionings, scene_network=base.scene.network,
                               scene_mapping=base.scene_mapping, crops=model.crops, untrained=model.untrained,
                               overwrite=overwrite, training=model.config.get("training"),
                               scene_untrained=bool((model.config.get("scene") or {}).get("untrained")),
                               search=SearchSettings.from_dict({**model.search.to_dict(), **(search or {})}),
                               background=folder,
                               retrieval_training={k: v for k, v in model.config["retrieval"].items()
                                                   if k not in ("weights", "in_dim", "dim")},
                               partitioning_names=model.partitioning_names,
                               model_card={"training_data": f"as bundle {model.name} (see its card)",
                                           "notes": f"Background collection: {cells.size} photos from {shards}."})
    shutil.rmtree(work, ignore_errors=True)
    per = bytes_per_image(int(embeddings.shape[1]) if embeddings.ndim == 2 else model.network.retrieval.dim)
    return {"bundle": str(path), "images": int(cells.size),
            "cells_with_images": int(np.count_nonzero(np.bincount(cells, minlength=len(fine)))),
            "bytes": int(cells.size) * per, "bytes_per_million": per * 1_000_000, "resumed_from": resumed_from}
