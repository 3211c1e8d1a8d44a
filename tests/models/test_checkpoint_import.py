"""Importing original MISA checkpoints (MISA.md §12): torch files, safetensors, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from misalatch.errors import CheckpointError
from misalatch.models.checkpoint_import import import_state_dict, infer_config, read_state_dict
from misalatch.models.misa import MISA
from misalatch.models.parity import config_from_golden
from tests.conftest import GOLDEN


def _original_state(case: str = "misa_glove_cmd_mosi") -> dict[str, torch.Tensor]:
    tensors = load_file(str(GOLDEN / f"{case}.safetensors"))
    return {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}


def test_torch_saved_state_dict_imports_and_ignores_sp_discriminator(tmp_path: Path) -> None:
    state = _original_state()
    path = tmp_path / "model_2020.std"
    torch.save(state, path)
    config = infer_config(read_state_dict(path))
    assert (config.text_encoder, config.vocab_size, config.text_input_size) == ("glove", 64, 32)
    assert (config.visual_size, config.acoustic_size, config.hidden_size, config.similarity) == (47, 74, 128, "cmd")
    model = MISA(config)
    report = import_state_dict(model, read_state_dict(path))
    assert sorted(report.ignored) == ["sp_discriminator.sp_discriminator_layer_1.bias", "sp_discriminator.sp_discriminator_layer_1.weight"]
    torch.testing.assert_close(model.shared.shared_1.weight, state["shared.shared_1.weight"])


def test_adversarial_checkpoint_is_recognised() -> None:
    config = infer_config(_original_state("misa_glove_adv_urfunny"))
    assert config.similarity == "adversarial" and config.num_classes == 2 and config.hidden_size == 64


def test_wrong_shape_and_missing_key_are_listed(tmp_path: Path) -> None:
    state = _original_state()
    model = MISA(infer_config(state))
    broken = dict(state)
    broken["shared.shared_1.weight"] = torch.zeros(128, 64)
    del broken["recon_v.recon_v_1.bias"]
    broken["extra.layer.weight"] = torch.zeros(2)
    path = tmp_path / "broken.safetensors"
    save_file(broken, str(path))
    with pytest.raises(CheckpointError) as info:
        import_state_dict(model, read_state_dict(path), source=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "1 missing key(s): recon_v.recon_v_1.bias" in message
    assert "1 unexpected key(s): extra.layer.weight" in message
    assert "shared.shared_1.weight: file (128, 64) vs model (128, 128)" in message


def test_unsafe_torch_file_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.std"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "missing.std")


def test_bert_checkpoint_ignores_pooler_and_text_layer_norm() -> None:
    import json

    meta = json.loads((GOLDEN / "misa_bert_cmd_mosi.json").read_text())
    model = MISA(config_from_golden(meta))
    report = import_state_dict(model, _original_state("misa_bert_cmd_mosi"))
    assert {k.split(".")[0] for k in report.ignored} == {"sp_discriminator", "tlayer_norm", "bertmodel"}
    assert all(k.startswith("bertmodel.pooler") for k in report.ignored if k.startswith("bertmodel"))
