"""The deployments' own logic, without Ray: the LLM's shared sessions and a decoder batch's vocoding.

The deployment classes are called directly (``Deployment.func_or_class``); the library pieces they run
are tested in ``tests/inference``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from freezeempath.codec.build import build_codec
from freezeempath.config import load_config
from freezeempath.inference.dialogue import FinishReason
from freezeempath.inference.llm_session import GenerationRequest
from freezeempath.inference.speech_session import SpeechChunk
from freezeempath.inference.vocode import VocodeRequest, vocode_batch
from helpers import text_request, unslotted_request

from serve.args import ModelArgs
from serve.deployments import LLM
from serve.deployments.round_vocoder import RoundVocoder
from serve.deployments.speech_decoding import DecoderStream, first_sound


def _tiny_llm():
    """The LLM deployment's class, built as a replica builds it (tiny preset, CPU)."""
    return LLM.func_or_class(ModelArgs(config="tiny", device="cpu"))


def test_a_round_holds_the_next_only_when_it_carries_the_first_audio_of_each_stream_in_it():
    """The decoder batch vocodes such a round before decoding the next (the cores go to the first audio)."""
    old, new, mute = (DecoderStream(GenerationRequest(turns=(), speech_output=o)) for o in (True, True, False))
    sound, silent = SpeechChunk("a", units=(1, 2)), SpeechChunk("a")
    assert not first_sound([(old, silent), (mute, sound)])  # nothing to vocode: no hold
    assert first_sound([(old, sound), (mute, sound)])  # a new batch's first sounding round
    assert not first_sound([(old, sound)])  # its second
    assert not first_sound([(old, sound), (new, sound)])  # a joiner sounds beside a stream already heard
    joiner = DecoderStream(GenerationRequest(turns=()))
    assert first_sound([(old, silent), (joiner, sound)])  # only a new stream sounds
    failed = DecoderStream(GenerationRequest(turns=()))
    assert not first_sound([(failed, replace(sound, error="the LLM stream failed"))])


def test_round_vocoder_chains_states_across_overlapping_rounds():
    """Rounds submitted back to back (the session decodes on meanwhile) give each stream's one-by-one audio."""
    codec = build_codec(load_config("tiny").model.codec)

    class Transport:  # stands in for the handle's ``.remote`` hop only; the vocoding is the real one
        async def _call(self, requests):
            await asyncio.sleep(0.01)  # later rounds are submitted before this one returns
            return vocode_batch(codec, requests, output_rate=24_000)

        def __getattr__(self, name):
            return type("Method", (), {"remote": staticmethod(self._call)})

    g = torch.Generator().manual_seed(1)
    units = [torch.randint(0, codec.n_units, (15,), generator=g).tolist() for _ in range(2)]
    rounds = [[SpeechChunk(text="x", units=tuple(u[i : i + 5])) for u in units] for i in range(0, 15, 5)]
    rounds[-1] = [replace(c, finish_reason=FinishReason.STOP) for c in rounds[-1]]
    rounds[1][1] = None  # a stream with nothing this round

    class Stream:  # what the vocoder reads of a decoder stream; hashed by identity, as the real one
        def __init__(self, wanted: bool) -> None:
            self.request, self.gone = SimpleNamespace(speech_output=wanted), False

    streams = [Stream(True), Stream(False)]

    async def run():  # the second stream wants no speech
        voice = RoundVocoder(Transport())
        tasks = [voice.submit(list(zip(streams, chunks, strict=True))) for chunks in rounds]
        done = [[chunk for _, chunk in await t] for t in tasks]
        return done, voice.states

    done, states_left = asyncio.run(run())
    states, ref = None, []
    for i in range(0, 15, 5):
        result = vocode_batch(codec, [VocodeRequest(states, tuple(units[0][i : i + 5]), final=i == 10)], 24_000)[0]
        states = result.state
        ref.append(result.audio)
    torch.testing.assert_close(torch.cat([r[0].audio for r in done]), torch.cat(ref))
    assert all(r[1] is None or r[1].audio is None for r in done) and done[1][1] is None
    assert states_left == {}  # a stream's state is dropped with its last chunk


def test_an_llm_call_that_cannot_join_fails_alone_and_the_running_call_goes_on():
    llm = _tiny_llm()
    request = text_request("hello there", 90, seed=2)

    async def tokens(req, delay=0.0):
        await asyncio.sleep(delay)
        return [t async for (group,) in llm.generate([req], batch="k") if group is not None for t in group.token_ids]

    async def run():
        alone = await tokens(request)
        running = asyncio.ensure_future(tokens(request))
        with pytest.raises(ValueError, match="placeholder"):
            await tokens(unslotted_request(), delay=0.01)
        assert not running.done(), "the broken call must have tried to join the running session"
        return alone, await running

    alone, survived = asyncio.run(asyncio.wait_for(run(), timeout=120))
    assert survived == alone and llm.batches == {}


def test_llm_calls_with_one_batch_key_share_a_session_and_give_their_replies_alone():
    """``LLM.generate`` (the deployment's class, called directly): a call with the key of a running batch
    joins its session between steps; each call still gets exactly the groups of its own requests."""
    llm = _tiny_llm()
    requests = [text_request("hello there", 90, seed=2), text_request("hi", 6, seed=5)]

    async def tokens(request, key, delay=0.0):
        await asyncio.sleep(delay)
        out, rows = [], 0
        async for (group,) in llm.generate([request], batch=key):
            out += group.token_ids if group is not None else ()
            if key in llm.batches:  # streams in the running session right now
                rows = max(rows, len(llm.batches[key].owners))
        return out, rows

    async def run():
        alone = [(await tokens(r, ""))[0] for r in requests]
        first = asyncio.ensure_future(tokens(requests[0], "k"))
        late = await tokens(requests[1], "k", delay=0.01)  # while the first call runs
        return alone, await first, late, len(llm.batches)

    alone, (first, _), (late, rows), left = asyncio.run(run())
    assert [first, late] == alone and left == 0
    assert rows == 2, "the late call must join the running session"


def test_dropping_one_reply_of_an_llm_call_stops_its_row_and_the_others_go_on():
    """``LLM.drop``: the decoder stops the reply of a stream whose caller has gone while the same call
    still serves other streams; that reply's row leaves the session, the other reply is unchanged."""
    llm = _tiny_llm()
    requests = [text_request("hello there", 90, seed=2), text_request("tell me more", 40, seed=3)]

    async def run():
        alone = [t async for (group,) in llm.generate([requests[1]]) if group is not None for t in group.token_ids]
        kept, queued, after_drop, opened = [], -1, 0, []
        async for groups in llm.generate(requests, batch="k", call_id="c"):
            kept += groups[1].token_ids if groups[1] is not None else ()
            if queued < 0:  # steps the session had already sent when the drop came may still carry it
                opened = list(llm.batches["k"].session.streams)  # no row has left yet: none had been dropped
                queued = llm.calls["c"].outbox.qsize()
                assert await llm.drop("c", 0) and not await llm.drop("c", 0) and not await llm.drop("other", 0)
            else:
                after_drop += groups[0] is not None
        return alone, kept, queued, after_drop, opened

    alone, kept, queued, after_drop, opened = asyncio.run(asyncio.wait_for(run(), timeout=120))
    dropped = opened[0]
    assert kept == alone and after_drop <= queued and llm.dropped == 1
    assert not dropped.done and len(dropped.tokens) < 90, "the dropped row must stop, not run to its end"
    assert llm.calls == {} and llm.batches == {}


def test_an_llm_call_that_cannot_start_fails_with_an_error_and_the_replica_goes_on():
    llm = _tiny_llm()
    broken = unslotted_request()

    async def run(request):
        return [groups async for groups in llm.generate([request], batch="k")]

    with pytest.raises(ValueError):
        asyncio.run(asyncio.wait_for(run(broken), timeout=60))
    assert llm.batches == {} and asyncio.run(run(text_request("hi", 4)))
