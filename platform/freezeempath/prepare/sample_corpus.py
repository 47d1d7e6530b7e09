"""Data step 1 (synthetic): a small emotional spoken corpus made offline with espeak-ng.

In: nothing but the Debian ``espeak-ng`` program (run as a subprocess; GPL code stays out of our
process). Out: ``CorpusRows`` of 22.05 kHz WAV files, or, through :func:`build_sample_corpus`, shards in
the ``freezeempath.data.shards`` schema. 20 templated situations per emotion are spoken with that
emotion's prosody preset (``offline-assets.md`` §3) and 20 spoken instructions with the neutral one.

Eight pseudo-speakers (voice variants with their own formants and pitch) carry the split: four train,
two validation, two test, so the splits are speaker-independent. The texts are spread over the
speakers in a fixed rotation (80 % train), so every split holds every emotion. Synthetic speech
belongs in training; evaluate on real held-out speakers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from freezeempath.config import DataConfig
from freezeempath.data.shards import Split
from freezeempath.labels import Emotion
from freezeempath.prepare.corpus import PrepareSummary, prepare_corpus
from freezeempath.prepare.recipes import CorpusRows, RawRow, SplitFractions, collect

ESPEAK = "espeak-ng"


@dataclass(frozen=True)
class Prosody:
    """An emotion preset: variant-file pitch range (Hz), speed (%) and roughness; CLI amplitude and word gap."""

    pitch: tuple[int, int]
    speed: int
    amplitude: int
    word_gap: int = 0
    roughness: int = 0


@dataclass(frozen=True)
class PseudoSpeaker:
    """A voice: formants copied from an installed variant, a pitch scale and its split."""

    name: str
    base_variant: str
    gender: str
    pitch_scale: float
    split: Split


PRESETS: dict[Emotion, Prosody] = {
    Emotion.NEUTRAL: Prosody(pitch=(82, 118), speed=100, amplitude=100),
    Emotion.HAPPY: Prosody(pitch=(110, 200), speed=110, amplitude=120),
    Emotion.SAD: Prosody(pitch=(70, 95), speed=80, amplitude=70, word_gap=6),
    Emotion.ANGRY: Prosody(pitch=(100, 190), speed=112, amplitude=170, roughness=3),
    Emotion.SURPRISED: Prosody(pitch=(120, 260), speed=100, amplitude=130),
}
SPEAKERS: tuple[PseudoSpeaker, ...] = (
    PseudoSpeaker("s0", "m3", "male", 1.0, Split.TRAIN),
    PseudoSpeaker("s1", "f2", "female", 1.7, Split.TRAIN),
    PseudoSpeaker("s2", "m2", "male", 0.9, Split.TRAIN),
    PseudoSpeaker("s3", "f4", "female", 1.6, Split.TRAIN),
    PseudoSpeaker("s4", "m4", "male", 1.1, Split.VALIDATION),
    PseudoSpeaker("s5", "f1", "female", 1.75, Split.VALIDATION),
    PseudoSpeaker("s6", "m6", "male", 0.95, Split.TEST),
    PseudoSpeaker("s7", "f5", "female", 1.65, Split.TEST),
)
ROTATION = (0, 1, 2, 3, 4, 0, 1, 2, 3, 5, 0, 1, 2, 3, 6, 0, 1, 2, 3, 7)
"""Speaker order for the texts: train speakers take 16 of every 20 texts, each other speaker 1."""
# fmt: off
SITUATIONS: dict[Emotion, tuple[str, ...]] = {
    Emotion.SAD: tuple(
        f"I just {event}." if i % 2 == 0 else f"I feel so low because I {event}."
        for i, event in enumerate(
            ["lost my job", "failed my driving test", "had to say goodbye to my old dog", "missed a wedding",
             "heard that my grandmother is very ill", "got rejected from every university", "broke up with my partner",
             "moved away from all my friends", "lost the ring my mother gave me", "was left out of the team",
             "spent the holidays alone", "found out my project was cancelled", "could not pay my rent this month",
             "watched my garden die in the drought", "lost touch with my brother", "was told my band is splitting up",
             "saw my old school being torn down", "failed the exam I studied months for", "lost all my photos",
             "learned my neighbour passed away"]
        )
    ),
    Emotion.HAPPY: tuple(
        f"I just {event}!" if i % 2 == 0 else f"Guess what, I {event}!"
        for i, event in enumerate(
            ["got the job I wanted", "passed my final exams", "became an aunt", "won a trip to Italy",
             "finished my first marathon", "got engaged last night", "adopted a little puppy", "paid off my loan",
             "got into my dream university", "sold my first painting", "found my lost wallet", "got a promotion",
             "moved into my own flat", "heard my song on the radio", "learned I am going to be a father",
             "made the national team", "published my first book", "finally fixed my old car",
             "had the best birthday ever", "reunited with my childhood friend"]
        )
    ),
    Emotion.ANGRY: tuple(
        f"I am furious, {event}!" if i % 2 == 0 else f"This is outrageous, {event}!"
        for i, event in enumerate(
            ["my landlord kept my deposit", "someone scratched my car", "they cancelled my flight again",
             "my colleague took credit for my work", "the shop sold me a broken phone", "my neighbour blocked my drive",
             "they charged me twice", "the bus drove past me on purpose", "my order is three weeks late",
             "someone stole my bike", "they lost my luggage", "my boss yelled at me in front of everyone",
             "the company ignored my complaint", "they raised the rent again", "my roommate ate my food",
             "the referee robbed our team", "they deleted my account", "the plumber never showed up",
             "my brother broke my laptop", "they cut the power without warning"]
        )
    ),
    Emotion.SURPRISED: tuple(
        f"Wow, {event}?" if i % 2 == 0 else f"I can't believe it, {event}!"
        for i, event in enumerate(
            ["my old teacher remembered my name", "it snowed in July", "my sister is moving to Japan",
             "the quiet kid won the talent show", "my cat opened the fridge", "the meeting is already over",
             "my parents bought a motorbike", "the shop is giving everything away", "my friend is a famous chef now",
             "the test was cancelled", "the old house sold in one day", "my grandfather started a podcast",
             "we share the same birthday", "the train arrived early", "my neighbour is a magician",
             "the package came from Brazil", "our team actually won", "the lake froze overnight",
             "my boss gave everyone a day off", "the band is playing in our town"]
        )
    ),
    Emotion.NEUTRAL: tuple(
        f"Today I {event}." if i % 2 == 0 else f"This morning I {event}."
        for i, event in enumerate(
            ["went to the post office", "bought some bread", "took the bus to work", "read the news",
             "cleaned the kitchen", "called the bank", "walked to the library", "watered the plants",
             "checked my email", "made a cup of tea", "paid the electricity bill", "ironed my shirts",
             "sorted the recycling", "booked a dentist appointment", "returned a book", "filled up the car",
             "wrote a shopping list", "updated my computer", "met a colleague for lunch", "changed the bed sheets"]
        )
    ),
}
INSTRUCTIONS: tuple[str, ...] = (
    "How do I boil an egg?", "What is the capital of France?", "Can you recommend a good book?",
    "How do I make a cup of green tea?", "What should I pack for a weekend trip?", "How can I sleep better?",
    "Explain how a rainbow forms.", "How do I change a flat tyre?", "What is a healthy breakfast?",
    "How do plants make their food?", "Give me a tip for learning a language.", "How long should I walk each day?",
    "What is the tallest mountain in the world?", "How do I write a thank you note?", "Why is the sky blue?",
    "How do I start a vegetable garden?", "What is the best way to save money?", "How do I cook rice?",
    "Tell me a fun fact about the ocean.", "How can I stay focused while studying?",
)
# fmt: on


def espeak_data_dir() -> Path:
    """Folder of the installed ``espeak-ng-data`` (from ``espeak-ng --version``).

    Raises:
        FileNotFoundError: espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    binary = shutil.which(ESPEAK)
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed; the sample corpus needs it (apt-get install espeak-ng)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at:\s*(\S+)", version)
    if match is None or not Path(match[1]).is_dir():
        raise FileNotFoundError(f"espeak-ng data folder not found in {version!r}")
    return Path(match[1])


