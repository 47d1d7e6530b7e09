"""Content states for learned units: the frozen speech encoder's last layer at the codec's frame rate.

In: mono 16 kHz clips ``(N_i,)`` and their codec frame counts ``T_i``. Out: states ``(T_i, d_model)``.

Whisper's encoder turns 100 Hz log-mel into 50 Hz states (a stride-2 convolution), one per 320 samples,
state ``t`` centred near sample ``320 t`` like codec frame ``t`` at 50 Hz, so the two line up one to one.
Trained for speech recognition, these states keep what is said and drop much of who says it: units
quantised from them carry over to unseen speakers better than units from log-mel (``kind: encoder_vq``),
as the paper's speech tokens do (they come from an ASR encoder too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from freezeempath.config import EncoderConfig

STATE_HOP = 320  # samples per encoder state: Whisper's 160-sample mel hop × its stride-2 convolution
CLIPS_PER_PASS = 8  # clips encoded together


class SpeechContent:
    """The model's frozen speech encoder as a source of unit inputs; weights load on first use.

    ``identity`` (the encoder config as a dict) goes into ``codec.json``: units are only reproducible
    with the same encoder. A ``random`` encoder (tests) is built from a fixed seed, so it is the same
    encoder every time.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        self.cfg = cfg
        self.width = cfg.d_model
        self._parts: tuple[Any, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the encoder (all of its config)."""
        return dataclasses.asdict(self.cfg)

    def _load(self) -> tuple[Any, Any]:
        if self._parts is None:
            from freezeempath.audio import WhisperLogMel
            from freezeempath.model.build import build_encoder

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                encoder = build_encoder(self.cfg, load_weights=True)
            self._parts = (encoder, WhisperLogMel(self.cfg.n_mels, self.cfg.window_frames))
        return self._parts

    @torch.no_grad()
    def __call__(self, waves: Sequence[torch.Tensor], frames: Sequence[int]) -> list[torch.Tensor]:
        """Clips ``(N_i,)`` → states ``(frames[i], d_model)``; longer clips are encoded window by window."""
        encoder, frontend = self._load()
        window = frontend.window_samples
        pieces = [(i, w[s : s + window]) for i, w in enumerate(waves) for s in range(0, max(w.numel(), 1), window)]
        states: list[list[torch.Tensor]] = [[] for _ in waves]
        for start in range(0, len(pieces), CLIPS_PER_PASS):
            chunk = pieces[start : start + CLIPS_PER_PASS]
            feats = frontend([w.cpu() for _, w in chunk])
            out = encoder(feats.mel, feats.lens)  # last (B, T, d_model)
            for b, ((i, piece), n) in enumerate(zip(chunk, out.lens.tolist(), strict=True)):
                states[i].append(own_states(out.last[b], n, -(-piece.numel() // STATE_HOP)))
        return [fit_length(torch.cat(s), t) for s, t in zip(states, frames, strict=True)]


def own_states(padded: torch.Tensor, n: int, frames: int) -> torch.Tensor:
    """A batch row ``(T, D)`` with ``n`` valid states → ``(frames, D)`` (:func:`fit_length`) in storage of its
    own: a view would keep the whole padded batch alive, every pass's, until all clips are encoded."""
    return fit_length(padded[:n], frames).clone()


def fit_length(states: torch.Tensor, frames: int) -> torch.Tensor:
    """States ``(T', D)`` → ``(frames, D)``: cut, or extended by repeating the last state (one frame at most
    in practice: the encoder's ``(L_mel + 1) // 2`` and the codec's ``ceil(N / 320)`` differ by rounding)."""
    if states.shape[0] >= frames:
        return states[:frames]
    return torch.cat([states, states[-1:].expand(frames - states.shape[0], -1)])
