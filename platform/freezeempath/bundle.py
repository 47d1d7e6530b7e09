"""Model bundle: one directory that holds a whole servable system, and the check that it fits its frozen parts.

Layout of a bundle directory::

    manifest.json         format, trained parts, the sha256 of the frozen encoder and LLM it was trained
                          against, the codec folder (if any), and one provenance record per step that
                          wrote it (stage, steps, data shards and their hashes, metrics)
    config.yaml           the resolved config (``model.codec.path`` is set to ``codec/`` on load)
    trained.safetensors   every trained part (adapter, emotion extractor, aux head, speech decoder), in the
                          format of :mod:`freezeempath.model.checkpoint`, so ``build_model(trained=...)`` reads it
    codec/                the fitted codec (optional)

Frozen hashes are computed from the built modules' weights, so they identify what the model computes
with, whatever file or wheel the weights came from (a random tiny LLM included). :func:`build_bundle_model`
refuses a bundle whose hashes do not match the configured encoder or LLM, naming both hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from freezeempath.config import Config, load_config
from freezeempath.stages import ALWAYS_FROZEN

FORMAT = "freezeempath-bundle/1"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
CODEC_DIR = "codec"


class BundleError(ValueError):
    """A bundle is missing, malformed, or does not fit the configured frozen parts."""


@dataclass(frozen=True)
class StepRecord:
    """Provenance of one step that wrote the bundle: a training stage, a codec fit, an assembly."""

    step: str
    parts: tuple[str, ...] = ()
    steps: int = 0
    shards: dict[str, str] = field(default_factory=dict)  # path → sha256
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds."""

    parts: tuple[str, ...]
    frozen: dict[str, str]
    codec: str | None
    history: tuple[StepRecord, ...]
    format: str = FORMAT

    def to_json(self) -> str:
        """The manifest as JSON text."""
        record = {
            "format": self.format,
            "parts": list(self.parts),
            "frozen": self.frozen,
            "codec": self.codec,
            "history": [
                {"step": r.step, "parts": list(r.parts), "steps": r.steps, "shards": r.shards, "metrics": r.metrics}
                for r in self.history
            ],
        }
        return json.dumps(record, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        """Parse ``manifest.json`` text; ``BundleError`` names the file and what is wrong."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise BundleError(f"{source}: format {data.get('format')!r}, want {FORMAT!r}")
            history = tuple(
                StepRecord(r["step"], tuple(r["parts"]), int(r["steps"]), dict(r["shards"]), dict(r["metrics"]))
                for r in data["history"]
            )
            return cls(tuple(data["parts"]), dict(data["frozen"]), data["codec"], history)
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise BundleError(f"{source}: not a bundle manifest ({type(err).__name__}: {err})") from None


def module_sha256(module: nn.Module) -> str:
    """sha256 over a module's weights: names and float32 bytes, in name order (any dtype or device)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def frozen_hashes(model: nn.Module) -> dict[str, str]:
    """:func:`module_sha256` of each frozen part of the whole model (``encoder``, ``llm``)."""
    return {part: module_sha256(getattr(model, part)) for part in ALWAYS_FROZEN}


def write_bundle(
    directory: str | Path,
    model: nn.Module,
    cfg: Config,
    record: StepRecord,
    codec_dir: str | Path | None = None,
    base: str | Path | None = None,
) -> Manifest:
    """Write ``model`` as a bundle to ``directory`` (atomically: a staging folder, then a rename).

    Every part that is not frozen is written, trained or not, so a bundle always builds the same model;
    the manifest's ``parts`` names those trained so far: ``base``'s and ``record.parts``. Extending a
    bundle means building the model from ``base``, training, then writing with ``base=``; the frozen
    hashes must then equal ``base``'s. The codec comes from ``codec_dir``, else ``cfg.model.codec.path``
    (a bundle's own codec when ``cfg`` came from :func:`bundle_config`), and is copied in.
    """
    from freezeempath.model.checkpoint import NOT_EXPORTABLE, export_trained

    root = Path(directory)
    previous = read_manifest(base) if base else None
    frozen = frozen_hashes(model)
    if previous is not None:
        check_frozen(previous, frozen, str(base))
    trained = tuple(sorted(set(previous.parts if previous else ()) | set(record.parts)))
    codec_source = Path(codec_dir or cfg.model.codec.path) if (codec_dir or cfg.model.codec.path) else None
    portable = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, codec=dataclasses.replace(cfg.model.codec, path=""))
    )
    staging = root.with_name(root.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    export_trained(model, [name for name, _ in model.named_children() if name not in NOT_EXPORTABLE], staging, portable)
    if codec_source is not None:
        shutil.copytree(codec_source, staging / CODEC_DIR)
    history = (*(previous.history if previous else ()), record)
    manifest = Manifest(trained, frozen, CODEC_DIR if codec_source is not None else None, history)
    (staging / MANIFEST_FILE).write_text(manifest.to_json())
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return manifest


def read_manifest(directory: str | Path) -> Manifest:
    """The bundle's manifest; ``BundleError`` when ``directory`` holds none."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: no {MANIFEST_FILE}")
    return Manifest.from_json(path.read_text(), str(path))


def bundle_config(directory: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The bundle's resolved config, its codec path pointing into the bundle, then ``overrides``."""
    root = Path(directory)
    manifest = read_manifest(root)
    codec = [f"model.codec.path={(root / manifest.codec).resolve()}"] if manifest.codec else []
    return load_config(root / CONFIG_FILE, [*codec, *overrides])


def check_frozen(manifest: Manifest, frozen: dict[str, str], source: str) -> None:
    """Raise ``BundleError`` naming both hashes of every part of ``frozen`` that differs from the manifest's
    (a serving replica checks the one frozen part it holds)."""
    wrong = [
        f"{part}: bundle {manifest.frozen.get(part)} vs configured {frozen[part]}"
        for part in sorted(frozen)
        if manifest.frozen.get(part) != frozen[part]
    ]
    if wrong:
        raise BundleError(f"{source} was trained against other frozen weights; " + "; ".join(wrong))


def build_bundle_model(directory: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None):
    """The whole model of a bundle: its config, its trained parts, frozen parts checked against its hashes.

    Returns ``(cfg, model)``.
    """
    from freezeempath.model.build import build_model

    cfg = bundle_config(directory, overrides)
    model = build_model(cfg.model, trained=str(directory), device=device)
    check_frozen(read_manifest(directory), frozen_hashes(model), str(directory))
    return cfg, model
