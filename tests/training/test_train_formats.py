"""Every source format trains end to end: tiny real-layout file -> misalatch prepare -> train -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from misalatch.cli import main as cli_main
from misalatch.data.synthetic import files as sf
from misalatch.errors import ConfigError
from misalatch.training.config import TrainConfig
from misalatch.training.runs import train

FAST = dict(hidden_size=16, batch_size=4, max_epochs=1)


def _prepare(tmp_path: Path, fmt: str, source: Path, **extra: str) -> Path:
    out = tmp_path / f"prepared-{fmt}"
    args = ["prepare", "--format", fmt, "--input", str(source), "--out", str(out)]
    for key, value in extra.items():
        args += [f"--{key}", value]
    assert cli_main(args) == 0
    return out


@pytest.mark.parametrize(
    ("fmt", "writer", "encoder", "task"),
    [
        ("mmsa", lambda d: sf.write_mmsa_pickle(d / "aligned_50.pkl", d_bert=8), None, "regression"),
        ("mmsa", lambda d: sf.write_mmsa_pickle(d / "unaligned_50.pkl", aligned=False), None, "regression"),
        ("mult", lambda d: sf.write_mult_pickle(d / "mosi_data.pkl"), None, "regression"),
        ("misa", lambda d: sf.write_misa_pickles(d / "MOSI"), "source", "regression"),
        ("misa", lambda d: sf.write_misa_pickles(d / "MOSI2"), "learned", "regression"),
        ("urfunny", lambda d: sf.write_urfunny(d / "urfunny_v1", version=1), None, "classification"),
        ("urfunny", lambda d: sf.write_urfunny(d / "urfunny_v2", version=2), "learned", "classification"),
    ],
    ids=["mmsa-aligned", "mmsa-unaligned", "mult", "misa-source", "misa-learned", "urfunny-v1", "urfunny-v2"],
)
@pytest.mark.parametrize("model", ["misa", "mmlatch"])
def test_format_trains_and_reevaluates(tmp_path: Path, fmt, writer, encoder, task, model) -> None:
    source = Path(writer(tmp_path))
    prepared = _prepare(tmp_path, fmt, source)
    out = tmp_path / "run"
    # from_dict: each model starts from its own recipe (MMLatch: L1, plateau schedule, ...)
    result = train(TrainConfig.from_dict({"model": model, "data": str(prepared), "out": str(out),
                                          "text_encoder": encoder, **FAST}))
    keys = {"acc", "f1"} if task == "classification" else {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0",
                                                              "f1_non0", "acc5", "acc7"}
    assert set(result.runs[0].test) == keys
    assert cli_main(["evaluate", str(out)]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    for key in keys:
        assert evaluation["test"][key] == pytest.approx(result.runs[0].test[key], nan_ok=True, rel=1e-5)


def test_token_aligned_data_refuses_a_word_level_encoder(tmp_path: Path) -> None:
    prepared = _prepare(tmp_path, "mmsa", sf.write_mmsa_pickle(tmp_path / "aligned_50.pkl"))
    with pytest.raises(ConfigError, match="needs a BERT text encoder"):
        train(TrainConfig(data=str(prepared), out=str(tmp_path / "r"), text_encoder="learned", **FAST))
