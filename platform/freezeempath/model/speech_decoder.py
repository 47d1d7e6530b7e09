"""Streaming speech decoder (stage 3): LLM reply states → speech units, read R / write W.

In: the frozen LLM's last-layer hidden state at the position that predicted each reply token
``(B, n, D_llm)``, the reply tokens ``(B, n)``, and for training the target units ``(B, m)``.
Out: unit logits over the decoder vocabulary (training, :meth:`SpeechDecoder.forward`) or sampled
units chunk by chunk with a per-stream KV cache (:class:`UnitStream`).

Decoder vocabulary: the LLM's text ids ``[0, V_text)``, then ``<sep>``, ``n_units`` unit ids, EOS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from freezeempath.batch import DecoderOutput
from freezeempath.chat_template import IGNORE_INDEX
from freezeempath.model.interleave import Side, interleave_layout


class SpeechDecoder(nn.Module):
    """Projection + gate fusion + a Qwen2-class causal LM (held, not subclassed)."""

    def __init__(self, lm: nn.Module, projection: nn.Module, gate: nn.Linear | None, text_vocab: int, n_units: int):
        super().__init__()
        self.lm = lm
        self.projection = projection
        self.gate = gate
        self.text_vocab = text_vocab
        self.n_units = n_units

    @property
    def sep_id(self) -> int:
        """Decoder id of ``<sep>`` (end of the text side)."""
        return self.text_vocab

    @property
    def eos_id(self) -> int:
        """Decoder id of the end-of-speech token."""
        return self.text_vocab + 1 + self.n_units

    def unit_ids(self, units: torch.Tensor) -> torch.Tensor:
        """Codec units ``[0, n_units)`` → decoder ids."""
        return units + self.text_vocab + 1

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder ids → decoder embeddings ``(..., d)``."""
        return self.lm.get_input_embeddings()(ids)

    def fuse(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``hidden (..., D_llm)``, reply ``tokens (...)`` → text-side states ``(..., d)``.

        Gate fusion: ``g = σ(W[rep; emb])``, ``x = g·rep + (1 − g)·emb``; without the gate ``rep + emb``.
        """
        rep = self.projection(hidden.to(self.projection_dtype))
        emb = self.embed(tokens)
        if self.gate is None:
            return rep + emb
        g = torch.sigmoid(self.gate(torch.cat([rep, emb], dim=-1)))
        return g * rep + (1 - g) * emb

    @property
    def projection_dtype(self) -> torch.dtype:
        """Parameter dtype of the projection (LLM states are cast to it)."""
        return next(self.projection.parameters()).dtype

    def forward(
        self,
        hidden: torch.Tensor,
        tokens: torch.Tensor,
        text_lens: torch.Tensor,
        units: torch.Tensor,
        unit_lens: torch.Tensor,
        read: int,
        write: int,
    ) -> DecoderOutput:
        """Teacher-forced training pass over interleaved sequences.

        Args:
            hidden: ``(B, n, D_llm)`` LLM states that predicted each reply token.
            tokens: ``(B, n)`` reply token ids; ``text_lens (B,)`` valid counts.
            units: ``(B, m)`` codec units; ``unit_lens (B,)`` valid counts.
            read: R text states per chunk. write: W units per chunk.
        """
        batch, n_max, m_max = hidden.shape[0], tokens.shape[1], units.shape[1]
        text_valid = torch.arange(n_max, device=hidden.device) < text_lens[:, None]  # (B, n)
        unit_valid = torch.arange(m_max + 1, device=hidden.device) < unit_lens[:, None]  # (B, m + 1)
        unit_ids = self.unit_ids(torch.cat([units, units.new_zeros(batch, 1)], dim=1))
        unit_ids = unit_ids.masked_fill(~unit_valid, self.eos_id)  # (B, m + 1): units, then EOS
        text = self.fuse(hidden, tokens.masked_fill(~text_valid, 0))  # (B, n, d), all rows in one call
        sep = self.embed(unit_ids.new_full((batch, 1), self.sep_id))
        zero = text.new_zeros(batch, 1, text.shape[-1])
        # Per row, a pool [text states | <sep> | units + EOS | zero]; each sequence gathers from it.
        pool = torch.cat([text, sep, self.embed(unit_ids), zero], dim=1)
        ignore = unit_ids.new_full((batch, n_max + 1), IGNORE_INDEX)
        label_pool = torch.cat([ignore, unit_ids, unit_ids.new_full((batch, 1), IGNORE_INDEX)], dim=1)
        order, lens = _interleave_order(text_lens.tolist(), unit_lens.tolist(), n_max, m_max, read, write)
        order, lens = order.to(hidden.device), lens.to(hidden.device)
        rows = torch.arange(batch, device=hidden.device)[:, None]
        embeds, labels = pool[rows, order], label_pool[rows, order]  # (B, L, d), (B, L)
        mask = (torch.arange(order.shape[1], device=hidden.device)[None] < lens[:, None]).long()
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask, return_dict=True).logits  # (B, L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        return DecoderOutput(logits=logits, labels=labels, loss=loss, lens=lens)


def _interleave_order(
    text_lens: list[int], unit_lens: list[int], n_max: int, m_max: int, read: int, write: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the per-row pool of :meth:`SpeechDecoder.forward`, in read/write order.

    Pool positions: text ``[0, n_max)``, ``<sep>`` at ``n_max``, units + EOS from ``n_max + 1``, and a zero
    row last, which padding points at. Returns ``order (B, L)`` and sequence lengths ``(B,)``.
    """
    zero_row = n_max + 1 + m_max + 1
    orders = []
    for n, m in zip(text_lens, unit_lens, strict=True):
        layout = interleave_layout(n + 1, m + 1, read, write)
        orders.append([(i if i < n else n_max) if side is Side.TEXT else n_max + 1 + i for side, i in layout])
    length = max(len(o) for o in orders)
    order = torch.tensor([o + [zero_row] * (length - len(o)) for o in orders])
    return order, torch.tensor([len(o) for o in orders])


class UnitStreamState(enum.Enum):
    """Where a :class:`UnitStream` is: taking text states, or done after EOS / the unit budget."""

    OPEN = "open"
    TEXT_DONE = "text_done"
    FINISHED = "finished"


@dataclass(frozen=True)
class WriteResult:
    """Units written in one write phase and the logits each was drawn from ``(k, V)``."""

    units: list[int]
    logits: torch.Tensor
    finished: bool


class UnitStream:
    """One stream's incremental decoder with its own KV cache (batch size 1 per stream).

    ``read`` appends fused text states; ``write`` samples up to W units, feeding each back;
    ``end_text`` appends ``<sep>``, after which ``write`` runs to EOS or the unit budget.
    Teacher forcing (``forced``) reproduces :meth:`SpeechDecoder.forward` exactly.
    """

    def __init__(
        self,
        decoder: SpeechDecoder,
        max_units: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        from transformers import DynamicCache

        self.decoder = decoder
        self.max_units = max_units
        self.temperature = temperature
        self.generator = generator
        self.cache = DynamicCache()
        self.state = UnitStreamState.OPEN
        self.written = 0
        self._next_logits: torch.Tensor | None = None

    @torch.no_grad()
    def _feed(self, embeds: torch.Tensor) -> None:
        out = self.decoder.lm(inputs_embeds=embeds[None], cache=self.cache, use_cache=True, return_dict=True)
        self.cache = out.cache
        self._next_logits = out.logits[0, -1]

    @torch.no_grad()
    def read(self, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
        """Append text states: ``hidden (k, D_llm)``, ``tokens (k,)``."""
        if self.state is not UnitStreamState.OPEN:
            raise RuntimeError(f"cannot read text in state {self.state.value}")
        if tokens.numel():
            self._feed(self.decoder.fuse(hidden, tokens))

    @torch.no_grad()
    def end_text(self) -> None:
        """The LLM has finished: append ``<sep>``; later writes run until EOS."""
        if self.state is UnitStreamState.OPEN:
            self._feed(self.decoder.embed(torch.tensor([self.decoder.sep_id], device=self.cache_device)))
            self.state = UnitStreamState.TEXT_DONE

    @property
    def cache_device(self) -> torch.device:
        """Device of the decoder's parameters."""
        return next(self.decoder.parameters()).device

    @torch.no_grad()
    def write(self, limit: int, forced: list[int] | None = None) -> WriteResult:
        """Sample (or take ``forced``) up to ``limit`` units, feeding each back into the cache.

        Before ``end_text`` an EOS ends the phase early without being fed; after it, EOS finishes.
        """
        units, logits = [], []
        while len(units) < limit and self.state is not UnitStreamState.FINISHED and self._next_logits is not None:
            step_logits = self._next_logits
            unit = forced[len(units)] if forced is not None else self._sample(step_logits)
            logits.append(step_logits)
            if unit == self.decoder.n_units or self.written >= self.max_units:  # EOS or out of budget
                if self.state is UnitStreamState.TEXT_DONE or self.written >= self.max_units:
                    self.state = UnitStreamState.FINISHED
                break
            units.append(unit)
            self.written += 1
            self._feed(self.decoder.embed(self.decoder.unit_ids(torch.tensor([unit], device=self.cache_device))))
        stacked = torch.stack(logits) if logits else torch.empty(0)
        return WriteResult(units=units, logits=stacked, finished=self.state is UnitStreamState.FINISHED)

    def _sample(self, logits: torch.Tensor) -> int:
        first = self.decoder.text_vocab + 1
        allowed = logits[first:].float()  # units then EOS
        if self.temperature <= 0:
            return int(allowed.argmax())
        probs = torch.softmax(allowed / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
