"""A fitted codec on disk: ``codec.json`` (its args) and ``codec.safetensors`` (its fitted tensors).

In: a directory, and for writing a codec's tensors and args record. Out: the record as read (older records
brought up to date) and the tensors, copied strictly into a codec's own. Every codec kind saves and loads
through these; the kinds decide what goes in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from freezeempath.config import CodecConfig

# every codec's constructor args: CodecConfig's fields except ``kind`` and ``path``, in order
CODEC_ARGS = tuple(f.name for f in dataclasses.fields(CodecConfig) if f.name not in ("kind", "path"))
WEIGHTS_FILE = "codec.safetensors"
ARGS_FILE = "codec.json"


def write_codec(directory: str | Path, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write ``tensors`` (moved to the CPU) to ``codec.safetensors`` and ``record`` to ``codec.json``;
    returns the directory (created if missing)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    safetensors.torch.save_file(cpu, str(root / WEIGHTS_FILE))
    (root / ARGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return root


def read_record(directory: str | Path) -> Any:
    """``codec.json`` of ``directory`` as read, brought up to date by :func:`saved_args`."""
    return saved_args(json.loads((Path(directory) / ARGS_FILE).read_text()))


def read_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """``codec.safetensors`` of ``directory``: fitted tensors by name."""
    return safetensors.torch.load_file(str(Path(directory) / WEIGHTS_FILE))


def saved_args(record: Any) -> Any:
    """``codec.json`` as read, with ``voice_conditioned: false`` where it predates voices."""
    return {"voice_conditioned": False, **record} if isinstance(record, dict) else record


@torch.no_grad()
def copy_strict(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``own`` in place; different names or shapes raise, naming ``source``."""
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        raise ValueError(f"{source}: codec tensors do not match (missing {missing}, unexpected {extra})")
    for name, value in own.items():
        got, want = tuple(tensors[name].shape), tuple(value.shape)
        if got != want:
            raise ValueError(f"{source}: {name} has shape {got}, but codec.json implies {want}")
        value.copy_(tensors[name])
