"""The original MMLatch model (MMLATCH.md §6, §2): sizes, wiring, dropout, padding, mechanism."""

from __future__ import annotations

import copy

import pytest
import torch

from misalatch.errors import ConfigError
from misalatch.models.mmlatch import MMLatch, MMLatchConfig
from misalatch.models.outputs import ModelInputs
from misalatch.models.registry import get_model, model_names

MOSEI = dict(text_encoder="vectors", text_input_size=300, visual_size=35, acoustic_size=74)
MOSI = dict(MOSEI, visual_size=47)
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16, vocab_size=60,
                 max_position_embeddings=64)


pytestmark = pytest.mark.usefixtures("one_thread")


def lstm(i: int, h: int) -> int:
    """Parameters of a 1-layer unidirectional LSTM (MMLATCH.md §4.7): 4h(in + h) + 8h."""
    return 4 * h * (i + h) + 8 * h


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs_for(cfg: MMLatchConfig, lengths=(7, 4, 2), seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    t, b = int(lengths_t.max()), len(lengths)
    valid = (torch.arange(t)[:, None] < lengths_t[None, :]).float()[..., None]
    kw = {}
    if cfg.text_encoder == "vectors":
        kw["text_vectors"] = torch.randn(t, b, cfg.text_input_size, generator=g) * valid
    else:
        kw["text_ids"] = torch.where(valid[..., 0].bool(), torch.randint(2, cfg.vocab_size, (t, b), generator=g),
                                     torch.ones(t, b, dtype=torch.long))
    return ModelInputs(visual=torch.randn(t, b, cfg.visual_size, generator=g) * valid,
                       acoustic=torch.randn(t, b, cfg.acoustic_size, generator=g) * valid, lengths=lengths_t, **kw)


def tiny(**kw) -> MMLatchConfig:
    base = dict(text_encoder="vectors", text_input_size=6, visual_size=5, acoustic_size=4, hidden_size=8)
    return MMLatchConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------
def test_parameter_counts_follow_the_spec_formulas() -> None:
    """MOSEI sizes (GloVe 300, COVAREP 74, FACET 35), h = 100, counted from MMLATCH.md §6 piece by piece."""
    h = 100
    attention = 3 * h * h  # Q, K, V bias-free h x h
    encoder = {d: 2 * lstm(d, h) + attention for d in (300, 74, 35)}  # BiLSTM + self-attention
    assert encoder == {300: 351_600, 74: 170_800, 35: 139_600}
    generators = sum(2 * lstm(h, d) for d in (300, 74, 35))  # two sources per target, LSTM(100 -> d_x)
    linear_generators = sum(2 * (h * d + d) for d in (300, 74, 35))
    fuser = 3 * 6 * h * h + attention  # three symmetric pairs + the trimodal attention
    head = 2 * lstm(7 * h, h) + 3 * (2 * h) ** 2 + (2 * h + 1)  # BiLSTM(700 -> 100), attention(200), Linear(200 -> 1)
    base = sum(encoder.values()) + fuser + head
    assert (generators, linear_generators, fuser, head) == (1_107_352, 82_618, 210_000, 761_801)

    model = MMLatch(MMLatchConfig(**MOSEI))
    assert {m: count(model.encoders[m]) for m in ("text", "acoustic", "visual")} == {
        "text": encoder[300], "acoustic": encoder[74], "visual": encoder[35]}
    assert count(model.feedback) == generators
    assert count(model.fuser) == fuser and count(model.head) == head
    assert count(model) == base + generators == 2_741_153
    assert count(MMLatch(MMLatchConfig(**MOSEI, mask_generator="linear"))) == base + linear_generators == 1_716_419
    assert count(MMLatch(MMLatchConfig(**MOSEI, feedback=False))) == base == 1_633_801
    # MOSI's 47 visual features change the visual encoder and the two generators for the visual target
    mosi = base - encoder[35] + 2 * lstm(47, h) + attention - 2 * lstm(h, 35) + 2 * lstm(h, 47) + generators
    assert count(MMLatch(MMLatchConfig(**MOSI))) == mosi == 2_768_417


def test_parameter_names_follow_the_feedback_convention() -> None:
    names = set(dict(MMLatch(tiny()).named_parameters()))
    assert "feedback.text.acoustic.lstm.weight_ih_l0" in names and "feedback.visual.text.lstm.weight_hh_l0" in names
    assert not any(n.startswith("feedback.text.text") for n in names)  # a target never drives its own mask
    assert "feedback.acoustic.visual.linear.weight" in set(dict(MMLatch(tiny(mask_generator="linear")).named_parameters()))
    assert {"fuser.ta.qx.weight", "fuser.tav.q.weight", "head.out.weight", "encoders.text.attention.q.weight"} <= names
    assert not any(n.endswith("bias") for n in names if ".attention." in n or n.startswith("fuser."))  # bias-free


def test_shapes_of_prediction_and_masks() -> None:
    cfg = MMLatchConfig(**MOSEI)
    out = MMLatch(cfg)(inputs_for(cfg), labels=torch.zeros(3, 1))
    assert out.prediction.shape == (3, 1)
    assert (out.masks.text.shape, out.masks.visual.shape, out.masks.acoustic.shape) == ((7, 3, 300), (7, 3, 35), (7, 3, 74))
    assert out.losses.total.shape == () and set(out.losses.as_floats()) == {"task", "total"}
    out = MMLatch(tiny(num_classes=2))(inputs_for(tiny()))
    assert out.prediction.shape == (3, 2)


# ----------------------------------------------------------------------------------------------
# behaviour
# ----------------------------------------------------------------------------------------------
def test_evaluation_masks_lie_in_the_unit_interval_and_are_zero_at_padding() -> None:
    cfg = tiny()
    inputs = inputs_for(cfg)
    with torch.no_grad():
        masks = MMLatch(cfg).eval()(inputs).masks
    valid = torch.arange(7)[:, None] < inputs.lengths[None, :]
    for mask in (masks.text, masks.visual, masks.acoustic):
        assert float(mask[valid].min()) > 0.0 and float(mask[valid].max()) < 1.0
        assert float(mask[~valid].abs().max()) == 0.0


def test_evaluation_is_deterministic_unless_the_original_eval_dropout_is_requested() -> None:
    cfg = tiny()
    torch.manual_seed(0)
    model = MMLatch(cfg).eval()
    inputs = inputs_for(cfg)
    first, second = model(inputs), model(inputs)
    torch.testing.assert_close(first.prediction, second.prediction, rtol=0, atol=0)

    stochastic = MMLatch(cfg.replace(mask_dropout_at_eval=True)).eval()
    stochastic.load_state_dict(model.state_dict())
    a, b = stochastic(inputs), stochastic(inputs)
    assert not torch.equal(a.prediction, b.prediction)
    assert not torch.equal(a.masks.visual, b.masks.visual)
    valid = first.masks.visual > 0
    kept = valid & (a.masks.visual > 0)
    assert 0 < int(kept.sum()) < int(valid.sum())  # some entries dropped ...
    torch.testing.assert_close(a.masks.visual[kept], first.masks.visual[kept] / (1 - cfg.mask_dropout))  # ... kept rescaled
    # only the masks are stochastic: the same masks give the same prediction
    fixed = lambda name, mask: torch.full_like(mask, 0.5)  # noqa: E731
    torch.testing.assert_close(stochastic(inputs, mask_transform=fixed).prediction,
                               stochastic(inputs, mask_transform=fixed).prediction, rtol=0, atol=0)


def test_forward_assigns_nothing_to_the_module() -> None:
    model = MMLatch(tiny()).train()
    before = {k: v for k, v in vars(model).items() if k != "_modules"}
    modules = {name: dict(vars(m)) for name, m in model.named_modules()}
    model(inputs_for(tiny()), labels=torch.zeros(3, 1)).losses.total.backward()
    assert {k: v for k, v in vars(model).items() if k != "_modules"} == before
    after = {name: dict(vars(m)) for name, m in model.named_modules()}
    assert after.keys() == modules.keys()
    for name in modules:
        assert after[name].keys() == modules[name].keys(), name


def test_identity_masks_give_the_model_without_feedback() -> None:
    """Masks replaced by ones: the second pass sees the raw inputs, as the no-feedback model does."""
    cfg = tiny()
    torch.manual_seed(1)
    model = MMLatch(cfg).eval()
    plain = MMLatch(cfg.replace(feedback=False)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("feedback.")})
    inputs = inputs_for(cfg)
    ones = lambda name, mask: torch.ones_like(mask)  # noqa: E731
    torch.testing.assert_close(model(inputs, mask_transform=ones).prediction, plain(inputs).prediction,
                               rtol=1e-6, atol=1e-6)
    assert not torch.allclose(model(inputs).prediction, plain(inputs).prediction)


