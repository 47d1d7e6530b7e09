"""Pickling for what crosses a process boundary: CPU tensors travel as NumPy arrays.

torch pickles a tensor through ``torch.save`` (a zip archive per tensor, holding its whole storage even
for a view): on the 2-core dev machine about 120 µs to pickle and 130 µs to unpickle a tensor of up to
10⁴ elements, against 25 and 6 µs for the same data as a NumPy array. Serving sends about a dozen small
tensors per decoder round (the LLM's hidden rows, the vocoder state both ways, audio), so the messages
that cross hops reduce through :func:`reduce_fields` (plain objects: :func:`packed_state` and
:func:`unpacked_state`), and loose tensors go as :func:`packed` values. bfloat16 (the paper preset's
hidden states and clip features) travels as its int16 bits. Tensors on an accelerator, needing grad or
of another dtype NumPy cannot hold pickle the usual way. ``copy.copy`` of such an object still shares
its tensors (the rebuild unwraps them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

_NUMPY_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    }
)


_BITS = {torch.bfloat16: torch.int16}  # dtypes NumPy lacks → a NumPy-held dtype of the same width


def _tensor(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The tensor :class:`_AsArray` stood for (a writable array is shared, not copied); ``dtype``: the
    torch dtype whose bits the array holds."""
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    return tensor if dtype is None else tensor.view(dtype)


class _AsArray:
    """Stands for a tensor in a pickle: it unpickles as that tensor, rebuilt from a NumPy array."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray] | tuple[np.ndarray, torch.dtype]]:
        tensor = self.tensor.resolve_conj().resolve_neg()
        if tensor.dtype in _BITS:
            return _tensor, (tensor.view(_BITS[tensor.dtype]).numpy(), tensor.dtype)
        return _tensor, (tensor.numpy(),)


def _as_array(value: torch.Tensor) -> bool:
    return (
        type(value) is torch.Tensor
        and value.device.type == "cpu"
        and not value.requires_grad
        and (value.dtype in _NUMPY_DTYPES or value.dtype in _BITS)
    )


def packed(value: Any) -> Any:
    """``value`` ready to pickle fast: a CPU tensor, also inside tuples and lists, pickles as an array and
    unpickles as an equal tensor; anything else is returned as is."""
    if isinstance(value, torch.Tensor):
        return _AsArray(value) if _as_array(value) else value
    if type(value) in (tuple, list):
        return type(value)(packed(v) for v in value)
    return value


def unpacked(value: Any) -> Any:
    """The inverse of :func:`packed` without pickling (what ``copy.copy`` hands back)."""
    if isinstance(value, _AsArray):
        return value.tensor
    if type(value) in (tuple, list):
        return type(value)(unpacked(v) for v in value)
    return value


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    return cls(*(unpacked(v) for v in values))


def reduce_fields(obj: Any) -> tuple[Any, tuple[type, tuple[Any, ...]]]:
    """``__reduce__`` of a dataclass whose fields hold tensors: rebuilt by its constructor from its
    fields, their tensors pickled as arrays."""
    return _rebuild, (type(obj), tuple(packed(getattr(obj, f.name)) for f in dataclasses.fields(obj)))


def packed_state(obj: Any) -> dict[str, Any]:
    """``__getstate__`` of a plain object whose attributes hold tensors."""
    return {k: packed(v) for k, v in vars(obj).items()}


def unpacked_state(obj: Any, state: dict[str, Any]) -> None:
    """``__setstate__`` matching :func:`packed_state`."""
    vars(obj).update({k: unpacked(v) for k, v in state.items()})
