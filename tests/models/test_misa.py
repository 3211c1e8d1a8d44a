"""MISA model behaviour beyond the golden vectors: padding, state, the real MiniLM encoder."""

from __future__ import annotations

import copy

import pytest
import torch

from misalatch.models.config import MisaConfig
from misalatch.models.encoders import build_bert
from misalatch.models.misa import MISA
from misalatch.models.outputs import ModelInputs
from tests.conftest import minilm_path


def _glove_inputs(b: int = 3, t: int = 6, d_v: int = 5, d_a: int = 7, seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([t, t - 2, 2])[:b]
    mask = (torch.arange(t)[:, None] < lengths[None, :]).float()
    return ModelInputs(
        visual=torch.randn(t, b, d_v, generator=g) * mask[..., None],
        acoustic=torch.randn(t, b, d_a, generator=g) * mask[..., None],
        lengths=lengths,
        text_ids=torch.where(mask.bool(), torch.randint(2, 20, (t, b), generator=g), torch.ones(t, b, dtype=torch.long)),
    )


def _glove_model(**kw) -> MISA:
    torch.manual_seed(0)
    cfg = MisaConfig(text_encoder="glove", text_input_size=8, vocab_size=20, visual_size=5, acoustic_size=7, hidden_size=16, **kw)
    return MISA(cfg).eval()


def test_padded_steps_do_not_change_the_output() -> None:
    model = _glove_model()
    inputs = _glove_inputs()
    ref = model(inputs).prediction
    noisy = copy.deepcopy(inputs)
    pad = torch.arange(6)[:, None] >= inputs.lengths[None, :]
    noisy.visual[pad] = 123.0
    noisy.acoustic[pad] = -55.0
    noisy.text_ids[pad] = 7
    torch.testing.assert_close(model(noisy).prediction, ref, rtol=0, atol=0)


def test_forward_assigns_nothing_to_the_module() -> None:
    model = _glove_model(similarity="adversarial").train()
    before = {k: v for k, v in vars(model).items() if k != "_modules"}
    keys_before = set(model.state_dict())
    out = model(_glove_inputs(), labels=torch.zeros(3, 1))
    assert out.losses is not None and out.domain_logits is not None
    assert {k: v for k, v in vars(model).items() if k != "_modules"}.keys() == before.keys()
    assert set(model.state_dict()) == keys_before


def test_frozen_embeddings_really_freeze() -> None:
    model = _glove_model(freeze_embeddings=True).train()
    out = model(_glove_inputs(), labels=torch.zeros(3, 1))
    out.losses.total.backward()
    assert model.embed.weight.grad is None
    assert _glove_model().embed.weight.requires_grad  # default: trainable, as the original ran


def test_classification_head_and_original_names() -> None:
    model = _glove_model(num_classes=2)
    names = set(model.state_dict())
    for name in ("private_a.private_a_3.weight", "fusion.fusion_layer_3.weight", "project_t.project_t_layer_norm.bias",
                 "transformer_encoder.layers.0.self_attn.in_proj_weight", "trnn2.weight_hh_l0_reverse"):
        assert name in names
    assert not any(n.startswith("sp_discriminator") for n in names)
    out = model(_glove_inputs(), labels=torch.tensor([0, 1, 1]))
    assert out.prediction.shape == (3, 2)


def test_bert_freeze_rules_with_a_shallow_encoder(caplog: pytest.LogCaptureFixture) -> None:
    bert_cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16, vocab_size=50,
                    max_position_embeddings=20)
    cfg = MisaConfig(text_encoder="bert", text_input_size=32, bert_config=bert_cfg, visual_size=5, acoustic_size=7,
                     hidden_size=16, bert_freeze="layers:0")
    model = MISA(cfg)
    layer0 = all(not p.requires_grad for p in model.bertmodel.encoder.layer[0].parameters())
    layer1 = all(p.requires_grad for p in model.bertmodel.encoder.layer[1].parameters())
    assert layer0 and layer1 and model.bertmodel.embeddings.word_embeddings.weight.requires_grad
    with caplog.at_level("WARNING"):
        MISA(cfg.replace(bert_freeze="layers:8"))
    assert "freezes every encoder layer" in caplog.text
    frozen_all = MISA(cfg.replace(bert_freeze="all"))
    assert not any(p.requires_grad for p in frozen_all.bertmodel.parameters())


def test_real_minilm_encoder_on_real_sentences() -> None:
    """The BERT path with the offline MiniLM package (hub switched off) on real MOSI sentences."""
    from transformers import AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    bert = build_bert(path=str(path))
    assert bert.config.hidden_size == 384
    sentences = ["anyhow it was really good", "i thought it was terrible", "the acting was okay i guess but the plot"]
    enc = tokenizer([s.split() for s in sentences], is_split_into_words=True, padding=True, return_tensors="pt")
    words = torch.tensor([len(s.split()) for s in sentences])
    b, t = len(sentences), int(words.max())
    torch.manual_seed(0)
    cfg = MisaConfig(text_encoder="bert", text_input_size=384, bert_config=None, visual_size=4, acoustic_size=3, hidden_size=16)
    model = MISA(cfg, bert=bert).eval()
    inputs = ModelInputs(
        visual=torch.randn(t, b, 4), acoustic=torch.randn(t, b, 3), lengths=words,
        bert_input_ids=enc["input_ids"], bert_attention_mask=enc["attention_mask"], bert_token_type_ids=enc["token_type_ids"],
    )
    out = model(inputs, labels=torch.tensor([[2.0], [-2.0], [0.0]]))
    assert out.prediction.shape == (3, 1) and torch.isfinite(out.losses.total)
    # the text vector is the masked mean of the last layer including [CLS]/[SEP], padding excluded
    hidden = bert(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(2).float()
    x_t = (hidden * m).sum(1) / m.sum(1)
    torch.testing.assert_close(out.utt.t, model.project_t(x_t), rtol=1e-5, atol=1e-5)
    # a sentence alone gives the same vector as inside a padded batch
    alone = tokenizer([sentences[0].split()], is_split_into_words=True, return_tensors="pt")
    h0 = bert(**alone).last_hidden_state.mean(1)
    torch.testing.assert_close(h0[0], x_t[0], rtol=1e-4, atol=1e-5)
