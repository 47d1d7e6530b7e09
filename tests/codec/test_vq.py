"""MelVQCodec (``kind: mel_vq``): learned units, the shared decoder, fitting, save/load and kind checks.

Same tiny sizes and synthetic audio as ``test_codec.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchaudio
from freezeempath.codec.content_states import own_states
from freezeempath.codec.mel_codec import CodecFitReport, MelKMeansCodec, SpeechCodec, build_codec
from freezeempath.codec.vq import MelVQCodec
from freezeempath.config import load_config
from helpers import CODEC_HOP as HOP
from helpers import TINY_CODEC as TINY
from helpers import codec_clip as clip
from helpers import mel_distance

VQ = dataclasses.replace(TINY, kind="mel_vq")


@pytest.fixture(scope="module")
def fitted() -> tuple[MelVQCodec, CodecFitReport]:
    codec = build_codec(VQ)
    report = codec.fit([clip(s) for s in range(6)], decoder_steps=150, seed=0)
    return codec, report


def test_config_kind_builds_a_vq_codec_that_speaks_the_codec_protocol() -> None:
    codec = build_codec(VQ)
    assert isinstance(codec, MelVQCodec) and isinstance(codec, SpeechCodec)
    assert isinstance(codec.synthesizer, MelKMeansCodec)  # what vocoding uses
    units = codec.encode(clip(0, seconds=0.5))
    assert units.shape == (-(-TINY.sample_rate // 2 // HOP),) and units.dtype == torch.long
    assert int(units.min()) >= 0 and int(units.max()) < TINY.n_units
    assert codec.decode(units).shape == (units.numel() * HOP,)


def test_fit_lowers_mel_error_and_units_carry_information(fitted: tuple[MelVQCodec, CodecFitReport]) -> None:
    codec, report = fitted
    assert report.clips == 6 and report.frames == 6 * TINY.unit_rate
    assert report.mel_l1_after < 0.5 * report.mel_l1_before
    wave = clip(20)  # held out
    units = codec.encode(wave)
    assert len(set(units.tolist())) > 2  # the units carry information, not one code
    untrained = build_codec(VQ)
    trained_error = mel_distance(codec.synthesizer, codec.decode(units), wave)
    untrained_error = mel_distance(untrained.synthesizer, untrained.decode(untrained.encode(wave)), wave)
    assert trained_error < untrained_error


def test_decoder_folding_keeps_streaming_equal_to_decode(fitted: tuple[MelVQCodec, CodecFitReport]) -> None:
    codec, _ = fitted
    units = codec.encode(clip(21))
    stream = codec.stream()
    whole = torch.cat([stream.push(units), stream.flush()])
    torch.testing.assert_close(whole, codec.decode(units))
    assert torch.count_nonzero(codec.synthesizer.codebook) == 0  # everything lives in the folded decoder


def test_fit_is_deterministic() -> None:
    waves = [clip(s, seconds=0.5) for s in range(2)]
    a, b = build_codec(VQ), build_codec(VQ)
    assert a.fit(waves, decoder_steps=5, seed=3) == b.fit(waves, decoder_steps=5, seed=3)
    assert torch.equal(a.codes, b.codes)
    with pytest.raises(ValueError, match="at least n_units=16 frames"):
        build_codec(VQ).fit([clip(0, seconds=0.1)])


def test_save_load_round_trip_and_kind_checks(fitted: tuple[MelVQCodec, CodecFitReport], tmp_path: Path) -> None:
    codec, _ = fitted
    codec.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["kind"] == "mel_vq"
    loaded = build_codec(dataclasses.replace(VQ, path=str(tmp_path)))
    wave = clip(22)
    units = codec.encode(wave)
    assert torch.equal(loaded.encode(wave), units)
    assert torch.equal(loaded.decode(units), codec.decode(units))
    with pytest.raises(ValueError, match="expected keys"):  # a mel_vq folder is not a mel_kmeans codec
        build_codec(dataclasses.replace(TINY, path=str(tmp_path)))
    with pytest.raises(ValueError, match=r"n_units=32 \(saved 16\)"):
        build_codec(dataclasses.replace(VQ, path=str(tmp_path), n_units=32))
    kmeans_dir = tmp_path / "kmeans"
    build_codec(TINY).save(kmeans_dir)
    with pytest.raises(ValueError, match="not a mel_vq codec"):
        build_codec(dataclasses.replace(VQ, path=str(kmeans_dir)))


ENCODER = load_config("tiny").model.encoder  # random Whisper weights, built from a fixed seed
ENC_VQ = dataclasses.replace(TINY, kind="encoder_vq", sample_rate=16_000, n_fft=1024)


def speech16k(seed: int, seconds: float = 1.0) -> torch.Tensor:
    """The test clip at the speech encoder's 16 kHz."""
    return torchaudio.functional.resample(clip(seed, seconds), TINY.sample_rate, 16_000)


