"""Speech encoder (frozen): a Hugging Face Whisper encoder returning the last layer and every block.

In: log-mel ``(B, n_mels, window_frames)`` and valid mel frame counts ``(B,)``.
Out: :class:`EncoderOutput` trimmed to the longest valid clip in the batch: the last layer after the
final LayerNorm ``(B, T, D)`` (adapter input), every block output before that LayerNorm
``(B, N, T, D)`` (emotion extractor input) and encoder lengths ``L_enc = (L_mel + 1) // 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderOutput:
    """Encoder states with lengths; frames past ``lens[b]`` are padding."""

    last: torch.Tensor  # (B, T, D) after the final LayerNorm
    layers: torch.Tensor  # (B, N, T, D) block outputs before the final LayerNorm
    lens: torch.Tensor  # (B,)


def encoder_lengths(mel_lens: torch.Tensor) -> torch.Tensor:
    """Whisper's stride-2 convolution: ``L_enc = (L_mel + 1) // 2``."""
    return torch.div(mel_lens + 1, 2, rounding_mode="floor")


class SpeechEncoder(nn.Module):
    """Wraps ``transformers`` ``WhisperEncoder`` (held, not subclassed) and captures each block's output."""

    def __init__(self, whisper_encoder: nn.Module) -> None:
        super().__init__()
        self.whisper = whisper_encoder

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.whisper.layers)

    @property
    def d_model(self) -> int:
        """Width of the encoder states."""
        return int(self.whisper.config.d_model)

    def forward(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> EncoderOutput:
        """``mel (B, n_mels, F)``, ``mel_lens (B,)`` → :class:`EncoderOutput` with ``T = max(L_enc)``."""
        blocks: list[torch.Tensor] = []
        hooks = [
            layer.register_forward_hook(lambda _m, _i, out: blocks.append(out[0] if isinstance(out, tuple) else out))
            for layer in self.whisper.layers
        ]
        try:
            last = self.whisper(input_features=mel).last_hidden_state  # (B, F/2, D)
        finally:
            for hook in hooks:
                hook.remove()
        lens = encoder_lengths(mel_lens).clamp(max=last.shape[1])
        t = int(lens.max())
        layers = torch.stack([b[:, :t] for b in blocks], dim=1)  # (B, N, T, D)
        return EncoderOutput(last=last[:, :t], layers=layers, lens=lens)
