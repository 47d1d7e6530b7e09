"""Building a codec from its config: the kind's class, fitted state from ``path``, and the args check.

In: a :class:`~freezeempath.config.CodecConfig` (and, for ``encoder_vq``, the speech encoder's config).
Out: a ``MelKMeansCodec`` (``mel_kmeans``) or ``MelVQCodec`` (``mel_vq``, ``encoder_vq``), fitted when
``path`` is set; :func:`build_codec_part` gives only its units-to-audio side, for vocoding.
"""

from __future__ import annotations

import dataclasses

from freezeempath.codec.content_states import SpeechContent
from freezeempath.codec.kmeans_codec import MelKMeansCodec
from freezeempath.codec.store import CODEC_ARGS
from freezeempath.codec.vq import MelVQCodec
from freezeempath.config import CodecConfig, EncoderConfig, ModelConfig


def build_codec(cfg: CodecConfig, encoder: EncoderConfig | None = None) -> MelKMeansCodec | MelVQCodec:
    """The codec of ``cfg.kind`` (``MelKMeansCodec``, or ``MelVQCodec`` for ``mel_vq`` and ``encoder_vq``);
    fitted state from ``cfg.path`` when set (its args must agree with the config).

    ``encoder_vq`` reads its units from the frozen speech encoder, so it needs ``encoder`` (the model's
    ``model.encoder``; its weights load on the first ``encode``, never for decoding).
    """
    if cfg.kind == "encoder_vq" and encoder is None:
        raise ValueError("codec kind encoder_vq needs the speech encoder's config (model.encoder)")
    args = {k: v for k, v in dataclasses.asdict(cfg).items() if k in CODEC_ARGS}
    codec: MelKMeansCodec | MelVQCodec
    if cfg.kind == "mel_kmeans":
        codec = MelKMeansCodec.load(cfg.path) if cfg.path else MelKMeansCodec(**args)
    else:
        content = SpeechContent(encoder) if cfg.kind == "encoder_vq" and encoder else None
        codec = MelVQCodec.load(cfg.path, content) if cfg.path else MelVQCodec(content, **args)
    wrong = [f"{k}={v} (saved {codec.args[k]})" for k, v in args.items() if codec.args[k] != v]
    if wrong:
        raise ValueError(f"codec at {cfg.path} does not match codec config: {', '.join(wrong)}")
    return codec


def build_codec_part(cfg: ModelConfig, device: str = "cpu") -> MelKMeansCodec:
    """The codec's units-to-audio side (fitted state from ``cfg.codec.path`` when set)."""
    return build_codec(cfg.codec, cfg.encoder).synthesizer.to(device).eval()