def test_encoder_vq_takes_units_from_the_speech_encoder_and_records_it(tmp_path: Path) -> None:
    codec = build_codec(ENC_VQ, ENCODER)
    assert isinstance(codec, MelVQCodec) and codec.kind == "encoder_vq"
    report = codec.fit([speech16k(s) for s in range(6)], decoder_steps=60, seed=0)
    assert report.mel_l1_after < report.mel_l1_before
    long = speech16k(7, seconds=ENCODER.window_seconds + 1.5)  # two encoder windows
    units = codec.encode(long)
    assert units.shape == (-(-long.numel() // 320),) and len(set(units.tolist())) > 1
    codec.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["content"] == dataclasses.asdict(ENCODER)
    loaded = build_codec(dataclasses.replace(ENC_VQ, path=str(tmp_path)), ENCODER)
    assert torch.equal(loaded.encode(long), units)
    assert torch.equal(loaded.decode(units), codec.decode(units))
    with pytest.raises(ValueError, match="fitted with speech encoder"):
        build_codec(dataclasses.replace(ENC_VQ, path=str(tmp_path)), dataclasses.replace(ENCODER, layers=3))
    with pytest.raises(ValueError, match="not a mel_vq codec"):
        build_codec(dataclasses.replace(ENC_VQ, kind="mel_vq", path=str(tmp_path)))


def test_encoder_vq_needs_the_encoder_and_its_frame_rate() -> None:
    with pytest.raises(ValueError, match="needs the speech encoder's config"):
        build_codec(ENC_VQ)
    with pytest.raises(ValueError, match="one unit per encoder state"):
        build_codec(dataclasses.replace(ENC_VQ, sample_rate=8000, n_fft=512), ENCODER)


def test_content_states_own_their_storage_so_padded_batches_are_freed() -> None:
    padded = torch.randn(1500, 8)  # one row of an encoder batch, padded to the window
    states = own_states(padded, 10, 11)  # 10 valid states, 11 codec frames: the last repeated
    assert states.shape == (11, 8) and torch.equal(states[:10], padded[:10]) and torch.equal(states[10], padded[9])
    cut = own_states(padded, 10, 9)  # one state more than codec frames: cut
    assert torch.equal(cut, padded[:9])
    for own in (states, cut):  # not the 1500-row batch
        assert own.untyped_storage().nbytes() == own.numel() * own.element_size()


def test_crops_drawn_by_audio_weigh_clips_by_frames_and_mark_their_padding() -> None:
    from freezeempath.codec.vq import BATCH, CROP_FRAMES, _crops

    long, short = torch.randn(40 * CROP_FRAMES, 3), torch.randn(10, 3)
    inputs, mels = [long, short], [long[:, :2], short[:, :2]]
    generator = torch.Generator().manual_seed(0)
    weights = torch.tensor([float(long.shape[0]), float(short.shape[0])])
    short_rows = uniform_short = 0
    for _ in range(50):
        x, y, valid, picks = _crops(inputs, mels, generator, weights)
        assert x.shape == (BATCH, CROP_FRAMES, 3) and y.shape == (BATCH, CROP_FRAMES, 2)
        is_short = valid.sum(1) == 10
        assert bool((is_short == (picks == 1)).all())  # the clips drawn, for their voices
        assert bool((valid.sum(1)[~is_short] == CROP_FRAMES).all()) and bool(valid[is_short, :10].all())
        short_rows += int(is_short.sum())
        uniform_short += int((_crops(inputs, mels, generator)[1][:, 10:] == short[-1, :2]).all(-1).all(-1).sum())
    assert short_rows < 0.02 * 50 * BATCH  # 10 of 5130 frames: about 0.2 % of the crops
    assert 0.35 * 50 * BATCH < uniform_short < 0.65 * 50 * BATCH  # by clip: half, padded with the last frame


def test_fit_with_crops_by_audio_trains_and_unknown_ways_are_refused() -> None:
    waves = [clip(0, seconds=0.2), clip(1, seconds=1.5)]
    by_clip, by_audio = build_codec(VQ), build_codec(VQ)
    report = by_audio.fit(waves, decoder_steps=60, seed=3, crops="audio")
    assert report.mel_l1_after < report.mel_l1_before
    by_clip.fit(waves, decoder_steps=60, seed=3)
    assert not torch.equal(by_clip.codes, by_audio.codes)
    with pytest.raises(ValueError, match="crops must be 'clip' or 'audio'"):
        build_codec(VQ).fit(waves, crops="frames")
    with pytest.raises(ValueError, match="targets.codec_crops must be clip or audio"):
        load_config("tiny", ["targets.codec_crops=frames"])


def test_loss_over_valid_frames_ignores_what_the_padding_holds() -> None:
    import copy

    from freezeempath.codec.fit import fit_codec
    from freezeempath.codec.vq import CROP_FRAMES, _Trainer

    codec = build_codec(VQ)
    frames = torch.randn(300, TINY.n_mels)
    trainer = _Trainer(codec, frames, frames, seed=0)
    x, y = torch.randn(2, CROP_FRAMES, TINY.n_mels), torch.randn(2, CROP_FRAMES, TINY.n_mels)
    valid = torch.ones(2, CROP_FRAMES, dtype=torch.bool)
    valid[1, 10:] = False
    other = y.clone()
    other[1, 10:] += 5.0  # only padded frames differ
    same = [copy.deepcopy(trainer).loss(x, target, valid) for target in (y, other)]
    torch.testing.assert_close(same[0], same[1])
    assert not torch.allclose(copy.deepcopy(trainer).loss(x, y), copy.deepcopy(trainer).loss(x, other))
    cfg = load_config("tiny", ["targets.codec_crops=audio", "model.codec.kind=mel_kmeans"])
    with pytest.raises(ValueError, match="mel_kmeans takes no crops"):
        fit_codec(cfg, [clip(0)])


VOICED = dataclasses.replace(VQ, voice_conditioned=True)


@pytest.fixture(scope="module")
def voiced() -> MelVQCodec:
    """Fitted on the test clips at two levels 26 dB apart: the voice carries the level."""
    waves = [clip(s) * gain for s in range(4) for gain in (1.0, 0.05)]
    codec = build_codec(VOICED)
    codec.fit(waves, decoder_steps=150, seed=0)
    return codec


def test_voice_conditioned_decoder_speaks_in_the_voice_it_is_given(voiced: MelVQCodec) -> None:
    quiet, loud = clip(20) * 0.05, clip(20)  # held out
    units = voiced.encode(quiet)
    own, other = voiced.voice_of(quiet), voiced.voice_of(loud)
    assert own.shape == (TINY.n_mels,) and not torch.equal(own, other)
    synth = voiced.synthesizer
    mel = synth.log_mel(quiet)
    error_own = (synth.predict_log_mel(units[None], own[None])[0] - mel).abs().mean()
    error_other = (synth.predict_log_mel(units[None], other[None])[0] - mel).abs().mean()
    assert error_own < error_other  # the decoder reads the voice
    stream = voiced.stream(own)
    torch.testing.assert_close(torch.cat([stream.push(units), stream.flush()]), voiced.decode(units, own))
    default = synth.predict_log_mel(units[None])  # no voice: the fitting clips' mean voice
    torch.testing.assert_close(default, synth.predict_log_mel(units[None], synth.default_voice[None]))


def test_voice_state_saves_and_loads_and_wrong_voices_are_refused(voiced: MelVQCodec, tmp_path: Path) -> None:
    voiced.save(tmp_path)
    assert json.loads((tmp_path / "codec.json").read_text())["voice_conditioned"] is True
    loaded = build_codec(dataclasses.replace(VOICED, path=str(tmp_path)))
    wave = clip(21)
    units, voice = voiced.encode(wave), voiced.voice_of(wave)
    assert torch.equal(loaded.voice_of(wave), voice)
    assert torch.equal(loaded.decode(units, voice), voiced.decode(units, voice))
    assert torch.equal(loaded.decode(units), voiced.decode(units))
    with pytest.raises(ValueError, match=r"voice_conditioned=False \(saved True\)"):
        build_codec(dataclasses.replace(VQ, path=str(tmp_path)))
    with pytest.raises(ValueError, match=rf"shape \({TINY.n_mels},\)"):
        voiced.decode(units, voice[:3])
    with pytest.raises(ValueError, match="finite"):
        voiced.decode(units, torch.full_like(voice, float("nan")))
    plain = build_codec(VQ)
    with pytest.raises(ValueError, match="takes no voice"):
        plain.decode(units, voice)
    with pytest.raises(ValueError, match="takes no voice"):
        plain.voice_of(wave)


def test_codecs_saved_before_voices_still_load(tmp_path: Path) -> None:
    for config, codec in ((TINY, build_codec(TINY)), (VQ, build_codec(VQ))):
        folder = tmp_path / config.kind
        codec.save(folder)
        record = json.loads((folder / "codec.json").read_text())
        del record["voice_conditioned"]  # as written before the field existed
        (folder / "codec.json").write_text(json.dumps(record))
        loaded = build_codec(dataclasses.replace(config, path=str(folder)))
        assert not loaded.voice_conditioned
        units = codec.encode(clip(3))
        assert torch.equal(loaded.decode(units), codec.decode(units))


def test_mel_kmeans_fits_a_voice_conditioned_decoder_too() -> None:
    codec = build_codec(dataclasses.replace(TINY, voice_conditioned=True))
    report = codec.fit([clip(s) * gain for s in range(3) for gain in (1.0, 0.05)], decoder_steps=30, seed=0)
    assert report.mel_l1_after < report.mel_l1_before
    units, loud, quiet = codec.encode(clip(9)), codec.voice_of(clip(9)), codec.voice_of(clip(9) * 0.05)
    assert not torch.equal(codec.decode(units, loud), codec.decode(units, quiet))
