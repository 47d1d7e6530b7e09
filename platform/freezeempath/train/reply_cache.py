"""Stage-3 reply-state cache: the frozen LLM's reply hidden states computed once, reused every epoch.

In: stage-3 shards (audio, reply, reply_units) and a config whose ``train.init_from`` names the stage-1/2
artefacts. Out: cache shards (one per input shard, same name; existing ones are skipped) with ``id``,
``reply``, ``reply_units``, ``reply_tokens``, ``reply_hidden`` (float16 bytes) and ``reply_hidden_shape``.
:func:`freezeempath.data.pipeline.build_dataset` reads them without decoding audio, and the model then runs
only the speech decoder (``FreezeEmpathModel.forward`` with ``batch.reply_hidden``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from freezeempath.config import Config, from_dict, to_dict
from freezeempath.data.shards import CACHE_COLUMNS, encode_hidden
from freezeempath.stages import Stage


class ReplyStateCache:
    """Batch UDF: rows → features → stage-3 batch → frozen LLM reply states (model loaded once)."""

    def __init__(self, cfg_dict: dict[str, Any]) -> None:
        from freezeempath.data.collate import Collator
        from freezeempath.data.pipeline import AudioFeatures
        from freezeempath.model.build import build_model
        from freezeempath.model.checkpoint import load_trained

        cfg = from_dict(Config, cfg_dict)
        self.model = build_model(cfg.model)
        for directory in cfg.train.init_from:
            load_trained(self.model, directory)
        enc = cfg.model.encoder
        self.features = AudioFeatures(enc.n_mels, enc.window_frames, enc.max_input_seconds)
        self.collate = Collator(self.model.llm.tokenizer, Stage.S3B, enc.window_frames)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Columnar rows in → cache rows out (bad audio rows are dropped, as in training)."""
        rows = self.features(batch)
        if not rows["mel_len"]:
            return {c: [] for c in CACHE_COLUMNS}
        hidden, tokens, lens = self.model.live_reply_states(self.collate(rows))
        out: dict[str, list[Any]] = {c: [] for c in CACHE_COLUMNS}
        for i, n in enumerate(lens.tolist()):
            data, shape = encode_hidden(hidden[i, :n].to(torch.float16).numpy())
            out["id"].append(rows["id"][i])
            out["reply"].append(rows["reply"][i])
            out["reply_units"].append([int(u) for u in rows["reply_units"][i]])
            out["reply_tokens"].append(tokens[i, :n].tolist())
            out["reply_hidden"].append(data)
            out["reply_hidden_shape"].append(shape)
        return out


def cache_reply_states(cfg: Config, paths: list[str], out_dir: str | Path, batch_rows: int = 8) -> list[Path]:
    """Write one cache shard per input shard (skipping those already written); returns their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    udf, written = None, []
    for path in paths:
        target = out / Path(path).name
        written.append(target)
        if target.exists():
            continue
        udf = udf or ReplyStateCache(to_dict(cfg))
        table = pq.read_table(path, columns=["id", "audio", "sample_rate", "reply", "reply_units"]).to_pydict()
        parts = [
            udf({k: v[i : i + batch_rows] for k, v in table.items()}) for i in range(0, len(table["id"]), batch_rows)
        ]
        merged = {c: [x for part in parts for x in part[c]] for c in CACHE_COLUMNS}
        tmp = target.with_suffix(".tmp")
        pq.write_table(pa.table(merged), tmp)
        tmp.rename(target)
    return written
