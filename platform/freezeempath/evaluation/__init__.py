"""Evaluation: ASR transcripts and word error rate (codec intelligibility, spoken answers)."""
