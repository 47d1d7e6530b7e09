"""Speech decoding for a batch of replies in lockstep rounds: text groups in → (text, units) chunks out.

In: per round, the LLM's :class:`~freezeempath.inference.llm_session.TextGroup` per stream (or None).
Out: per round and stream a :class:`SpeechChunk` — the group's text and up to W units — or None.
:class:`BatchedUnitStreams` runs several decoders in one batch: a shared KV cache whose rows hold each
stream's positions (a row that feeds fewer tokens than the block is padded and masked), per-row
position ids, per-row seeded samplers. Each row follows :class:`~freezeempath.model.speech_decoder.UnitStream`
exactly: read R states, write W units, ``<sep>`` after the last text, then write until EOS or budget.
Streams may join between rounds (:meth:`SpeechSession.add`: rows that attend nothing yet) and finished
ones leave (:meth:`SpeechSession.compact`), so a serving loop batches continuously.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from freezeempath.inference.dialogue import FinishReason
from freezeempath.inference.kv_rows import add_empty_rows, keep_rows
from freezeempath.inference.llm_session import TextGroup
from freezeempath.inference.wire import reduce_fields
from freezeempath.model.speech_decoder import SpeechDecoder, UnitStreamState


@dataclass(frozen=True)
class SpeechChunk:
    """One stream's output of one round; ``finish_reason`` is set on its last chunk.

    ``audio``: the units vocoded, float32 ``(N,)`` at the output rate, when whoever ran the round
    also vocoded it (the serving decoder does); None otherwise. ``server_fault``: ``error`` comes from a
    stage that failed (LLM, vocoder), not from the request.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    pieces: tuple[str, ...] = ()
    units: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    error: str | None = None
    audio: torch.Tensor | None = None
    server_fault: bool = False

    __reduce__ = reduce_fields  # its audio crosses processes as an array