def test_padding_is_invisible_with_true_lengths_and_data_with_the_length_quirk() -> None:
    cfg = tiny()
    torch.manual_seed(2)
    model = MMLatch(cfg).eval()
    inputs = inputs_for(cfg, lengths=(7, 3))
    alone = ModelInputs(visual=inputs.visual[:3, 1:], acoustic=inputs.acoustic[:3, 1:], lengths=inputs.lengths[1:],
                        text_vectors=inputs.text_vectors[:3, 1:])
    torch.testing.assert_close(model(inputs).prediction[1], model(alone).prediction[0], rtol=1e-5, atol=1e-6)
    noisy = copy.deepcopy(inputs)
    noisy.visual[3:, 1] = 50.0  # garbage in the padded steps of sample 1
    torch.testing.assert_close(model(noisy).prediction, model(inputs).prediction, rtol=0, atol=0)

    quirk = MMLatch(cfg.replace(length_quirk=True)).eval()
    quirk.load_state_dict(model.state_dict())
    assert not torch.allclose(quirk(inputs).prediction[1], model(inputs).prediction[1])
    torch.testing.assert_close(quirk(alone).prediction, model(alone).prediction, rtol=0, atol=0)  # no padding


def test_gradients_reach_the_generators_and_the_first_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is detached (MMLATCH.md §2): the loss reaches the generators and the first-pass encodings."""
    seen = []
    original = MMLatch.masks

    def keep_first_pass(self, high, low):
        for m in ("text", "visual", "acoustic"):
            high.get(m).retain_grad()
        seen.append(high)
        return original(self, high, low)

    monkeypatch.setattr(MMLatch, "masks", keep_first_pass)
    model = MMLatch(tiny()).train()
    model(inputs_for(tiny()), labels=torch.ones(3, 1)).losses.total.backward()
    for name, param in model.named_parameters():
        if name.startswith("feedback.") and "weight" in name:
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    (high,) = seen
    for m in ("text", "visual", "acoustic"):
        assert float(high.get(m).grad.abs().sum()) > 0, m


def test_glove_text_is_frozen_by_default_and_l1_is_the_default_loss() -> None:
    cfg = tiny(text_encoder="glove", vocab_size=20)
    model = MMLatch(cfg, embedding=torch.randn(20, 6))
    assert not model.embed.weight.requires_grad
    out = model.eval()(inputs_for(cfg), labels=torch.full((3, 1), 2.0))
    torch.testing.assert_close(out.losses.task, (out.prediction - 2.0).abs().mean())
    assert MMLatch(cfg.replace(freeze_embeddings=False)).embed.weight.requires_grad


def test_bert_text_uses_word_vectors_from_wordpieces() -> None:
    """BERT's last hidden states pooled per word (the feedback rules); masks per word."""
    from tests.models.test_feedback import bert_batch

    torch.manual_seed(0)
    cfg = MMLatchConfig(text_encoder="bert", text_input_size=32, bert_config=TINY_BERT, visual_size=5, acoustic_size=7,
                        hidden_size=8)
    model = MMLatch(cfg).eval()
    assert not any(p.requires_grad for p in model.bertmodel.parameters())  # bert_freeze=all by default
    for alignment in ("word", "token", "none"):
        inputs = bert_batch(alignment=alignment)
        out = model(inputs)
        assert out.prediction.shape == (3, 1) and torch.isfinite(out.prediction).all()
        assert out.masks.text.shape[1:] == (3, 32)
        assert out.masks.visual.shape[:2] == (int(inputs.visual_lengths.max()), 3)
    word = bert_batch(alignment="word")
    assert model(word).masks.text.shape[0] == int(word.lengths.max())