def variant_text(emotion: Emotion, speaker: PseudoSpeaker, base: str) -> str:
    """Variant file for one (emotion, speaker): the base variant's formants, the preset's prosody."""
    preset = PRESETS[emotion]
    low, high = (round(p * speaker.pitch_scale) for p in preset.pitch)
    lines = ["language variant", f"name emo_{emotion.value}_{speaker.name}", f"gender {speaker.gender}"]
    lines += [f"pitch {low} {high}", f"speed {preset.speed}", f"roughness {preset.roughness}"]
    lines += [line.strip() for line in base.splitlines() if line.strip().startswith("formant")]
    return "\n".join(lines) + "\n"


def install_variants(work_dir: Path) -> Path:
    """Copy ``espeak-ng-data`` into ``work_dir`` and add one variant per (emotion, speaker); returns ``--path``."""
    source = espeak_data_dir()
    target = work_dir / "espeak-ng-data"
    if not target.is_dir():
        shutil.copytree(source, target)
    variants = target / "voices" / "!v"
    for speaker in SPEAKERS:
        base = (variants / speaker.base_variant).read_text(errors="replace")
        for emotion in PRESETS:
            (variants / f"emo_{emotion.value}_{speaker.name}").write_text(variant_text(emotion, speaker, base))
    return work_dir


