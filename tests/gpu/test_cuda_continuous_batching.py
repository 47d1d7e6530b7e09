"""Continuous batching on a CUDA device: rows that join and leave the LLM's and the speech decoder's KV
caches, and vocoding a round of several streams, with the paper preset's structure (Qwen2 LLM and
decoder, its 152 064-token vocabulary, bf16) at small widths.

Deselected by default (``-m gpu``). On a GPU machine::

    python -m pytest -m gpu tests/gpu
    FREEZEEMPATH_TEST_DEVICE=cpu python -m pytest -m gpu tests/gpu   # the same checks on the CPU

They look for what the CPU suite cannot see: non-finite cache entries (a device kernel giving NaN for a
left pad or a waiting decoder row, whose queries attend nothing), units outside the codec's range,
failures of batched device kernels, and NaN attention gradients in training (cuDNN's backward case).
Batch company may change bf16 sums on a GPU, so tokens are checked for range and finiteness, not for
equality with a reply decoded alone.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from freezeempath.codec.build import build_codec_part
from freezeempath.config import load_config
from freezeempath.inference.llm_session import GenerationRequest, LLMSession
from freezeempath.inference.speech_session import SpeechSession
from freezeempath.inference.vocode import VocodeRequest, vocode_batch
from freezeempath.model.build import build_decoder_part, build_llm_part
from helpers import finite_cache, text_request

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("FREEZEEMPATH_TEST_DEVICE", "cuda")
SMALL_PAPER = [
    "model.encoder.source=random",
    "model.llm.source=random",
    "model.encoder.layers=2",
    "model.llm.layers=2",
    "model.speech_decoder.layers=2",
    "model.encoder.d_model=64",
    "model.encoder.heads=2",
    "model.encoder.ffn_dim=128",
    "model.llm.hidden=128",
    "model.llm.heads=4",
    "model.llm.kv_heads=2",
    "model.llm.ffn=256",
    "model.speech_decoder.hidden=64",
    "model.speech_decoder.heads=4",
    "model.speech_decoder.kv_heads=2",
    "model.speech_decoder.ffn=128",
]


@pytest.fixture(scope="module")
def parts() -> tuple[Any, Any, list[int], Any, Any]:
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (or FREEZEEMPATH_TEST_DEVICE=cpu)")
    cfg = load_config("paper", SMALL_PAPER).model
    llm, stop = build_llm_part(cfg, DEVICE)
    return cfg, llm, stop, build_decoder_part(cfg, None, DEVICE), build_codec_part(cfg, DEVICE)


def test_llm_rows_join_and_leave_on_the_device(parts):
    cfg, llm, stop, _, _ = parts
    first = [text_request("tell me a long story", 30, seed=1), text_request("hi", 5, seed=6)]  # left-padded prefill
    session = LLMSession(llm, stop, first, read=3, output_device="cpu")
    late = [
        [text_request("hi", 9, seed=2)],
        [text_request("how are you today, my friend?", 12, seed=3), text_request("ok", 4, seed=4)],
    ]
    seen: list[int] = []
    for step in range(100):
        if step in (1, 3):  # one joins a running session; after another step, two with padding between them
            session.add(late[step // 2])
        groups = session.step()
        if groups is None:
            break
        assert finite_cache(session.cache), f"non-finite KV cache after step {step}"
        for group in groups:
            if group is not None:
                assert group.error is None and bool(torch.isfinite(group.hidden.float()).all())
                seen += group.token_ids
        session.compact()
    assert session.done and seen and all(0 <= t < cfg.llm.vocab for t in seen)


def test_decoder_rows_join_mid_reply_on_the_device(parts):
    cfg, llm, stop, decoder, _ = parts
    sd = cfg.speech_decoder

    def groups(request: GenerationRequest) -> list:
        text, out = LLMSession(llm, stop, [request], read=sd.read, output_device="cpu"), []
        while (step := text.step()) is not None:
            out.append(step[0])
        return out

    queues = [groups(text_request("a long answer, please", 24, seed=4)), groups(text_request("hi", 6, seed=5))]
    speech = SpeechSession(decoder, [True], sd.read, sd.write, 90, 1.0, [7])
    owners, units = [0], [[], []]
    for round_ in range(200):
        if round_ == 2:  # joins beside a reply in flight, and waits a round for its first text
            speech.add([True], [8])
            owners.append(1)
        text = [queues[b].pop(0) if queues[b] and not (b == 1 and round_ == 2) else None for b in owners]
        chunks = speech.round(text)
        assert finite_cache(speech.units.cache), f"non-finite decoder cache after round {round_}"
        for b, chunk in zip(owners, chunks, strict=True):
            if chunk is not None:
                assert chunk.error is None
                units[b] += chunk.units
        owners = [owners[row] for row in speech.compact()]
        if not owners:
            break
    assert not owners and all(units) and all(0 <= u < cfg.codec.n_units for reply in units for u in reply)


def test_vocoding_a_round_of_several_streams_on_the_device(parts):
    cfg, _, _, _, codec = parts
    g = torch.Generator().manual_seed(0)
    states: list = [None] * 4
    for round_ in range(3):
        chunk = [tuple(torch.randint(0, cfg.codec.n_units, (15,), generator=g).tolist()) for _ in states]
        if round_ == 1:
            states[3] = None  # a stream that joins: its first chunk beside continuing ones
        results = vocode_batch(codec, [VocodeRequest(s, c) for s, c in zip(states, chunk, strict=True)], 24_000)
        for result in results:
            assert result.audio.numel() > 0 and bool(torch.isfinite(result.audio).all())
        states = [r.state for r in results]


def test_training_attention_gives_finite_query_gradients_on_the_device():
    """The case where cuDNN attention's backward returned NaN dQ under torch 2.11 on Hopper: a mask, a
    length ≡ 64 mod 128, and rows whose logsumexp is far below -88.7. Training turns that kernel off."""
    import math

    import torch.nn.functional as F
    from freezeempath.model.masks import avoid_cudnn_attention

    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (or FREEZEEMPATH_TEST_DEVICE=cpu)")
    avoid_cudnn_attention()
    g = torch.Generator().manual_seed(0)
    length, dim = 704, 64
    q, k = (0.1 * torch.randn(1, 1, length, dim, generator=g) for _ in range(2))
    v = torch.randn(1, 1, length, dim, generator=g)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(dim)  # every score near -120
    q, k, v = (x.to(DEVICE, torch.bfloat16).requires_grad_() for x in (q, k, v))
    mask = torch.ones(length, length, dtype=torch.bool, device=DEVICE).tril()[None, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(torch.randn(out.shape, generator=g).to(out))
    assert all(bool(torch.isfinite(x.grad).all()) for x in (q, k, v))
