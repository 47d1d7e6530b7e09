"""Masks in one place: from lengths (adapter slice, emotion mean and pooling, LLM attention), the SDPA
mask of the HF language models (LLM and speech decoder), and which SDPA kernel training may use."""

from __future__ import annotations

from typing import Any

import torch


def length_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` lengths → ``(B, T)`` bool mask, True at valid positions."""
    t = int(lens.max()) if max_len is None else max_len
    return torch.arange(t, device=lens.device)[None, :] < lens[:, None]


SDPA_ATTENDING = "sdpa_every_query_attends"


def sdpa_mask_every_query_attends(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """transformers' SDPA mask ``(B, 1, Q, K)``, where a query that attends no key attends every key.

    Such a query (a left pad of a batched prefill; a decoder row with no input yet) has no defined
    attention output, and a kernel may give NaN for it (reported upstream for cuDNN's, which torch 2.11
    picks for masked SDPA on Hopper; on an H100 it gave finite values here). A NaN row would carry NaN
    keys and values, and a masked NaN still poisons every later query of that row (a NaN score plus
    the mask's -inf is NaN). No real query attends it and its output is never read, so opening its
    mask changes no result (transformers 4.x did the same; 5.x leaves it to the kernel).
    """
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    if mask is None or mask.dtype != torch.bool:
        return mask
    return mask | ~mask.any(dim=-1, keepdim=True)


def every_query_attends(model: Any) -> Any:
    """Switch an HF model on SDPA to :func:`sdpa_mask_every_query_attends` (same kernel); returns it."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface

    if model.config._attn_implementation != "sdpa":
        return model  # eager masks with a finite minimum; flash kernels take no padded mask
    AttentionInterface.register(SDPA_ATTENDING, sdpa_attention_forward)
    AttentionMaskInterface.register(SDPA_ATTENDING, sdpa_mask_every_query_attends)
    model.set_attn_implementation(SDPA_ATTENDING)
    return model


def avoid_cudnn_attention() -> None:
    """Train without cuDNN's SDPA kernel on CUDA (this process); a no-op without a GPU.

    torch 2.11 runs masked SDPA through cuDNN on Hopper, and its backward can return NaN query
    gradients (padded length ≡ 64 mod 128 with a row's logsumexp below -88.7, as the outlier heads of
    real LLMs give). The adapter's gradients pass through the frozen LLM's attention, so one such batch
    would spoil the weights. The memory-efficient kernel computes the same attention.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
