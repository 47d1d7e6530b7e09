"""Exported training artefacts: trained weights only (safetensors) plus the resolved ``config.yaml``.

In (:func:`export_trained`): a model whose top-level children carry ``FreezeEmpathModel``'s part names,
the trained part prefixes (e.g. ``Stage.S1.trainable``), a directory and the run's config. Out: the
directory with ``trained.safetensors`` (those parts' tensors; metadata names the prefixes) and
``config.yaml``. This is the serving artefact, not the DeepSpeed resume checkpoint.

In (:func:`load_trained`): a full model or a serving part (any module with some of those children) and
the directory. Loading is strict on the expected prefixes — the artefact's prefixes the module has: every
tensor of those parts must be in the file with its shape and the file may hold nothing else. Frozen parts
(``encoder``, ``llm``) are never exported or loaded; they come from their base weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from freezeempath.config import Config, load_config, save_config
from freezeempath.stages import ALWAYS_FROZEN

TRAINED_FILE = "trained.safetensors"
CONFIG_FILE = "config.yaml"
FORMAT = "freezeempath-trained/1"
NOT_EXPORTABLE = (*ALWAYS_FROZEN, "frontend")


def export_trained(model: nn.Module, stage_prefixes: Iterable[str], directory: str | Path, cfg: Config) -> Path:
    """Write the trained parts ``stage_prefixes`` of ``model`` and ``cfg`` to ``directory``; returns it.

    Tensors that share storage (tied embeddings) are written once and recorded as aliases.

    Raises:
        ValueError: a prefix is empty, frozen, or not a child of ``model``.
    """
    prefixes = tuple(sorted(set(stage_prefixes)))
    children = dict(model.named_children())
    bad = [p for p in prefixes if p not in children or p in NOT_EXPORTABLE]
    if not prefixes or bad:
        raise ValueError(
            f"cannot export prefixes {bad or '(none)'}: choose trained parts among "
            f"{sorted(set(children) - set(NOT_EXPORTABLE))}"
        )
    state = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in prefixes}
    tensors, aliases, seen = {}, {}, {}
    for key in sorted(state):
        value = state[key].detach()
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.cpu().contiguous()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "prefixes": json.dumps(list(prefixes)), "aliases": json.dumps(aliases)}
    safetensors.torch.save_file(tensors, str(root / TRAINED_FILE), metadata=metadata)
    save_config(cfg, root, CONFIG_FILE)
    return root


def trained_prefixes(directory: str | Path) -> tuple[str, ...]:
    """The part prefixes an artefact holds (from its metadata)."""
    return tuple(json.loads(_metadata(Path(directory))["prefixes"]))


def artefact_config(directory: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The artefact's resolved config with dotted ``overrides`` (e.g. base-weight paths) applied."""
    return load_config(Path(directory) / CONFIG_FILE, overrides)


def load_trained(model: nn.Module, directory: str | Path) -> tuple[str, ...]:
    """Load the artefact's parts that ``model`` has, strictly; returns the prefixes loaded.

    Raises:
        FileNotFoundError: no artefact in ``directory``.
        ValueError: wrong format, frozen prefixes in the file, or (within the expected prefixes) missing
            or unexpected tensors or shape mismatches — all listed in one message.
    """
    root = Path(directory)
    metadata = _metadata(root)
    prefixes = tuple(json.loads(metadata["prefixes"]))
    frozen = [p for p in prefixes if p in NOT_EXPORTABLE]
    if frozen:
        raise ValueError(f"{root / TRAINED_FILE}: holds frozen parts {frozen}; artefacts carry trained parts only")
    expected = tuple(p for p in prefixes if p in dict(model.named_children()))
    if not expected:
        return ()
    stored = safetensors.torch.load_file(str(root / TRAINED_FILE))
    for alias, key in json.loads(metadata.get("aliases", "{}")).items():
        stored[alias] = stored[key]
    outside = sorted(k for k in stored if k.split(".", 1)[0] not in prefixes)
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in expected}
    mine = {k: v for k, v in stored.items() if k.split(".", 1)[0] in expected}
    missing, unexpected = sorted(set(own) - set(mine)), sorted(set(mine) - set(own))
    shapes = [
        f"{k}: file {tuple(mine[k].shape)}, model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(mine))
        if mine[k].shape != own[k].shape
    ]
    if outside or missing or unexpected or shapes:
        raise ValueError(
            f"{root / TRAINED_FILE} does not match the model for parts {list(expected)}: missing {missing}, "
            f"unexpected {unexpected}, wrong shapes {shapes}, outside the declared prefixes {outside}"
        )
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(mine[key])
    return expected


def _metadata(root: Path) -> dict[str, str]:
    path = root / TRAINED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TRAINED_FILE} in {root}: export one with export_trained()")
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT or "prefixes" not in metadata:
        raise ValueError(f"{path}: not a FreezeEmpathModel artefact (format {metadata.get('format')!r}, want {FORMAT})")
    return metadata
