"""The models' own attention mask: a query that attends no key cannot put NaN into a reply.

Left pads of a batched LLM prefill and a decoder row still waiting for its text attend no key. With a
kernel that gives NaN there (as reported upstream for cuDNN's on Hopper), transformers' plain SDPA mask
lets the NaN into the caches; ``every_query_attends`` (applied by the builders) keeps them finite, and
the replies equal those of the CPU kernel.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from freezeempath.config import load_config
from freezeempath.inference.llm_session import LLMSession
from freezeempath.inference.speech_session import SpeechSession
from freezeempath.model.build import build_decoder_part, build_llm_part, build_model
from helpers import finite_cache, nan_where_nothing_attended, text_request


def test_queries_that_attend_nothing_cannot_poison_a_reply():
    from transformers.masking_utils import sdpa_mask

    cfg = load_config("tiny").model
    model = build_model(cfg)

    def nan_kernel_parts(mask: Any = None) -> tuple[Any, Any, list[list[int]]]:
        llm, decoder = build_llm_part(cfg)[0], build_decoder_part(cfg).eval()
        return llm, decoder, [nan_where_nothing_attended(m, mask) for m in (llm.model, decoder.lm)]

    plain, guarded = nan_kernel_parts(mask=sdpa_mask), nan_kernel_parts()
    reference = _replies_beside_pads(cfg, model.llm, model.stop_ids, model.speech_decoder)
    assert reference.finite and all(reference.units)
    assert not _replies_beside_pads(cfg, plain[0], model.stop_ids, plain[1]).finite
    assert all(n[0] > 0 for n in plain[2])  # the NaN kernel met such queries in both models
    assert _replies_beside_pads(cfg, guarded[0], model.stop_ids, guarded[1]) == reference
    assert all(n[0] == 0 for n in guarded[2])


def _replies_beside_pads(cfg: Any, llm: Any, stop: list[int], decoder: Any) -> SimpleNamespace:
    """Two greedy replies of one left-padded LLM prefill; the second joins the decoder a round late."""
    sd = cfg.speech_decoder
    requests = [text_request(text, n, temperature=0.0) for text, n in (("hi", 6), ("how are you today?", 9))]
    text, finite = LLMSession(llm, stop, requests, read=sd.read), []
    groups, tokens = [[], []], [[], []]
    while (step := text.step()) is not None:
        finite.append(finite_cache(text.cache))
        for b, group in enumerate(step):
            groups[b] += [group] if group is not None else []
            tokens[b] += group.token_ids if group is not None else ()
    speech, owners, units = SpeechSession(decoder, [True], sd.read, sd.write, 40, 0.0, [1]), [0], [[], []]
    for round_ in range(200):
        if round_ == 1:  # joins beside a reply in flight, then waits a round for its first text
            speech.add([True], [2])
            owners.append(1)
        waiting = {1} if round_ == 1 else set()
        chunks = speech.round([groups[b].pop(0) if groups[b] and b not in waiting else None for b in owners])
        finite.append(finite_cache(speech.units.cache))
        for b, chunk in zip(owners, chunks, strict=True):
            units[b] += chunk.units if chunk is not None else ()
        owners = [owners[row] for row in speech.compact()]
        if not owners:
            break
    return SimpleNamespace(tokens=tokens, units=units, finite=all(finite))
