"""Evaluation: speech emotion recognition read from the frozen LLM, ASR transcripts and word error rate
(codec intelligibility, spoken answers)."""
