"""Chat-template rendering with ``<speech>`` / ``<emotion>`` slots and reply-only loss masks.

In: a dialogue (system prompt, user turns that are spoken or typed, assistant turns) and optionally
the reply to learn. Out: :class:`PromptIds` — token ids with slot sentinels and labels that are
``IGNORE_INDEX`` everywhere except the reply (and its end-of-turn tokens). The LLM's own chat template
renders the text; slots never enter its vocabulary, so the frozen embedding table stays untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from freezeempath import prompts

# Slot sentinels are negative so they can never collide with a vocabulary id; fusion replaces them.
SPEECH_TOKEN_ID = -200
EMOTION_TOKEN_ID = -300
IGNORE_INDEX = -100  # label of positions outside the loss (PyTorch's cross-entropy default)

_SLOTS = {prompts.SPEECH_SLOT: SPEECH_TOKEN_ID, prompts.EMOTION_SLOT: EMOTION_TOKEN_ID}
_SLOT_PATTERN = re.compile("(" + "|".join(re.escape(s) for s in _SLOTS) + ")")

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Turn:
    """One dialogue turn. A spoken user turn (``spoken=True``) becomes ``<speech>(with a <emotion> …).``
    followed by ``text`` if any (``<speech>`` alone with ``emotion_slot=False``); other turns carry
    ``text`` only."""

    role: Literal["system", "user", "assistant"]
    text: str = ""
    spoken: bool = False
    emotion_slot: bool = True


@dataclass(frozen=True)
class PromptIds:
    """Token ids with slot sentinels, and labels masked to the reply."""

    input_ids: list[int]
    labels: list[int] = field(default_factory=list)

    @property
    def n_speech(self) -> int:
        """Number of ``<speech>`` slots."""
        return self.input_ids.count(SPEECH_TOKEN_ID)


def sanitize(text: str) -> str:
    """Remove slot strings from user-provided text so it cannot create slots."""
    return _SLOT_PATTERN.sub("", text)


def to_messages(turns: list[Turn], system_prompt: str = prompts.EMPATHETIC_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """Turns → chat-template messages; the system prompt is prepended unless a system turn is given."""
    messages = [] if turns and turns[0].role == "system" else [{"role": "system", "content": system_prompt}]
    for turn in turns:
        content = sanitize(turn.text)
        if turn.spoken:
            content = prompts.speech_turn(turn.emotion_slot) + (f" {content}" if content else "")
        messages.append({"role": turn.role, "content": content})
    return messages


def render(tokenizer: Any, turns: list[Turn], reply: str | None = None) -> PromptIds:
    """Render a dialogue with the tokenizer's chat template.

    Without ``reply`` the ids end with the generation prompt (for inference). With ``reply`` they also
    hold the reply and its end-of-turn tokens, which are the only labelled positions.
    """
    messages = to_messages(turns)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = _encode_with_slots(tokenizer, prompt)
    if reply is None:
        return PromptIds(input_ids=ids, labels=[IGNORE_INDEX] * len(ids))
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": sanitize(reply)}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("chat template does not extend the generation prompt with the reply")
    reply_ids = tokenizer.encode(full[len(prompt) :], add_special_tokens=False)
    return PromptIds(input_ids=ids + reply_ids, labels=[IGNORE_INDEX] * len(ids) + reply_ids)


def _encode_with_slots(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = []
    for piece in _SLOT_PATTERN.split(text):
        if piece in _SLOTS:
            ids.append(_SLOTS[piece])
        elif piece:
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn (EOS and the chat template's end-of-turn token)."""
    ids = {tokenizer.eos_token_id}
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    return sorted(i for i in ids if i is not None)


def byte_level_chat_tokenizer() -> Any:
    """A real byte-level tokenizer with a ChatML template, built in code (no files) for the tiny preset.

    256 byte tokens plus ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``: 259 ids.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = byte_level
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok
