"""Frozen-LLM generation for a batch of replies: prompt + clip features in → groups of R tokens out.

In: :class:`GenerationRequest` per reply — template turns, per clip its S rows ``(L_S, D)`` and E
``(1, D)`` in slot order, sampling settings. Out: :meth:`LLMSession.step` returns, per stream, a
:class:`TextGroup` (up to R tokens, their text pieces and the last-layer hidden state that predicted
each, ``(k, D)``) or None, until every stream has finished. One left-padded prefill, then one cached
step per token for the whole batch. Streams may join between steps (:meth:`LLMSession.add`: their
own prefill, their cache rows left-padded beside the running ones) and finished ones leave
(:meth:`LLMSession.compact`), so a serving loop batches continuously. Each stream samples with its own
seeded generator, so a reply does not depend on what it was batched with (greedy decoding is batch
invariant up to float error). A request that cannot run (prompt + budget beyond the LLM's positions)
fails alone: its only group carries ``error`` and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from freezeempath.chat_template import Turn, render
from freezeempath.inference.dialogue import FinishReason
from freezeempath.inference.kv_rows import join_rows, keep_rows
from freezeempath.inference.wire import reduce_fields
from freezeempath.model.fusion import merge_placeholders
from freezeempath.model.llm import FrozenLLM


@dataclass(frozen=True)
class GenerationRequest:
    """One reply to generate.

    Attributes:
        turns: template turns (a leading ``system`` turn replaces the default system prompt).
        speech: per clip, in slot order, S rows ``(L_S, D_llm)``.
        emotion: per clip, E ``(1, D_llm)``.
        max_new_tokens: reply token budget. temperature: 0 = greedy. seed: the stream's sampler seed.
        speech_output: whether the speech decoder turns this reply into units.
        max_prompt_tokens: at most this many prompt positions (tokens and speech rows); 0: the LLM's window.
    """

    turns: tuple[Turn, ...]
    speech: tuple[torch.Tensor, ...] = ()
    emotion: tuple[torch.Tensor, ...] = ()
    max_new_tokens: int = 64
    temperature: float = 0.7
    seed: int = 0
    speech_output: bool = True
    max_prompt_tokens: int = 0

    __reduce__ = reduce_fields  # its tensors cross processes as arrays


@dataclass(frozen=True)
class TextGroup:
    """Up to R new tokens of one stream, the hidden state that predicted each ``(k, D)``, and the end."""

    token_ids: tuple[int, ...]
    pieces: tuple[str, ...]
    hidden: torch.Tensor
    finish_reason: FinishReason | None
    prompt_tokens: int
    error: str | None = None
    server_fault: bool = False  # the error is the server's (a failed stage), not the request's

    __reduce__ = reduce_fields


@dataclass
class _Stream:
    request: GenerationRequest
    generator: torch.Generator
    prompt_tokens: int
    error: str | None = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    group: list[tuple[int, str, torch.Tensor]] = field(default_factory=list)
    done: bool = False


class LLMSession:
    """Batched prefill + cached steps; see the module docstring.

    Args:
        llm: the frozen LLM with its tokenizer. stop_ids: tokens that end a reply (not emitted).
        requests: one per stream. read: R, tokens per group. top_p: nucleus sampling mass.
        output_device: where hidden states are returned (e.g. ``cpu`` to cross a process boundary).

    Raises:
        ValueError: no requests, or a request's slots and clip features do not match.
    """

    @torch.no_grad()
    def __init__(
        self,
        llm: FrozenLLM,
        stop_ids: list[int],
        requests: list[GenerationRequest],
        read: int,
        top_p: float = 1.0,
        output_device: str | torch.device | None = None,
    ) -> None:
        if not requests:
            raise ValueError("no generation requests given")
        self.llm, self.stop_ids, self.read, self.top_p = llm, set(stop_ids), read, top_p
        self.device = llm.model.get_input_embeddings().weight.device
        self.output_device = output_device or self.device
        self.streams: list[_Stream] = []
        self.rows: list[int] = []  # batch row → stream
        self._errors: list[int] = []  # streams whose error group is still to be returned
        self._stale = False  # True once the current logits have been sampled
        self.add(requests)

    @torch.no_grad()
    def add(self, requests: list[GenerationRequest]) -> None:
        """Streams join as the last ones; their first groups come from the next :meth:`step`.

        Running rows first catch up to fresh logits, so every row samples at the next step. If the new
        streams cannot join (their prefill raises), none of them is added and the running ones go on.
        """
        ids = [torch.tensor(render(self.llm.tokenizer, list(r.turns)).input_ids, device=self.device) for r in requests]
        new = [self._stream(r, x) for r, x in zip(requests, ids, strict=True)]
        valid = [i for i, s in enumerate(new) if s.error is None]
        if valid:
            if self._stale and self.rows:
                self._forward()
                self._stale = False  # fresh logits, whether or not the new streams then join
            mask, cache, logits, hidden = self._prefill([requests[i] for i in valid], [ids[i] for i in valid])
            if self.rows:
                cache, mask = join_rows(self.cache, self.mask, cache, mask)
                logits, hidden = torch.cat([self.logits, logits]), torch.cat([self.hidden, hidden])
        first = len(self.streams)
        self.streams += new
        self._errors += [first + i for i, s in enumerate(new) if s.error is not None]
        if valid:
            self.mask, self.cache, self.logits, self.hidden = mask, cache, logits, hidden
            self.rows += [first + i for i in valid]
            self._stale = False

    def compact(self, drop: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Remove finished streams (their last group returned) and ``drop``; returns the kept ones' old indices.

        Stream indices shift down past removed ones, as in the returned list.
        """
        pending = set(self._errors) - set(drop)
        keep = [b for b, s in enumerate(self.streams) if b not in drop and (not s.done or b in pending)]
        if len(keep) == len(self.streams):
            return keep
        index = {b: i for i, b in enumerate(keep)}
        live = [r for r, b in enumerate(self.rows) if b in index]
        if len(live) < len(self.rows):
            if live:
                self.mask = keep_rows(self.cache, self.mask, live)
                self.logits, self.hidden = self.logits[live], self.hidden[live]
            else:
                self.cache, self._stale = None, False
        self.rows = [index[self.rows[r]] for r in live]
        self._errors = [index[b] for b in self._errors if b in index]
        self.streams = [self.streams[b] for b in keep]
        return keep

    def _stream(self, request: GenerationRequest, ids: torch.Tensor) -> _Stream:
        n = ids.numel() + sum(s.shape[0] - 1 for s in request.speech)  # each <speech> id becomes L_S rows
        limit = int(self.llm.model.config.max_position_embeddings)
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        stream = _Stream(request, generator, n)
        if request.max_prompt_tokens and n > request.max_prompt_tokens:
            stream.error = f"prompt is {n} positions (tokens and speech rows); the limit is {request.max_prompt_tokens}"
            stream.done = True
        elif n + request.max_new_tokens > limit:
            stream.error = f"prompt ({n} positions) + max tokens ({request.max_new_tokens}) exceed the LLM's {limit}"
            stream.done = True
        return stream

    def _prefill(
        self, requests: list[GenerationRequest], ids: list[torch.Tensor]
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Left-padded prefill → mask ``(B, T)``, cache, next logits ``(B, V)``, hidden ``(B, D)``."""
        fused = merge_placeholders(ids, self.llm.embed, *self._features(requests), padding_side="left")
        out = self.llm(fused.embeds, fused.attention_mask, use_cache=True, last_logits_only=True)
        return fused.attention_mask, out.cache, out.logits[:, -1], out.hidden[:, -1]

    def _features(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clip features of all requests in slot order: S ``(N, T, D)`` padded, lengths ``(N,)``, E ``(N, 1, D)``."""
        dtype, d = self.llm.model.get_input_embeddings().weight.dtype, self.llm.hidden_size
        rows = [s for r in requests for s in r.speech]
        emotion = [e.reshape(1, -1) for r in requests for e in r.emotion]
        if not rows:
            empty = torch.zeros(0, 1, d, dtype=dtype, device=self.device)
            return empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, d, dtype=dtype, device=self.device)
        lens = torch.tensor([s.shape[0] for s in rows])
        speech = torch.zeros(len(rows), int(lens.max()), d, dtype=dtype, device=self.device)
        for i, s in enumerate(rows):
            speech[i, : s.shape[0]] = s.to(speech)
        e = torch.stack(emotion) if emotion else torch.zeros(0, 1, d)  # no emotion slot (a control prompt)
        return speech, lens, e.to(device=self.device, dtype=dtype)

    @property
    def done(self) -> bool:
        """Every stream has finished."""
        return all(s.done for s in self.streams)

    @torch.no_grad()
    def step(self) -> list[TextGroup | None] | None:
        """Decode until some stream completes a group; None once every stream has finished."""
        if self._errors:
            groups: list[TextGroup | None] = [None] * len(self.streams)
            for b in self._errors:
                s = self.streams[b]
                empty = torch.zeros(0, self.llm.hidden_size, device=self.output_device)
                groups[b] = TextGroup((), (), empty, None, s.prompt_tokens, error=s.error)
            self._errors = []
            return groups
        while not self.done:
            if self._stale:
                self._forward()
            groups = self._sample_all()
            self._stale = True
            if any(g is not None for g in groups):
                return groups
        return None

    def _forward(self) -> None:
        pad = self.llm.tokenizer.pad_token_id or 0
        rows = [self.streams[b] for b in self.rows]
        last = torch.tensor([pad if s.done else s.tokens[-1] for s in rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(rows), 1)], dim=1)
        embeds = self.llm.embed(last)[:, None]  # (B, 1, D)
        out = self.llm(embeds, self.mask, cache=self.cache, use_cache=True, last_logits_only=True)
        self.cache, self.logits, self.hidden = out.cache, out.logits[:, -1], out.hidden[:, -1]

    def _sample_all(self) -> list[TextGroup | None]:
        groups: list[TextGroup | None] = [None] * len(self.streams)
        for row, b in enumerate(self.rows):
            s = self.streams[b]
            if s.done:
                continue
            token = self._sample(self.logits[row], s)
            finish = None
            if token in self.stop_ids:
                finish = FinishReason.STOP
            else:
                s.tokens.append(token)
                s.group.append((token, self._piece(s), self.hidden[row]))
                if len(s.tokens) >= s.request.max_new_tokens:
                    finish = FinishReason.LENGTH
            if finish or len(s.group) == self.read:
                groups[b] = self._flush(s, finish)
        return groups

    def _flush(self, s: _Stream, finish: FinishReason | None) -> TextGroup:
        s.done = finish is not None
        hidden = torch.stack([h for _, _, h in s.group]) if s.group else self.hidden.new_zeros(0, self.llm.hidden_size)
        group = TextGroup(
            token_ids=tuple(t for t, _, _ in s.group),
            pieces=tuple(p for _, p, _ in s.group),
            hidden=hidden.to(self.output_device),
            finish_reason=finish,
            prompt_tokens=s.prompt_tokens,
        )
        s.group = []
        return group

    def _piece(self, s: _Stream) -> str:
        """Text the newest token completes ("" while a multi-byte character is incomplete)."""
        text = self.llm.tokenizer.decode(s.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, s.text = text[len(s.text) :], text
        return piece

    def _sample(self, logits: torch.Tensor, s: _Stream) -> int:
        if s.request.temperature <= 0:
            return int(logits.argmax())
        scaled = logits.float()
        # subtract the top logit first: with a vanishing temperature the others go to -inf, never inf - inf
        probs = torch.softmax((scaled - scaled.max()) / s.request.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = top_p_filter(probs, self.top_p)
        return int(torch.multinomial(probs, 1, generator=s.generator))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p``; renormalise ``(..., V)``."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
    sorted_probs[drop] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs) / sorted_probs.sum(-1, keepdim=True)
