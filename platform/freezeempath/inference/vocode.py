"""Vocoding unit chunks of several streams at once: units → audio at the output rate.

In: per stream a :class:`VocodeRequest` — its :class:`VocoderState` (None for a new stream), the next
units ``(W,)`` and whether the stream ends. Out: a :class:`VocodeResult` per request — float32 audio at
the output rate and the updated state. The state is self-contained (unit and mel context, cross-fade
tail, resampler buffer) and kept on the CPU, so chunks of one stream may go to any vocoder replica and
the state may cross to processes without a GPU.

Chunks with the same shape are synthesised together: one units-to-mel pass and one batched
Griffin-Lim (the codec's own, :func:`~freezeempath.codec.griffin_lim.synthesize_chunk`), which equals
:meth:`~freezeempath.codec.mel_decoder.UnitStreamDecoder.push` per stream.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from freezeempath.codec.griffin_lim import LOG_FLOOR, cross_fade
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.inference.audio_io import StreamingResampler
from freezeempath.inference.wire import reduce_fields


@dataclass(frozen=True)
class VocoderState:
    """One stream's vocoder context between chunks (see ``UnitStreamDecoder`` for the first three)."""

    unit_context: torch.Tensor  # (≤ receptive field,) int64, last units pushed
    mel_context: torch.Tensor  # (context_units, n_mels) last predicted log-mel frames
    tail: torch.Tensor  # (hop // 2,) samples cross-faded into the next chunk
    resampler: StreamingResampler
    units_pushed: int = 0

    __reduce__ = reduce_fields  # it crosses processes every round: tensors as arrays


@dataclass(frozen=True)
class VocodeRequest:
    """The next units of one stream; ``final`` flushes the resampler after them."""

    state: VocoderState | None
    units: tuple[int, ...]
    final: bool = False


@dataclass(frozen=True)
class VocodeResult:
    """Audio ``(N,)`` float32 at ``sample_rate`` for the request's units, and the new state."""

    audio: torch.Tensor
    sample_rate: int
    state: VocoderState

    __reduce__ = reduce_fields


def new_state(codec: MelKMeansCodec, output_rate: int | None = None) -> VocoderState:
    """A fresh stream: silence before the first unit, no units yet."""
    return VocoderState(
        unit_context=torch.zeros(0, dtype=torch.long),
        mel_context=torch.full((codec.context_units, codec.n_mels), LOG_FLOOR),
        tail=torch.zeros(codec.fade_length),
        resampler=StreamingResampler(codec.sample_rate, output_rate or codec.sample_rate),
    )


@torch.no_grad()
def vocode_batch(
    codec: MelKMeansCodec, requests: list[VocodeRequest], output_rate: int | None = None
) -> list[VocodeResult]:
    """Vocode every request; requests whose context and chunk lengths agree share one synthesis."""
    rate = output_rate or codec.sample_rate
    states = [r.state if r.state is not None else new_state(codec, rate) for r in requests]
    units = [codec.check_units(torch.tensor(r.units, dtype=torch.long)) for r in requests]
    audio: list[torch.Tensor] = [torch.zeros(0)] * len(requests)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (state, chunk) in enumerate(zip(states, units, strict=True)):
        if chunk.numel():
            groups[(state.unit_context.numel(), chunk.numel())].append(i)
    for members in groups.values():
        pushed = _push_group(codec, [states[i] for i in members], torch.stack([units[i] for i in members]))
        for i, (wave, state) in zip(members, pushed, strict=True):
            audio[i], states[i] = wave, state
    results = []
    for request, wave, state in zip(requests, audio, states, strict=True):
        out = state.resampler.push(wave.float())
        if request.final:
            out = torch.cat([out, state.resampler.flush()])
        results.append(VocodeResult(audio=out, sample_rate=rate, state=state))
    return results


def _push_group(
    codec: MelKMeansCodec, states: list[VocoderState], chunks: torch.Tensor
) -> list[tuple[torch.Tensor, VocoderState]]:
    """``chunks (B, W)`` with equal context lengths → per stream audio ``(W · hop,)`` and new state."""
    device = codec.codebook.device
    context = torch.stack([s.unit_context for s in states]).to(device)  # (B, R')
    history = torch.cat([context, chunks], dim=1)  # (B, R' + W)
    mel = codec.predict_log_mel(history)[:, context.shape[1] :]  # (B, W, n_mels)
    frames = torch.cat([torch.stack([s.mel_context for s in states]).to(device), mel], dim=1)  # (B, C + W, n_mels)
    waves, tails = synthesize_batch(codec, frames)  # (B, W · hop), (B, fade)
    ramp = codec.fade_ramp.cpu()  # (fade,)
    waves, tails, history, frames = waves.cpu(), tails.cpu(), history.cpu(), frames.cpu()
    keep, out = codec.decoder.receptive_field, []
    for b, state in enumerate(states):
        wave = cross_fade(waves[b].clone(), state.tail, ramp)
        new = VocoderState(
            unit_context=history[b, max(0, history.shape[1] - keep) :].clone(),
            mel_context=frames[b, frames.shape[1] - codec.context_units :].clone(),
            tail=tails[b].clone(),
            resampler=state.resampler,
            units_pushed=state.units_pushed + chunks.shape[1],
        )
        out.append((wave, new))
    return out


def synthesize_batch(codec: MelKMeansCodec, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``MelKMeansCodec.synthesize``: ``frames (B, C + W, n_mels)`` → ``(B, W · hop)``, ``(B, fade)``.

    The codec's Griffin-Lim takes leading batch dimensions, so this is one call for the whole batch.
    """
    return codec.synthesize(frames)