def test_unaligned_vectors_resample_masks_and_encodings() -> None:
    cfg = tiny()
    g = torch.Generator().manual_seed(0)
    len_t, len_v, len_a = torch.tensor([3, 5]), torch.tensor([8, 2]), torch.tensor([4, 6])
    inputs = ModelInputs(visual=torch.randn(8, 2, 5, generator=g), acoustic=torch.randn(6, 2, 4, generator=g),
                         lengths=len_t, text_vectors=torch.randn(5, 2, 6, generator=g), lengths_v=len_v, lengths_a=len_a,
                         alignment="none")
    out = MMLatch(cfg).eval()(inputs)
    assert out.masks.visual.shape == (8, 2, 5) and out.masks.acoustic.shape == (6, 2, 4)
    assert float(out.masks.visual[2:, 1].detach().abs().max()) == 0.0  # beyond the sample's own visual length


def test_mask_export_reads_the_mmlatch_masks() -> None:
    from types import SimpleNamespace

    from misalatch.errors import MisalatchError
    from misalatch.evaluation.masks import collect_masks

    cfg = tiny()
    batch = SimpleNamespace(inputs=inputs_for(cfg), labels=torch.zeros(3, 1), ids=["a", "b", "c"])
    collected = collect_masks(MMLatch(cfg), [batch])
    assert collected.feedback == "mmlatch" and collected.time_axis["text"] == "word"
    assert [m.shape for m in collected.masks["text"]] == [(7, 6), (4, 6), (2, 6)]
    assert [m.shape for m in collected.masks["acoustic"]] == [(7, 4), (4, 4), (2, 4)]
    with pytest.raises(MisalatchError, match="mmlatch-nofeedback"):
        collect_masks(MMLatch(cfg.replace(feedback=False)), [batch])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="mask_generator"):
        MMLatchConfig(text_encoder="vectors", mask_generator="gru")
    with pytest.raises(ConfigError, match="mask_dropout"):
        MMLatchConfig(text_encoder="vectors", mask_dropout=1.0)
    with pytest.raises(ConfigError, match="did you mean 'mask_dropout'"):
        MMLatchConfig.from_dict({"mask_dropuot": 0.1})
    with pytest.raises(ConfigError, match="vocab_size"):
        MMLatchConfig(text_encoder="glove")


