"""Speech out: does the spoken reply say its text, how soon does it start, and what does its voice carry?

In: columnar shard rows (spoken user turns) and a :class:`~freezeempath.inference.generate.Responder`.
Out, per row: the reply text, its audio transcribed by Whisper (``heard``), first audio ÷ whole reply time,
the emotion the model's own extractor detects in the reply audio, and the reply's median F0 (Hz, voiced
frames) and RMS energy (dB). Each dialogue runs alone, so first audio is not stretched by a batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torchaudio

from freezeempath.evaluation.asr import WhisperASR
from freezeempath.evaluation.probes import KEPT_COLUMNS, RATE, decode_clips
from freezeempath.inference.dialogue import AudioInput, Message
from freezeempath.inference.generate import AudioChunk, Responder, TextDelta
from freezeempath.inference.understanding import understand_clips

ANSWER_COLUMNS = ("reply", "heard", "first_audio_ratio", "voice_emotion", "f0_hz", "energy_db")


def pitch_and_energy(wave: torch.Tensor, rate: int = RATE) -> tuple[float | None, float]:
    """Median F0 over voiced frames (None when no frame is voiced) and RMS energy in dB of ``(N,)``."""
    energy = float(20 * torch.log10(wave.pow(2).mean().sqrt().clamp_min(1e-8)))
    if wave.numel() < rate // 10:
        return None, energy
    f0 = torchaudio.functional.detect_pitch_frequency(wave[None], rate, freq_low=60)[0]
    voiced = f0[(f0 > 60) & (f0 < 500)]
    return (float(voiced.median()) if voiced.numel() else None), energy


class SpeechOutProber:
    """Speaks a reply to each row's clip and measures it (one per Ray Data actor)."""

    def __init__(self, responder: Responder, asr: WhisperASR | None, max_new_tokens: int) -> None:
        self.responder, self.asr, self.max_new_tokens = responder, asr, max_new_tokens

    def run(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """One output row per input row (answers None where the audio was skipped, with ``error``)."""
        clips, errors = decode_clips(batch, self.responder.max_input_seconds)
        out: dict[str, list[Any]] = {k: list(batch[k]) for k in KEPT_COLUMNS if k in batch}
        out |= {k: [None] * len(clips) for k in ANSWER_COLUMNS} | {"error": errors}
        for i, clip in enumerate(clips):
            if clip is not None:
                for k, v in self._speak(clip).items():
                    out[k][i] = v
        return out

    def _speak(self, clip: torch.Tensor) -> dict[str, Any]:
        start, first = time.perf_counter(), None
        text, pieces, rate = "", [], RATE
        for event in self.responder.stream([[Message("user", audio=AudioInput(clip, RATE))]], self.max_new_tokens):
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, AudioChunk):
                first = first if first is not None else time.perf_counter() - start
                pieces.append(event.samples.float().cpu())
                rate = event.sample_rate
        total = time.perf_counter() - start
        if not pieces:
            return {"reply": text.strip(), "first_audio_ratio": None}
        audio = torchaudio.functional.resample(torch.cat(pieces), rate, RATE) if rate != RATE else torch.cat(pieces)
        f0, energy = pitch_and_energy(audio)
        voice = understand_clips(self.responder.understander, [audio])[0].emotion_result.label.value
        heard = self.asr.transcribe([audio[: 30 * RATE]])[0] if self.asr is not None else None
        ratio = first / total if first is not None and total > 0 else None
        return {
            "reply": text.strip(),
            "heard": heard,
            "first_audio_ratio": ratio,
            "voice_emotion": voice,
            "f0_hz": f0,
            "energy_db": energy,
        }
