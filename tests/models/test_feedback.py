"""MMLatch feedback inside MISA: every variant, both text paths, all alignments (MMLATCH.md §4.11)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from misalatch.errors import ConfigError
from misalatch.models.config import FEEDBACK_VARIANTS, MisaConfig
from misalatch.models.feedback import (
    FEEDBACK,
    MODALITIES,
    FeedbackBlock,
    build_feedback,
    combine_masks,
    other_modalities,
    pool_steps,
    time_axes,
)
from misalatch.models.misa import MISA
from misalatch.models.outputs import ModelInputs
from tests.conftest import minilm_path

VARIANTS = ("sequence", "sequence-mlp", "static", "static-projected")
CLS, SEP, PAD = 2, 3, 0
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16, vocab_size=60,
                 max_position_embeddings=64)
ONES = lambda name, mask: torch.ones_like(mask)  # noqa: E731  (the identity-mask hook)


# ----------------------------------------------------------------------------------------------
# tiny inputs and models
# ----------------------------------------------------------------------------------------------
def _av(t: int, lengths: torch.Tensor, d: int, g: torch.Generator) -> torch.Tensor:
    valid = (torch.arange(t)[:, None] < lengths[None, :]).float()
    return torch.randn(t, len(lengths), d, generator=g) * valid[..., None]


def glove_batch(words: tuple[int, ...] = (6, 4, 2), *, d_v: int = 5, d_a: int = 7, alignment: str = "word",
                av_lengths: tuple[tuple[int, ...], tuple[int, ...]] = ((7, 2, 4), (3, 9, 5)), seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(words)
    t = int(lengths.max())
    valid = torch.arange(t)[:, None] < lengths[None, :]
    text_ids = torch.where(valid, torch.randint(2, 20, (t, len(words)), generator=g), torch.ones(t, len(words), dtype=torch.long))
    if alignment == "none":
        len_v, len_a = torch.tensor(av_lengths[0]), torch.tensor(av_lengths[1])
        return ModelInputs(visual=_av(int(len_v.max()), len_v, d_v, g), acoustic=_av(int(len_a.max()), len_a, d_a, g),
                           lengths=lengths, text_ids=text_ids, lengths_v=len_v, lengths_a=len_a, alignment="none")
    return ModelInputs(visual=_av(t, lengths, d_v, g), acoustic=_av(t, lengths, d_a, g), lengths=lengths, text_ids=text_ids)


def bert_batch(words: tuple[int, ...] = (5, 3, 1), *, d_v: int = 5, d_a: int = 7, alignment: str = "word",
               av_lengths: tuple[tuple[int, ...], tuple[int, ...]] = ((7, 2, 4), (3, 9, 5)), seed: int = 0) -> ModelInputs:
    """[CLS] wordpieces [SEP] with 1-2 pieces per word; A/V per word, per BERT position or unaligned."""
    g = torch.Generator().manual_seed(seed)
    ids_rows, wp_rows = [], []
    for n in words:
        ids, wp = [CLS], [-1]
        for w in range(n):
            k = int(torch.randint(1, 3, (1,), generator=g))
            ids += torch.randint(4, TINY_BERT["vocab_size"], (k,), generator=g).tolist()
            wp += [w] * k
        ids_rows.append(ids + [SEP])
        wp_rows.append(wp + [-1])
    w_max, b = max(map(len, ids_rows)), len(words)
    input_ids = torch.full((b, w_max), PAD)
    wp2word = torch.full((b, w_max), -1)
    attention = torch.zeros(b, w_max, dtype=torch.long)
    for i, (ids, wp) in enumerate(zip(ids_rows, wp_rows)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        wp2word[i, : len(wp)] = torch.tensor(wp)
        attention[i, : len(ids)] = 1
    bert = dict(bert_input_ids=input_ids, bert_attention_mask=attention, bert_token_type_ids=torch.zeros_like(input_ids),
                bert_wp2word=wp2word)
    if alignment == "word":
        lengths = torch.tensor(words)
        t = int(lengths.max())
        return ModelInputs(visual=_av(t, lengths, d_v, g), acoustic=_av(t, lengths, d_a, g), lengths=lengths, **bert)
    lengths = attention.sum(1)
    if alignment == "token":
        return ModelInputs(visual=_av(w_max, lengths, d_v, g), acoustic=_av(w_max, lengths, d_a, g), lengths=lengths,
                           alignment="token", **bert)
    len_v, len_a = torch.tensor(av_lengths[0]), torch.tensor(av_lengths[1])
    return ModelInputs(visual=_av(int(len_v.max()), len_v, d_v, g), acoustic=_av(int(len_a.max()), len_a, d_a, g),
                       lengths=lengths, lengths_v=len_v, lengths_a=len_a, alignment="none", **bert)


def glove_config(feedback: str = "none", **kw) -> MisaConfig:
    base = dict(text_encoder="glove", text_input_size=8, vocab_size=20, visual_size=5, acoustic_size=7, hidden_size=16)
    return MisaConfig(**{**base, "feedback": feedback, **kw})


def bert_config(feedback: str = "none", **kw) -> MisaConfig:
    base = dict(text_encoder="bert", text_input_size=32, bert_config=TINY_BERT, visual_size=5, acoustic_size=7, hidden_size=16)
    return MisaConfig(**{**base, "feedback": feedback, **kw})


def make_model(config: MisaConfig, seed: int = 0) -> MISA:
    torch.manual_seed(seed)
    return MISA(config)


def batch_for(config: MisaConfig, alignment: str = "word", **kw) -> ModelInputs:
    maker = bert_batch if config.text_encoder == "bert" else glove_batch
    return maker(d_v=config.visual_size, d_a=config.acoustic_size, alignment=alignment, **kw)


def valid_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t)[:, None] < lengths[None, :]


# ----------------------------------------------------------------------------------------------
# registry, names, parameter counts (§4.7, §4.10)
# ----------------------------------------------------------------------------------------------
def test_registry_lists_every_variant_and_rejects_unknown_names() -> None:
    assert FEEDBACK.names() == VARIANTS
    assert set(FEEDBACK_VARIANTS) == {"none", *FEEDBACK.names()}
    with pytest.raises(ConfigError, match="sequence, sequence-mlp, static, static-projected"):
        FEEDBACK.get("dynamic")
    with pytest.raises(ConfigError, match="plain MISA"):
        build_feedback(glove_config("none"))
    with pytest.raises(ValueError, match="registered twice"):
        FEEDBACK.register("static")(lambda config: None)


PARAMETER_COUNTS = {  # MMLATCH.md §4.7: (d_b, d_v) -> per variant
    (768, 47): (5_965_080, 6_588_674, 294_474, 229_362),
    (768, 35): (5_832_216, 6_451_802, 263_250, 226_266),
    (384, 47): (1_862_424, 2_042_498, 154_314, 130_290),
    (384, 35): (1_784_856, 1_960_922, 136_914, 127_194),
}


@pytest.mark.parametrize("sizes", list(PARAMETER_COUNTS))
def test_parameter_counts_of_the_spec(sizes: tuple[int, int]) -> None:
    d_b, d_v = sizes
    for variant, expected in zip(VARIANTS, PARAMETER_COUNTS[sizes]):
        cfg = MisaConfig(text_encoder="bert", text_input_size=d_b, visual_size=d_v, acoustic_size=74, feedback=variant)
        assert sum(p.numel() for p in build_feedback(cfg).parameters()) == expected, (variant, sizes)


def test_generator_shapes_and_parameter_names_for_mosi_bert_base() -> None:
    cfg = MisaConfig(text_encoder="bert", text_input_size=768, visual_size=47, acoustic_size=74, feedback="sequence")
    block = build_feedback(cfg)
    per_generator = {("text", "acoustic"): 2_820_096, ("text", "visual"): 2_654_208, ("acoustic", "text"): 249_824,
                     ("acoustic", "visual"): 50_320, ("visual", "text"): 153_596, ("visual", "acoustic"): 37_036}
    shapes = {("text", "acoustic"): (148, 768), ("text", "visual"): (94, 768), ("acoustic", "text"): (768, 74),
              ("acoustic", "visual"): (94, 74), ("visual", "text"): (768, 47), ("visual", "acoustic"): (148, 47)}
    for (target, source), count in per_generator.items():
        lstm = block.generator(target, source).lstm
        assert (lstm.input_size, lstm.hidden_size) == shapes[target, source]
        assert not lstm.bidirectional and lstm.num_layers == 1
        assert sum(p.numel() for p in lstm.parameters()) == count
    names = {n for n, _ in build_feedback(cfg.replace(feedback="sequence-mlp")).named_parameters()}
    assert {"text.acoustic.lstm.weight_ih_l0", "visual.text.lstm.bias_hh_l0", "mlp.text.linear.weight",
            "mlp.visual.norm.bias", "mlp.acoustic.linear.bias"} <= names
    static = dict(build_feedback(cfg.replace(feedback="static")).named_parameters())
    assert static["acoustic.visual.linear.weight"].shape == (74, 94)
    projected = dict(build_feedback(cfg.replace(feedback="static-projected")).named_parameters())
    assert projected["text.visual.linear.weight"].shape == (768, 128) and len(projected) == 12


def test_model_parameter_names_and_orthogonal_generator_init() -> None:
    model = make_model(glove_config("sequence-mlp"))
    names = [n for n, _ in model.named_parameters() if n.startswith("feedback.")]
    assert "feedback.visual.acoustic.lstm.weight_hh_l0" in names and "feedback.mlp.text.norm.weight" in names
    for name, param in model.named_parameters():
        if name.startswith("feedback.") and "weight_hh" in name:  # (4h, h): orthonormal columns
            eye = torch.eye(param.shape[1])
            torch.testing.assert_close(param.t() @ param, eye, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# combination, ranges, shapes
# ----------------------------------------------------------------------------------------------
def test_combine_semantics_on_a_hand_made_example() -> None:
    a = torch.tensor([0.2, 0.8, 0.5, 1.0])
    b = torch.tensor([0.6, 0.4, 0.5, 0.0])
    torch.testing.assert_close(combine_masks(a, b, "mean"), torch.tensor([0.4, 0.6, 0.5, 0.5]))
    torch.testing.assert_close(combine_masks(a, b, "product"), torch.tensor([0.12, 0.32, 0.25, 0.0]))
    torch.testing.assert_close(combine_masks(a, b, "max"), torch.tensor([0.6, 0.8, 0.5, 1.0]))
    with pytest.raises(ConfigError):
        combine_masks(a, b, "min")


def _source_masks(model: MISA, inputs: ModelInputs):
    """σ_{y→x} on each target's step axis, recomputed step by step through the block's methods."""
    block: FeedbackBlock = model.feedback
    low = model.low_level(inputs)
    axes = time_axes(model.config, low, inputs)
    sources = block.high_level(model.first_pass(low, inputs), axes)
    if block.mlp is not None:
        sources = {m: type(s)(block.mlp[m](s.value), s.lengths) for m, s in sources.items()}
    return block, axes, block.source_masks(sources, axes)


@pytest.mark.parametrize("how", ["mean", "product", "max"])
@pytest.mark.parametrize("text", ["glove", "bert"])
def test_model_masks_are_the_combination_of_the_two_source_sigmoids(how: str, text: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)("sequence", mask_combine=how)
    model = make_model(cfg).eval()
    inputs = batch_for(cfg)
    with torch.no_grad():
        masks = model(inputs).masks
        block, axes, per_source = _source_masks(model, inputs)
    for target in MODALITIES:
        y, z = (per_source[target][s] for s in other_modalities(target))
        valid = valid_mask(axes.lengths[target], y.shape[0])
        assert y.shape == z.shape and bool(((y[valid] > 0) & (y[valid] < 1)).all())
        assert torch.count_nonzero(y[~valid]) == 0
        expected = block.to_layout(target, combine_masks(y, z, how), axes)
        if target == "text" and text == "bert":
            expected = torch.where(axes.text_target_step[..., None] >= 0, expected, torch.ones(()))
        torch.testing.assert_close(getattr(masks, target), expected, rtol=0, atol=0)
    if how == "mean":  # spelled out once: visual mask = ½(σ_{t→v} + σ_{a→v}) at valid steps
        valid = valid_mask(inputs.lengths, masks.visual.shape[0])
        manual = 0.5 * (per_source["visual"]["text"] + per_source["visual"]["acoustic"])
        torch.testing.assert_close(masks.visual[valid], manual[valid], rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text", ["glove", "bert"])
def test_eval_masks_lie_in_the_unit_interval_and_padding_is_zero(variant: str, text: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)(variant)
    model = make_model(cfg).eval()
    inputs = batch_for(cfg)
    with torch.no_grad():
        masks = model(inputs).masks
    for name in ("visual", "acoustic") + (("text",) if text == "glove" else ()):
        mask = getattr(masks, name)
        valid = valid_mask(inputs.lengths, mask.shape[0])
        inside = mask[valid]
        assert bool(((inside > 0) & (inside < 1)).all()), name
        assert torch.count_nonzero(mask[~valid]) == 0, name  # padded steps stay zero after masking
    if text == "bert":
        content = inputs.bert_wp2word >= 0
        assert bool(((masks.text[content] > 0) & (masks.text[content] < 1)).all())
        assert bool((masks.text[~content] == 1).all())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dataset, d_v", [("mosi", 47), ("mosei", 35)])
def test_mask_shapes_with_mosi_and_mosei_feature_sizes(variant: str, dataset: str, d_v: int) -> None:
    cfg = bert_config(variant, visual_size=d_v, acoustic_size=74)
    model = make_model(cfg).eval()
    inputs = batch_for(cfg)
    with torch.no_grad():
        out = model(inputs, labels=torch.zeros(3, 1))
    b, w = inputs.bert_input_ids.shape
    t = int(inputs.lengths.max())
    assert out.masks.text.shape == (b, w, 32)
    assert out.masks.visual.shape == (t, b, d_v) and out.masks.acoustic.shape == (t, b, 74)
    assert torch.isfinite(out.losses.total)
    if variant.startswith("sequence"):
        block: FeedbackBlock = model.feedback
        assert block.generator("text", "visual").lstm.input_size == 2 * d_v
        assert block.generator("visual", "acoustic").lstm.hidden_size == d_v


# ----------------------------------------------------------------------------------------------
# the identity-mask property (§4.11 item 2)
# ----------------------------------------------------------------------------------------------
def _identity_check(none_model: MISA, cfg: MisaConfig, inputs: ModelInputs, *, bert: torch.nn.Module | None = None) -> None:
    model = MISA(cfg, bert=bert) if bert is not None else make_model(cfg, seed=1)
    missing, unexpected = model.load_state_dict(none_model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("feedback.") for k in missing)
    model.eval()
    with torch.no_grad():
        ref = none_model(inputs)
        out = model(inputs, mask_transform=ONES)
        masked = model(inputs)
    torch.testing.assert_close(out.prediction, ref.prediction, rtol=0, atol=1e-5)
    for field in ("utt", "private", "shared", "recon"):
        for m in "tva":
            torch.testing.assert_close(getattr(getattr(out, field), m), getattr(getattr(ref, field), m), rtol=0, atol=1e-5)
    assert all(bool((getattr(out.masks, m) == 1).all()) for m in MODALITIES)
    assert not torch.allclose(masked.prediction, ref.prediction, atol=1e-5)  # the real masks do change things


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text", ["glove", "bert"])
def test_ones_masks_reproduce_the_none_model(variant: str, text: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)("none")
    none_model = make_model(cfg).eval()
    _identity_check(none_model, cfg.replace(feedback=variant), batch_for(cfg))


def test_ones_masks_reproduce_the_none_model_with_the_real_minilm() -> None:
    """The encoder-only BERT call equals the standard forward on the real MiniLM weights."""
    from misalatch.models.encoders import build_bert

    bert = build_bert(path=str(minilm_path()))
    cfg = MisaConfig(text_encoder="bert", text_input_size=384, visual_size=5, acoustic_size=7, hidden_size=16)
    torch.manual_seed(0)
    none_model = MISA(cfg, bert=copy.deepcopy(bert)).eval()
    inputs = bert_batch(d_v=5, d_a=7)
    inputs.bert_input_ids[inputs.bert_attention_mask.bool()] += 1000  # real-looking ids of the 30522 vocabulary
    inputs.bert_input_ids[:, 0], inputs.bert_input_ids[torch.arange(3), inputs.bert_attention_mask.sum(1) - 1] = 101, 102
    _identity_check(none_model, cfg.replace(feedback="sequence"), inputs, bert=bert)


def test_mask_transform_needs_a_feedback_variant() -> None:
    model = make_model(glove_config("none")).eval()
    with pytest.raises(ValueError, match="feedback"):
        model(glove_batch(), mask_transform=ONES)


# ----------------------------------------------------------------------------------------------
# determinism, dropout, state
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_is_deterministic_and_training_masks_are_dropped_out(variant: str) -> None:
    cfg = glove_config(variant, mask_dropout=0.5)
    model = make_model(cfg).eval()
    inputs = glove_batch()
    with torch.no_grad():
        a, b = model(inputs), model(inputs)
    torch.testing.assert_close(a.prediction, b.prediction, rtol=0, atol=0)
    for m in MODALITIES:
        torch.testing.assert_close(getattr(a.masks, m), getattr(b.masks, m), rtol=0, atol=0)
        assert float(getattr(a.masks, m).max()) <= 1.0
    model.train()
    with torch.no_grad():
        c, d = model(inputs), model(inputs)
    assert not torch.equal(c.masks.visual, d.masks.visual)
    kept = c.masks.visual[c.masks.visual > 0]
    assert float(kept.max()) > 1.0  # inverted dropout rescales kept entries by 1/(1-p)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_assigns_nothing_and_state_dict_round_trips(variant: str) -> None:
    cfg = bert_config(variant)
    model = make_model(cfg).train()
    before = {k: v for k, v in vars(model).items() if k != "_modules"}
    fb_before = dict(vars(model.feedback))
    model(batch_for(cfg), labels=torch.zeros(3, 1)).losses.total.backward()
    assert {k: v for k, v in vars(model).items() if k != "_modules"}.keys() == before.keys()
    assert vars(model.feedback).keys() == fb_before.keys()
    clone = make_model(cfg, seed=5)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    inputs = batch_for(cfg, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(clone(inputs).prediction, model(inputs).prediction, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# BERT text: wordpieces, special tokens, padding (§4.4, §4.11 items 6-7)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_bert_text_mask_specials_are_one_and_pieces_share_their_word_mask(variant: str) -> None:
    cfg = bert_config(variant)
    model = make_model(cfg).eval()
    inputs = bert_batch(words=(5, 3, 1))
    with torch.no_grad():
        text = model(inputs).masks.text  # (B, W, d_b)
    wp2word = inputs.bert_wp2word
    assert bool((text[wp2word < 0] == 1).all())  # [CLS], [SEP], padding
    for b in range(3):
        for w in range(int(inputs.lengths[b])):
            pieces = text[b][wp2word[b] == w]
            assert pieces.shape[0] >= 1
            torch.testing.assert_close(pieces, pieces[:1].expand_as(pieces), rtol=0, atol=0)


def test_a_word_level_mask_change_moves_exactly_that_words_pieces() -> None:
    cfg = bert_config("sequence")
    model = make_model(cfg)
    inputs = bert_batch(words=(5, 3, 1))
    block: FeedbackBlock = model.feedback
    axes = time_axes(cfg, model.low_level(inputs), inputs)
    words = torch.rand(5, 3, 32)
    base = block.to_layout("text", words, axes)
    changed = words.clone()
    changed[2, 0] += 0.25  # word 2 of sample 0
    moved = (block.to_layout("text", changed, axes) != base).any(dim=2)  # (B, W)
    expected = torch.zeros_like(moved)
    expected[0] = inputs.bert_wp2word[0] == 2
    assert torch.equal(moved, expected)
    # and word pooling is the mean over the word's pieces
    hidden = torch.randn(3, inputs.bert_input_ids.shape[1], 4)
    pooled = pool_steps(hidden, axes.text_source_step, 5)  # (T, B, 4)
    torch.testing.assert_close(pooled[2, 0], hidden[0][inputs.bert_wp2word[0] == 2].mean(0))
    assert torch.count_nonzero(pooled[3:, 1]) == 0 and torch.count_nonzero(pooled[1:, 2]) == 0


@pytest.mark.parametrize("alignment", ["token", "none"])
def test_bert_text_mask_specials_are_one_in_other_alignments(alignment: str) -> None:
    cfg = bert_config("sequence")
    model = make_model(cfg).eval()
    inputs = bert_batch(alignment=alignment)
    with torch.no_grad():
        out = model(inputs, labels=torch.zeros(3, 1))
    attn = inputs.bert_attention_mask
    content = attn.bool().clone()
    content[:, 0] = False
    content[torch.arange(3), attn.sum(1) - 1] = False
    assert bool((out.masks.text[~content] == 1).all())
    assert bool(((out.masks.text[content] > 0) & (out.masks.text[content] < 1)).all())
    assert out.masks.visual.shape[:2] == inputs.visual.shape[:2] and out.masks.acoustic.shape[:2] == inputs.acoustic.shape[:2]
    assert torch.isfinite(out.losses.total)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text, alignment", [("glove", "word"), ("bert", "word"), ("glove", "none"), ("bert", "none"),
                                             ("bert", "token")])
def test_padding_invariance(variant: str, text: str, alignment: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)(variant)
    model = make_model(cfg).eval()
    inputs = batch_for(cfg, alignment=alignment)
    noisy = copy.deepcopy(inputs)
    for name, lengths in (("visual", inputs.visual_lengths), ("acoustic", inputs.acoustic_lengths)):
        tensor = getattr(noisy, name)
        tensor[~valid_mask(lengths, tensor.shape[0])] = 77.0
    if text == "glove":
        noisy.text_ids[~valid_mask(inputs.lengths, noisy.text_ids.shape[0])] = 9
    else:
        noisy.bert_input_ids[inputs.bert_attention_mask == 0] = 41
    with torch.no_grad():
        ref, out = model(inputs), model(noisy)
    torch.testing.assert_close(out.prediction, ref.prediction, rtol=0, atol=1e-6)
    for name, lengths in (("visual", inputs.visual_lengths), ("acoustic", inputs.acoustic_lengths)):
        torch.testing.assert_close(getattr(out.masks, name), getattr(ref.masks, name), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# unaligned data (§4.6)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text", ["glove", "bert"])
def test_unaligned_inputs(variant: str, text: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)(variant)
    model = make_model(cfg).train()
    inputs = batch_for(cfg, alignment="none")
    out = model(inputs, labels=torch.zeros(3, 1))
    assert out.masks.visual.shape == (7, 3, 5) and out.masks.acoustic.shape == (9, 3, 7)
    assert torch.isfinite(out.losses.total)
    out.losses.total.backward()
    model.eval()
    with torch.no_grad():
        masks = model(inputs).masks
    for name, lengths in (("visual", inputs.lengths_v), ("acoustic", inputs.lengths_a)):
        mask = getattr(masks, name)
        valid = valid_mask(lengths, mask.shape[0])
        assert bool(((mask[valid] > 0) & (mask[valid] < 1)).all()) and torch.count_nonzero(mask[~valid]) == 0


def test_unaligned_masks_are_resampled_source_sequences() -> None:
    """σ_{a→v} of an unaligned batch = the acoustic-length sequence resampled to the visual lengths."""
    from misalatch.models.resample import resample_time

    cfg = glove_config("sequence")
    model = make_model(cfg).eval()
    inputs = glove_batch(alignment="none")
    with torch.no_grad():
        block, axes, per_source = _source_masks(model, inputs)
        low = model.low_level(inputs)
        h_a = block.high_level(model.first_pass(low, inputs), axes)["acoustic"]
        raw = torch.sigmoid(block.generator("visual", "acoustic")(h_a.value, h_a.lengths))  # (9, B, d_v)
    assert raw.shape[0] == 9
    expected = resample_time(raw, inputs.lengths_a, inputs.lengths_v, 7)
    torch.testing.assert_close(per_source["visual"]["acoustic"], expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# gradients (§4.11 item 8)
# ----------------------------------------------------------------------------------------------
def _capture_sources(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    captured: list[torch.Tensor] = []
    original = FeedbackBlock.high_level

    def spy(self, *args, **kwargs):
        sources = original(self, *args, **kwargs)
        for source in sources.values():
            source.value.retain_grad()
            captured.append(source.value)
        return sources

    monkeypatch.setattr(FeedbackBlock, "high_level", spy)
    return captured


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text", ["glove", "bert"])
@pytest.mark.parametrize("detach", [False, True])
def test_gradients_reach_generators_and_the_first_pass_unless_detached(
    variant: str, text: str, detach: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = (glove_config if text == "glove" else bert_config)(variant, detach_first_pass=detach)
    model = make_model(cfg).train()
    captured = _capture_sources(monkeypatch)
    model(batch_for(cfg), labels=torch.randn(3, 1)).losses.total.backward()
    assert len(captured) == 3
    for name, param in model.feedback.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    for h in captured:
        if detach:
            assert h.grad is None
        else:
            assert h.grad is not None and float(h.grad.abs().sum()) > 0
    # encoders still learn through the second pass
    assert float(model.vrnn1.weight_ih_l0.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------------------------
# training (§4.11 item 10 and the training checks)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("text", ["glove", "bert"])
def test_short_training_decreases_the_loss(variant: str, text: str) -> None:
    cfg = (glove_config if text == "glove" else bert_config)(variant, dropout=0.1)
    model = make_model(cfg)
    inputs = batch_for(cfg, words=(6, 4, 2, 5, 3, 6) if text == "glove" else (5, 3, 1, 4, 2, 5))
    labels = torch.linspace(-2, 2, 6)[:, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(inputs, labels=labels).losses.total)

    start = eval_loss()
    model.train()
    for _ in range(12):
        optimizer.zero_grad()
        loss = model(inputs, labels=labels).losses.total
        assert torch.isfinite(loss)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
        model.train()
    assert eval_loss() < 0.8 * start


@pytest.fixture(scope="module")
def synthetic_sets() -> dict[str, object]:
    """Tiny synthetic MOSI-shaped data with MOSI (47/74) and MOSEI (35/74) feature sizes."""
    from misalatch.data.synthetic import make_synthetic_mosi

    return {name: make_synthetic_mosi(n_train=12, n_valid=1, n_test=1, seed=3, visual_dim=d_v)
            for name, d_v in (("mosi", 47), ("mosei", 35))}


@pytest.mark.parametrize("text", ["glove", "bert"])
@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_every_variant_trains_on_synthetic_data(text: str, dataset: str, synthetic_sets: dict) -> None:
    from misalatch.data.batching import BatchSpec, collate
    from misalatch.data.text import apply_vocab, tokenize_for_bert

    data = synthetic_sets[dataset]
    if text == "bert":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
        data = tokenize_for_bert(data, tokenizer, max_wordpieces=24)
        bert_cfg = {**TINY_BERT, "vocab_size": tokenizer.vocab_size}
        base = dict(text_encoder="bert", text_input_size=32, bert_config=bert_cfg)
    else:
        vocab = ["<unk>", "<pad>"] + sorted({w for s in data.splits["train"] for w in s.words})
        data = apply_vocab(data, vocab)
        base = dict(text_encoder="glove", text_input_size=8, vocab_size=len(vocab))
    spec = BatchSpec(text_encoder=text, visual_dim=data.visual_dim, acoustic_dim=data.acoustic_dim)
    segments = data.splits["train"]
    batches = [collate(segments[i : i + 6], spec) for i in (0, 6)]
    for variant in VARIANTS:
        cfg = MisaConfig(**base, visual_size=data.visual_dim, acoustic_size=74, hidden_size=16, feedback=variant)
        model = make_model(cfg).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for batch in batches:
            optimizer.zero_grad()
            out = model(batch.inputs, labels=batch.labels)
            assert torch.isfinite(out.losses.total), (variant, dataset, text)
            assert out.masks.visual.shape[2] == data.visual_dim
            out.losses.total.backward()
            optimizer.step()
        assert all(np.isfinite(p.detach().numpy()).all() for p in model.feedback.parameters())
