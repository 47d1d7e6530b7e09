"""Inference: waveform in → emotion, streamed reply text, speech units and audio chunks."""