def test_registry_builds_both_models_by_name() -> None:
    assert {"misa", "mmlatch"} <= set(model_names())
    spec = get_model("mmlatch")
    model = spec.build(spec.config_from_dict(tiny().to_dict()))
    assert isinstance(model, MMLatch) and spec.recipe == "mmlatch"
    with pytest.raises(ConfigError, match=r"unknown model 'mult'; valid: misa, mmlatch"):
        get_model("mult")
    with pytest.raises(ConfigError, match="needs a MisaConfig"):
        get_model("misa").build(tiny())


# ----------------------------------------------------------------------------------------------
# mechanism: the masks gate a planted distractor (the task of test_feedback_mechanism.py)
# ----------------------------------------------------------------------------------------------
def _train_and_measure(generator: str, steps: int, *, miswire: bool = False) -> list[float]:
    """Held-out margins (mean visual mask on the informative group − on the noise group), per cue.

    Task and measure of ``tests/models/test_feedback_mechanism.py``: the acoustic cue names which
    visual group carries the label. ``miswire`` feeds the visual (and text) targets' generators the
    text encoding in place of the acoustic one, so no generator sees the cue.
    Measured (seed 0, batch 32, lr 1e-2, h 16): lstm 0.08 / 0.12 after 60 steps (0.09 / 0.14 after
    100; the LSTM generator's σ lies in (0.27, 0.73), MMLATCH.md §4.2 item 11), linear 0.30-0.34 after
    100 steps, miswired −0.01 / 0.01.
    """
    from misalatch.models.mmlatch import _Sequences
    from tests.models.test_feedback_mechanism import D_A, D_E, D_V, GROUPS, T, batch, make_task

    torch.manual_seed(0)
    cfg = MMLatchConfig(text_encoder="vectors", text_input_size=D_E, visual_size=D_V, acoustic_size=D_A,
                        hidden_size=16, mask_generator=generator, regression_loss="mse")
    model = MMLatch(cfg)
    original = MMLatch.masks

    def masks(self, high, low):
        if miswire:
            high = _Sequences(lengths=high.lengths, text=high.text, visual=high.visual, acoustic=high.text)
        return original(self, high, low)

    train, held_out = make_task(512, seed=1), make_task(256, seed=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MMLatch, "masks", masks)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, 512, (32,), generator=g)
            optimizer.zero_grad()
            model(batch(train, idx), labels=train["label"][idx]).losses.total.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            visual = model(batch(held_out, torch.arange(256))).masks.visual
    valid = torch.arange(T)[:, None] < held_out["lengths"][None, :]
    margins = []
    for cue in (0, 1):
        steps_ = visual[valid & (held_out["cue"][None, :] == cue)]
        margins.append(float(steps_[:, GROUPS[cue]].mean() - steps_[:, GROUPS[1 - cue]].mean()))
    return margins


@pytest.mark.parametrize("generator, steps, threshold", [("lstm", 60, 0.05), ("linear", 40, 0.15)])
def test_visual_masks_select_the_group_the_acoustic_cue_names(generator: str, steps: int, threshold: float) -> None:
    margins = _train_and_measure(generator, steps)
    assert min(margins) > threshold, f"{generator}: margins per cue {margins}"


def test_masks_without_the_cue_fail_the_same_check() -> None:
    margins = _train_and_measure("lstm", 60, miswire=True)
    assert min(margins) < 0.05, f"miswired margins per cue {margins}"


def test_padded_glove_steps_are_zero_vectors_under_the_length_quirk() -> None:
    """The original padded precomputed GloVe vectors with zeros; the <pad> row (id 1) must not leak in
    when padding is data (length_quirk)."""
    cfg = tiny(text_encoder="glove", vocab_size=12, length_quirk=True)
    torch.manual_seed(3)
    model = MMLatch(cfg).eval()
    inputs = inputs_for(cfg, lengths=(7, 3))
    low = model.low_level(inputs)
    assert bool((low.text[3:, 1] == 0).all()) and bool((low.text[:3, 1] != 0).any())
    before = model(inputs).prediction
    with torch.no_grad():
        model.embed.weight[1] = 100.0  # whatever the <pad> row holds
    torch.testing.assert_close(model(inputs).prediction, before, rtol=0, atol=0)
