"""The speech session: batched unit streams equal separate ones, and replies join and leave between rounds."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from freezeempath.config import SpeechDecoderConfig
from freezeempath.inference.llm_session import LLMSession
from freezeempath.inference.speech_session import BatchedUnitStreams, SpeechSession
from freezeempath.model.build import build_speech_decoder
from freezeempath.model.speech_decoder import UnitStream, UnitStreamState
from helpers import text_request


def _unit_streams_and_refs(temperature: float) -> tuple[Any, list, list, list[list[int]]]:
    """A tiny decoder, three streams' text (8 states each) and each stream's units decoded alone."""
    torch.manual_seed(0)
    decoder = build_speech_decoder(SpeechDecoderConfig(), d_llm=24, text_vocab=50, n_units=16).eval()
    g = torch.Generator().manual_seed(1)
    hidden = [torch.randn(8, 24, generator=g) for _ in range(3)]
    tokens = [torch.randint(0, 50, (8,), generator=g) for _ in range(3)]
    refs = []
    for b in range(3):  # read 3, write 4, read 3, write 4, read 2 + <sep>, write to the end
        stream, out = UnitStream(decoder, 30, temperature, torch.Generator().manual_seed(b)), []
        for start, size in ((0, 3), (3, 3), (6, 2)):
            stream.read(hidden[b][start : start + size], tokens[b][start : start + size])
            if size == 3:
                out += stream.write(4).units
        stream.end_text()
        while not (result := stream.write(4)).finished and result.units:
            out += result.units
        refs.append(out + result.units)
    return decoder, hidden, tokens, refs


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_unit_streams_match_separate_unit_streams(temperature):
    decoder, hidden, tokens, refs = _unit_streams_and_refs(temperature)
    batched, got = BatchedUnitStreams(decoder, 3, 30, temperature, [0, 1, 2]), [[] for _ in range(3)]
    for round_ in range(20):  # row b starts b rounds late: masked padding before its first input
        rows = {b: round_ - b for b in range(3) if 0 <= round_ - b < 3}
        reads = {b: (hidden[b][3 * k : 3 * k + 3], tokens[b][3 * k : 3 * k + 3]) for b, k in rows.items()}
        batched.read(reads, {b for b, k in rows.items() if k == 2})
        writers = {b for b in range(3) if round_ >= b}
        for b, units in batched.write(writers, 4).items():
            got[b] += units
        if all(s is UnitStreamState.FINISHED for s in batched.state):
            break
    assert got == refs


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_unit_streams_join_and_leave_between_rounds(temperature):
    decoder, hidden, tokens, refs = _unit_streams_and_refs(temperature)
    batched, got = BatchedUnitStreams(decoder, 1, 30, temperature, [0]), [[] for _ in range(3)]
    owners, started = [0], {0: 0}  # row → stream; stream → its first round
    for round_ in range(20):
        if round_ in (2, 5):  # streams 1 and 2 join running batches, stream 2 after stream 0 has left
            owners.append(len(started))
            started[owners[-1]] = round_
            batched.add([owners[-1]])
        k = {row: round_ - started[b] for row, b in enumerate(owners)}
        reads = {
            row: (hidden[owners[row]][3 * n : 3 * n + 3], tokens[owners[row]][3 * n : 3 * n + 3])
            for row, n in k.items()
            if n < 3
        }
        batched.read(reads, {row for row, n in k.items() if n == 2})
        for row, units in batched.write(set(k), 4).items():
            got[owners[row]] += units
        live = [row for row, state in enumerate(batched.state) if state is not UnitStreamState.FINISHED]
        batched.keep(live)
        owners = [owners[row] for row in live]
        if not owners and len(started) == 3:
            break
    assert got == refs and batched.mask.shape == (0, 0)


def test_speech_session_streams_join_and_leave_between_rounds(tiny_parts):
    """A reply's chunks do not depend on when it joins a running session or on who left before it."""
    cfg, model = tiny_parts
    sd = cfg.speech_decoder
    requests, seeds = [text_request("a long one, please", 20, seed=4), text_request("hi", 8, seed=6)], [7, 8]

    def text_groups(request):  # the LLM's groups of one reply, step by step
        llm, groups = LLMSession(model.llm, model.stop_ids, [request], read=sd.read), []
        while (step := llm.step()) is not None:
            groups.append(step[0])
        return groups

    def units(streams, join_at=-1):
        """Units per stream; stream 0 opens the session, stream 1 (if given) joins at round ``join_at``."""
        queues, owners = [text_groups(requests[b]) for b in streams], [0]
        speech, got = (
            SpeechSession(model.speech_decoder, [True], sd.read, sd.write, 40, 1.0, [seeds[streams[0]]]),
            [[], []],
        )
        for round_ in range(200):
            if round_ == join_at:
                speech.add([True], [seeds[streams[1]]])
                owners.append(1)
            chunks = speech.round([queues[b].pop(0) if queues[b] else None for b in owners])
            for b, chunk in zip(owners, chunks, strict=True):
                got[b] += chunk.units if chunk is not None else ()
            owners = [owners[row] for row in speech.compact()]
            if not owners and round_ >= join_at:
                return got[: len(streams)]
        raise AssertionError("the session never finished")

    alone = [units([0])[0], units([1])[0]]
    assert all(alone) and units([0, 1], join_at=2) == alone