class BatchedUnitStreams:
    """``n`` unit streams decoded as one batch; row ``b`` behaves like its own ``UnitStream``.

    Args:
        decoder: the speech decoder. n: rows. max_units: unit budget per row.
        temperature: unit sampling temperature (0 = greedy). seeds: one sampler seed per row.
    """

    def __init__(self, decoder: SpeechDecoder, n: int, max_units: int, temperature: float, seeds: list[int]) -> None:
        from transformers import DynamicCache

        self.decoder, self.max_units, self.temperature = decoder, max_units, temperature
        self.device = next(decoder.parameters()).device
        self.cache = DynamicCache()
        self.mask = torch.zeros(n, 0, dtype=torch.long, device=self.device)
        self.state = [UnitStreamState.OPEN] * n
        self.written = [0] * n
        self.next_logits: list[torch.Tensor | None] = [None] * n
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def add(self, seeds: list[int]) -> None:
        """Rows join at the end, one per seed, attending nothing yet."""
        n = len(seeds)
        self.mask = add_empty_rows(self.cache, self.mask, n)
        self.state += [UnitStreamState.OPEN] * n
        self.written += [0] * n
        self.next_logits += [None] * n
        self.generators += [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows``, in that order (their caches, samplers and states)."""
        self.mask = keep_rows(self.cache, self.mask, rows)
        for name in ("state", "written", "next_logits", "generators"):
            setattr(self, name, [getattr(self, name)[b] for b in rows])

    @torch.no_grad()
    def feed(self, blocks: dict[int, torch.Tensor]) -> None:
        """Append decoder-space inputs ``(k_b, d)`` to rows ``b``; other rows get masked padding."""
        if not blocks:
            return
        n, t = len(self.state), max(x.shape[0] for x in blocks.values())
        embeds = torch.zeros(n, t, self.decoder.lm.config.hidden_size, device=self.device)
        valid = torch.zeros(n, t, dtype=torch.long, device=self.device)
        for b, x in blocks.items():
            embeds[b, : x.shape[0]], valid[b, : x.shape[0]] = x, 1
        self.mask = torch.cat([self.mask, valid], dim=1)  # (n, L + t)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -t:]  # (n, t): real tokens count only
        out = self.decoder.lm(
            inputs_embeds=embeds.to(self.decoder.projection_dtype),
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            return_dict=True,
        )
        self.cache = out.cache
        for b, x in blocks.items():
            self.next_logits[b] = out.logits[b, x.shape[0] - 1]

    @torch.no_grad()
    def read(self, rows: dict[int, tuple[torch.Tensor, torch.Tensor]], end: set[int]) -> None:
        """Append text states ``hidden (k, D_llm)``, ``tokens (k,)`` per row; rows in ``end`` then get ``<sep>``."""
        sep = self.decoder.embed(torch.tensor([self.decoder.sep_id], device=self.device))  # (1, d)
        blocks = {}
        for b in sorted(set(rows) | end):
            if self.state[b] is not UnitStreamState.OPEN:
                continue
            parts = []
            if b in rows and rows[b][1].numel():
                hidden, tokens = rows[b]
                parts.append(self.decoder.fuse(hidden.to(self.device), tokens.to(self.device)))
            if b in end:
                parts.append(sep)
                self.state[b] = UnitStreamState.TEXT_DONE
            if parts:
                blocks[b] = torch.cat(parts)
        self.feed(blocks)

    @torch.no_grad()
    def write(self, rows: set[int], limit: int) -> dict[int, list[int]]:
        """Sample up to ``limit`` units per row (UnitStream.write's rules for EOS and the budget)."""
        units: dict[int, list[int]] = {b: [] for b in rows}
        active = {b for b in rows if self.state[b] is not UnitStreamState.FINISHED and self.next_logits[b] is not None}
        for _ in range(limit):
            step = {}
            for b in sorted(active):
                unit = self._sample(b)
                if unit == self.decoder.n_units or self.written[b] >= self.max_units:  # EOS or out of budget
                    if self.state[b] is UnitStreamState.TEXT_DONE or self.written[b] >= self.max_units:
                        self.state[b] = UnitStreamState.FINISHED
                    continue
                units[b].append(unit)
                self.written[b] += 1
                step[b] = unit
            active = set(step)
            if not active:
                break
            ids = self.decoder.unit_ids(torch.tensor(list(step.values()), device=self.device))
            self.feed({b: self.decoder.embed(ids[i : i + 1]) for i, b in enumerate(step)})
        return units

    def _sample(self, b: int) -> int:
        logits = self.next_logits[b]
        assert logits is not None
        allowed = logits[self.decoder.text_vocab + 1 :].float()  # units then EOS
        if self.temperature <= 0:
            return int(allowed.argmax())
        probs = torch.softmax(allowed / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generators[b]))


class _Phase(enum.Enum):
    """Where one stream of a :class:`SpeechSession` is."""

    TEXT = "text"  # the LLM is still producing this reply
    SEP_NEXT = "sep_next"  # text ended on a full R group: <sep> is read in the next round
    TAIL = "tail"  # <sep> read: writing to EOS
    DONE = "done"


class SpeechSession:
    """Lockstep rounds over a batch of replies (see the module docstring).

    Args:
        decoder: the speech decoder. speech: per stream, whether it wants units. read, write: R and W.
        max_units: unit budget per stream. temperature: unit sampling temperature. seeds: per stream.
    """

    def __init__(
        self,
        decoder: SpeechDecoder,
        speech: list[bool],
        read: int,
        write: int,
        max_units: int,
        temperature: float,
        seeds: list[int],
    ) -> None:
        self.speech, self.read, self.write = list(speech), read, write
        self.units = BatchedUnitStreams(decoder, len(speech), max_units, temperature, seeds)
        self.phase = [_Phase.TEXT] * len(speech)
        self.finish: list[FinishReason | None] = [None] * len(speech)
        self.prompt_tokens = [0] * len(speech)

    @property
    def done(self) -> bool:
        """Every stream has sent its last chunk."""
        return all(p is _Phase.DONE for p in self.phase)

    def add(self, speech: list[bool], seeds: list[int]) -> None:
        """Streams join as the last ones; their first round is the next :meth:`round`."""
        self.units.add(seeds)
        self.speech = [*self.speech, *speech]
        self.phase += [_Phase.TEXT] * len(speech)
        self.finish += [None] * len(speech)
        self.prompt_tokens += [0] * len(speech)

    def compact(self, drop: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Remove streams that sent their last chunk, and ``drop``; returns the kept ones' old indices."""
        keep = [b for b, p in enumerate(self.phase) if p is not _Phase.DONE and b not in drop]
        if len(keep) < len(self.phase):
            self.units.keep(keep)
            for name in ("speech", "phase", "finish", "prompt_tokens"):
                setattr(self, name, [getattr(self, name)[b] for b in keep])
        return keep

    def wants_text(self, b: int) -> bool:
        """Whether stream ``b`` can do nothing until its next text group (it is still in the LLM's text)."""
        return self.phase[b] is _Phase.TEXT

    def round(self, groups: list[TextGroup | None] | None) -> list[SpeechChunk | None]:
        """Read this round's groups (None: the LLM has finished), write W units; one entry per stream."""
        groups = groups or [None] * len(self.phase)
        rows, end, writers = {}, set(), set()
        for b, g in enumerate(groups):
            if self.phase[b] is _Phase.SEP_NEXT:
                end.add(b)
            if g is not None and g.error is not None:
                continue
            if g is not None:
                self.prompt_tokens[b] = g.prompt_tokens
                self._take(b, g, rows, end)
            waiting = g is None and self.phase[b] is _Phase.TEXT  # no new text yet: nothing to write
            if self.speech[b] and not waiting and self.phase[b] is not _Phase.DONE:
                writers.add(b)
        for b in end:
            self.phase[b] = _Phase.TAIL
        self.units.read(rows, {b for b in end if self.speech[b]})
        units = self.units.write(writers, self.write)
        return [self._chunk(b, groups[b], units.get(b, [])) for b in range(len(self.phase))]

    def _take(self, b: int, g: TextGroup, rows: dict, end: set[int]) -> None:
        if g.token_ids:
            rows[b] = (g.hidden, torch.tensor(g.token_ids))
        if g.finish_reason is not None:
            self.finish[b] = g.finish_reason
            if len(g.token_ids) == self.read:  # <sep> starts a chunk of its own (training layout)
                self.phase[b] = _Phase.SEP_NEXT
            else:
                end.add(b)

    def _chunk(self, b: int, g: TextGroup | None, units: list[int]) -> SpeechChunk | None:
        if self.phase[b] is _Phase.DONE:
            return None
        if g is not None and g.error is not None:  # this request failed alone; its stream ends here
            self.phase[b] = _Phase.DONE
            return SpeechChunk(text="", error=g.error, prompt_tokens=g.prompt_tokens, server_fault=g.server_fault)
        finished = self.finish[b] is not None and (
            not self.speech[b] or self.units.state[b] is UnitStreamState.FINISHED
        )
        if finished:
            self.phase[b] = _Phase.DONE
        if g is None and not units and not finished:
            return None
        return SpeechChunk(
            text="".join(g.pieces) if g else "",
            token_ids=g.token_ids if g else (),
            pieces=g.pieces if g else (),
            units=tuple(units),
            finish_reason=self.finish[b] if finished else None,
            prompt_tokens=self.prompt_tokens[b],
        )