def sample_rows(audio_dir: Path) -> list[RawRow]:
    """The corpus plan: one row per text, speakers in ``ROTATION`` order (offset per emotion)."""
    rows = []
    plan = [(e, f"{e.value}-{i:02d}", t, i + k) for k, e in enumerate(PRESETS) for i, t in enumerate(SITUATIONS[e])]
    plan += [(Emotion.NEUTRAL, f"instruction-{i:02d}", t, i) for i, t in enumerate(INSTRUCTIONS)]
    for emotion, key, text, turn in plan:
        speaker = SPEAKERS[ROTATION[turn % len(ROTATION)]]
        rows.append(
            RawRow(
                id=f"sample-{key}",
                audio_path=str(audio_dir / f"{key}.wav"),
                speaker=speaker.name,
                language="en",
                corpus="sample",
                transcript=text,
                emotion_original=emotion.value,
                emotion=emotion,
                split=speaker.split,
            )
        )
    return rows


def synthesize_sample(work_dir: str | Path, workers: int = 2) -> CorpusRows:
    """Speak every planned text with its speaker's emotion variant into ``work_dir/audio``."""
    work = Path(work_dir)
    espeak_path = install_variants(work)
    audio_dir = work / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = sample_rows(audio_dir)

    def speak(row: RawRow) -> None:
        preset = PRESETS[row.emotion or Emotion.NEUTRAL]
        voice = f"en-us+emo_{row.emotion_original}_{row.speaker}"
        command = [ESPEAK, f"--path={espeak_path}", "-v", voice, "-a", str(preset.amplitude)]
        command += ["-g", str(preset.word_gap)] if preset.word_gap else []
        subprocess.run([*command, "-w", row.audio_path, row.transcript or ""], check=True, capture_output=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(speak, rows))
    return collect(rows, SplitFractions.from_config())  # splits are fixed by speaker; fractions unused


def build_sample_corpus(out_dir: str | Path, cfg: DataConfig | None = None) -> PrepareSummary:
    """Synthesise the sample corpus and write it as shards to ``out_dir`` (needs Ray; resumes like any corpus)."""
    out = Path(out_dir)
    work = out / ".sample_sources"  # hidden: Parquet readers skip it; removed afterwards
    try:
        rows = synthesize_sample(work)
        return prepare_corpus("sample", rows, out, cfg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
