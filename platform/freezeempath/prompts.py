"""The only home of prompt strings (method.md §3)."""

EMPATHETIC_SYSTEM_PROMPT = (
    "You are an empathetic spoken chatbot. Please provide a very short but helpful response to the "
    "user with empathy toward the user's emotional tone."
)
SPEECH_SLOT = "<speech>"
EMOTION_SLOT = "<emotion>"
EMOTION_PREFIX = "(with a "
EMOTION_SUFFIX = " emotional tone)."
SER_INSTRUCTION = "What is the emotional tone of the speaker? Answer with one word."
# Evaluation probes (freezeempath.evaluation): understanding is asked under a plain assistant prompt, so
# the empathetic one does not steer a transcript or an answer.
PLAIN_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
ASR_INSTRUCTION = "Write down exactly what the speaker said, and nothing else."


def speech_turn(emotion: bool = True) -> str:
    """User content of one spoken turn: ``<speech>(with a <emotion> emotional tone).``, or ``<speech>``
    alone without the emotion slot (the empathy probe's control)."""
    return f"{SPEECH_SLOT}{EMOTION_PREFIX}{EMOTION_SLOT}{EMOTION_SUFFIX}" if emotion else SPEECH_SLOT


def text_twin(transcript: str, emotion_word: str) -> str:
    """Text-side twin of a spoken turn, used to make targets: ``transcript (with a sad emotional tone).``"""
    return f"{transcript} {EMOTION_PREFIX}{emotion_word}{EMOTION_SUFFIX}"
