"""Library pieces the Serve deployments run: each batched step equals its one-stream reference."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from freezeempath.chat_template import Turn
from freezeempath.codec.mel_codec import build_codec
from freezeempath.config import SpeechDecoderConfig, load_config
from freezeempath.inference.audio_io import StreamingResampler, decode_input_audio, encode_audio, pcm16_bytes
from freezeempath.inference.dialogue import FinishReason
from freezeempath.inference.llm_session import GenerationRequest, LLMSession
from freezeempath.inference.speech_session import BatchedUnitStreams, SpeechChunk, SpeechSession
from freezeempath.inference.vocode import VocodeRequest, vocode_batch
from freezeempath.model.build import (
    build_decoder_part,
    build_llm_part,
    build_model,
    build_speech_decoder,
    build_understander,
)
from freezeempath.model.speech_decoder import StreamState, UnitStream
from helpers import finite_cache, nan_where_nothing_attended, speech_like, unslotted_request

from serve.deployments import RoundVocoder, _first_sound, _Stream


@pytest.mark.parametrize(("orig", "new"), [(16_000, 24_000), (22_050, 24_000), (24_000, 16_000)])
def test_streaming_resampler_joins_to_the_whole_signal_resample(orig, new):
    x = torch.randn(orig + 123, generator=torch.Generator().manual_seed(0))
    resampler, out, i = StreamingResampler(orig, new), [], 0
    for size in [1, 7, 320, 1600, 5000] * 10:
        out.append(resampler.push(x[i : i + size]))
        i += size
    out.append(resampler.flush())
    torch.testing.assert_close(torch.cat(out), torchaudio.functional.resample(x, orig, new), atol=1e-5, rtol=0)


@pytest.mark.parametrize("voiced", [False, True])
def test_vocode_batch_equals_one_stream_push_and_resamples(voiced):
    codec = build_codec(replace(load_config("tiny").model.codec, voice_conditioned=voiced))
    if voiced:  # a voice that changes the mel, so a batch that dropped it would differ from the stream
        init = torch.Generator().manual_seed(2)
        torch.nn.init.normal_(codec.decoder.voice.weight, generator=init)
        codec.default_voice.normal_(generator=torch.Generator().manual_seed(1))
        torch.nn.init.normal_(codec.decoder.out.weight, std=0.01, generator=init)
    g = torch.Generator().manual_seed(0)
    streams = [torch.randint(0, codec.n_units, (n,), generator=g) for n in (13, 17, 5)]
    refs = []
    for units in streams:
        decoder = codec.stream()
        refs.append(torch.cat([decoder.push(units[i : i + 5]) for i in range(0, units.numel(), 5)]))
    states, got = [None] * 3, [[] for _ in streams]
    for i in range(0, 17, 5):
        requests = [VocodeRequest(states[b], tuple(streams[b][i : i + 5].tolist())) for b in range(3)]
        for b, result in enumerate(vocode_batch(codec, requests)):
            got[b].append(result.audio)
            states[b] = result.state
    # Griffin-Lim magnifies the batch's float rounding where the voice makes the mel larger: up to 7e-4
    # over eight weight draws, against 1.3e-2 for a batch that drops the voice (peaks 0.02-0.07)
    atol = 2e-3 if voiced else 1e-4
    for ref, parts in zip(refs, got, strict=True):
        torch.testing.assert_close(torch.cat(parts), ref, atol=atol, rtol=0)
    final = vocode_batch(codec, [VocodeRequest(None, tuple(streams[0].tolist()), final=True)], output_rate=24_000)
    assert final[0].audio.numel() == streams[0].numel() * codec.hop_length * 3 // 2 and final[0].sample_rate == 24_000


def test_a_round_holds_the_next_only_when_it_carries_the_first_audio_of_each_stream_in_it():
    """The decoder batch vocodes such a round before decoding the next (the cores go to the first audio)."""
    old, new, mute = (_Stream(GenerationRequest(turns=(), speech_output=o)) for o in (True, True, False))
    sound, silent = SpeechChunk("a", units=(1, 2)), SpeechChunk("a")
    assert not _first_sound([(old, silent), (mute, sound)])  # nothing to vocode: no hold
    assert _first_sound([(old, sound), (mute, sound)])  # a new batch's first sounding round
    assert not _first_sound([(old, sound)])  # its second
    assert not _first_sound([(old, sound), (new, sound)])  # a joiner sounds beside a stream already heard
    joiner = _Stream(GenerationRequest(turns=()))
    assert _first_sound([(old, silent), (joiner, sound)])  # only a new stream sounds
    failed = _Stream(GenerationRequest(turns=()))
    assert not _first_sound([(failed, replace(sound, error="the LLM stream failed"))])


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
        if all(s is StreamState.FINISHED for s in batched.state):
            break
    assert got == refs


@pytest.fixture(scope="module")
def tiny_parts():
    cfg = load_config("tiny").model
    return cfg, build_model(cfg)


def test_parts_built_alone_equal_the_full_model(tiny_parts):
    cfg, model = tiny_parts
    alone, full = build_decoder_part(cfg).state_dict(), model.speech_decoder.state_dict()
    assert alone.keys() == full.keys() and all(torch.equal(alone[k], full[k]) for k in alone)
    understander = build_understander(cfg)
    assert torch.equal(understander.emotion.query, model.emotion.query)


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
        live = [row for row, state in enumerate(batched.state) if state is not StreamState.FINISHED]
        batched.keep(live)
        owners = [owners[row] for row in live]
        if not owners and len(started) == 3:
            break
    assert got == refs and batched.mask.shape == (0, 0)


def _request(text: str, tokens: int, seed: int = 0) -> GenerationRequest:
    return GenerationRequest(turns=(Turn("user", text),), max_new_tokens=tokens, temperature=1.0, seed=seed)


def _run(session: LLMSession) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in session.streams]
    while (groups := session.step()) is not None:
        for b, group in enumerate(groups):
            if group is not None:
                assert len(group.token_ids) <= 3 and group.hidden.shape == (len(group.token_ids), 32)
                out[b] += group.token_ids
    return out


def test_llm_session_sampling_is_per_stream_and_bad_requests_fail_alone(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    alone = _run(LLMSession(llm, stop, [_request("hello", 7, seed=3)], read=3))
    long_prompt = _request("x" * 3000, 7)  # byte-level tokenizer: > 2048 positions
    session = LLMSession(llm, stop, [_request("another one", 5), long_prompt, _request("hello", 7, seed=3)], read=3)
    first = session.step()
    assert first is not None and first[1] is not None and "exceed" in (first[1].error or "")
    assert not first[1].server_fault  # the request's fault: the gateway answers 400
    together = _run(session)
    assert together[2] == alone[0] and together[1] == []


def test_audio_io_decodes_checks_and_encodes():
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(0.3).numpy(), 16000, format="FLAC")
    assert decode_input_audio(buffer.getvalue(), "flac").sample_rate == 16000
    for data, declared, message in [
        (buffer.getvalue(), "wav", "declared as wav but the data is flac"),
        (b"not audio at all" * 10, "wav", "could not be decoded"),
        (b"", "mp3", "empty"),
        (b"x", "aac", "unsupported input audio format"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode_input_audio(data, declared)
    wave = np.linspace(-1.5, 1.5, 2400, dtype=np.float32)
    assert pcm16_bytes(wave)[:2] == np.int16(-32767).tobytes() and len(pcm16_bytes(wave)) == 4800
    for fmt in ("wav", "flac", "mp3"):
        samples, rate = sf.read(io.BytesIO(encode_audio(wave * 0.1, 24_000, fmt)))
        assert rate == 24_000 and samples.shape[0] > 0


def test_understanding_is_safe_across_threads(tiny_parts):
    from concurrent.futures import ThreadPoolExecutor

    from freezeempath.inference.understanding import understand_clips

    cfg, _ = tiny_parts
    part = build_understander(cfg)
    batches = [[speech_like(0.5 + 0.1 * i, seed=i) for i in range(n)] for n in (2, 3, 1, 4) * 3]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda clips: understand_clips(part, clips), batches))
    assert [len(r) for r in results] == [len(b) for b in batches]


def test_llm_session_streams_join_and_leave_between_steps(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    requests = [_request("another one", 4, seed=1), _request("hello there, how are you", 9, seed=2), _request("hi", 6)]
    alone = [_run(LLMSession(llm, stop, [r], read=3))[0] for r in requests]
    session, out = LLMSession(llm, stop, requests[:1], read=3), [[], [], []]
    owners = [0]  # session stream → request
    for step in range(40):
        if step in (1, 3):  # the second request joins a running session, the third one after a compact
            owners.append(1 if step == 1 else 2)
            session.add([requests[owners[-1]]])
        groups = session.step()
        if groups is None:
            break
        for b, group in enumerate(groups):
            if group is not None:
                out[owners[b]] += group.token_ids
        owners = [owners[b] for b in session.compact()]
    assert out == alone and owners == [] and session.cache is None
    dropped = LLMSession(llm, stop, requests[1:], read=3)
    first = dropped.step()
    assert first is not None and first[1] is not None
    assert dropped.compact(drop={0}) == [1] and dropped.mask.shape[0] == 1
    assert [*first[1].token_ids, *_run(dropped)[0]] == alone[2]


def test_llm_session_a_request_that_cannot_join_leaves_the_running_streams_as_they_were(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    request = _request("hello there, how are you", 9, seed=2)

    def groups(session: LLMSession) -> list:
        out = []
        while (step := session.step()) is not None:
            out += [g for g in step if g is not None]
        return out

    alone = groups(LLMSession(llm, stop, [request], read=3))
    session = LLMSession(llm, stop, [request], read=3)
    first = session.step()
    with pytest.raises(ValueError, match="placeholder"):
        session.add([unslotted_request()])
    assert len(session.streams) == 1 and session.mask.shape[0] == 1
    assert first is not None and first[0] is not None
    got = [first[0], *groups(session)]
    assert [g.token_ids for g in got] == [g.token_ids for g in alone]
    for mine, theirs in zip(got, alone, strict=True):  # the same context: no position fed twice
        torch.testing.assert_close(mine.hidden, theirs.hidden)


def test_an_llm_call_that_cannot_join_fails_alone_and_the_running_call_goes_on():
    from serve.deployments import LLM
    from serve.schemas import ModelArgs

    llm = LLM.func_or_class(ModelArgs(config="tiny", device="cpu"))
    request = _request("hello there", 90, seed=2)

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
    from serve.deployments import LLM
    from serve.schemas import ModelArgs

    llm = LLM.func_or_class(ModelArgs(config="tiny", device="cpu"))
    requests = [_request("hello there", 90, seed=2), _request("hi", 6, seed=5)]

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
    from serve.deployments import LLM
    from serve.schemas import ModelArgs

    llm = LLM.func_or_class(ModelArgs(config="tiny", device="cpu"))
    requests = [_request("hello there", 90, seed=2), _request("tell me more", 40, seed=3)]
    make, opened = llm._session, []

    def recording(reqs):  # keeps each session's streams as opened, to look at the dropped one's tokens
        session = make(reqs)
        opened.append(list(session.streams))
        return session

    llm._session = recording

    async def run():
        alone = [t async for (group,) in llm.generate([requests[1]]) if group is not None for t in group.token_ids]
        kept, queued, after_drop = [], -1, 0
        async for groups in llm.generate(requests, batch="k", call_id="c"):
            kept += groups[1].token_ids if groups[1] is not None else ()
            if queued < 0:  # steps the session had already sent when the drop came may still carry it
                queued = llm.calls["c"].outbox.qsize()
                assert await llm.drop("c", 0) and not await llm.drop("c", 0) and not await llm.drop("other", 0)
            else:
                after_drop += groups[0] is not None
        return alone, kept, queued, after_drop

    alone, kept, queued, after_drop = asyncio.run(asyncio.wait_for(run(), timeout=120))
    dropped = opened[1][0]
    assert kept == alone and after_drop <= queued and llm.dropped == 1
    assert not dropped.done and len(dropped.tokens) < 90, "the dropped row must stop, not run to its end"
    assert llm.calls == {} and llm.batches == {}


def test_speech_session_streams_join_and_leave_between_rounds(tiny_parts):
    """A reply's chunks do not depend on when it joins a running session or on who left before it."""
    cfg, model = tiny_parts
    sd = cfg.speech_decoder
    requests, seeds = [_request("a long one, please", 20, seed=4), _request("hi", 8, seed=6)], [7, 8]

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


def test_an_llm_call_that_cannot_start_fails_with_an_error_and_the_replica_goes_on():
    from serve.deployments import LLM
    from serve.schemas import ModelArgs

    llm = LLM.func_or_class(ModelArgs(config="tiny", device="cpu"))
    broken = unslotted_request()

    async def run(request):
        return [groups async for groups in llm.generate([request], batch="k")]

    with pytest.raises(ValueError):
        asyncio.run(asyncio.wait_for(run(broken), timeout=60))
    assert llm.batches == {} and asyncio.run(run(_request("hi", 4)))


def test_queries_that_attend_nothing_cannot_poison_a_reply(tiny_parts):
    """Left pads of a batched prefill and a decoder row still waiting for text attend no key.

    With a kernel that gives NaN there (as reported upstream for cuDNN's on Hopper), transformers' plain
    SDPA mask lets the NaN into the caches; the models' own mask keeps them finite, and the replies
    equal those of the CPU kernel.
    """
    from transformers.masking_utils import sdpa_mask

    cfg, model = tiny_parts

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
    requests = [replace(_request(text, n), temperature=0.0) for text, n in (("hi", 6), ("how are you today?", 9))]
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
