"""MISA (Hazarika et al., ACM MM 2020) exactly as the original code computes it (MISA.md §1-§7).

Module names follow the original ``state_dict`` (MISA.md §12) so that original checkpoints load
with a plain ``load_state_dict`` plus an ignore list. ``forward`` returns a ``MisaOutput`` and
assigns nothing to ``self``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from misalatch.models.config import MisaConfig
from misalatch.models.encoders import (
    ACTIVATIONS,
    apply_bert_freeze,
    bert_embed,
    bert_encode,
    build_bert,
    init_recurrent_weights,
    make_rnn,
    masked_mean,
    run_slstm,
)
from misalatch.models.losses import compute_losses, reverse_gradient
from misalatch.models.feedback import build_feedback, time_axes
from misalatch.models.outputs import (
    Encoded,
    FeedbackMasks,
    FirstPass,
    LowLevel,
    MisaLosses,
    MisaOutput,
    ModelInputs,
    PerModality,
)
from misalatch.models.registry import register_model

__all__ = ["MISA", "Encoded", "FirstPass", "LowLevel"]


def _seq(prefix: str, *layers: tuple[str, nn.Module]) -> nn.Sequential:
    seq = nn.Sequential()
    for name, layer in layers:
        seq.add_module(f"{prefix}{name}", layer)
    return seq


@register_model("misa", config=MisaConfig, recipe="misa",
                description="MISA (Hazarika et al. 2020), optionally with MMLatch feedback (--feedback)",
                signature="fusion.fusion_layer_3.weight")
class MISA(nn.Module):
    """MISA with optional MMLatch feedback (``config.feedback``).

    Args:
        config: the architecture; sizes must match the data and the text encoder.
        bert: an already-built Hugging Face ``BertModel`` (BERT text path only). When ``None`` and
            ``config.text_encoder == "bert"``, one is built from ``config.bert_config`` with random
            weights (they are expected to come from a checkpoint).
        embedding: initial GloVe matrix ``(V, d_e)`` (GloVe path only; default PyTorch init).
    """

    def __init__(
        self,
        config: MisaConfig,
        *,
        bert: nn.Module | None = None,
        embedding: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        act = ACTIVATIONS[config.activation]
        d_v, d_a, hidden = config.visual_size, config.acoustic_size, config.hidden_size

        # --- text ---
        if config.text_encoder == "bert":
            self.bertmodel = bert if bert is not None else build_bert(config.bert_config)
            if self.bertmodel.config.hidden_size != config.text_input_size:
                raise ValueError(
                    f"BERT hidden size {self.bertmodel.config.hidden_size} != text_input_size "
                    f"{config.text_input_size}"
                )
            apply_bert_freeze(self.bertmodel, config.bert_freeze)
        else:
            d_e = config.text_input_size
            if config.text_encoder == "glove":
                self.embed = nn.Embedding(config.vocab_size, d_e)
                if embedding is not None:
                    if tuple(embedding.shape) != (config.vocab_size, d_e):
                        raise ValueError(f"embedding shape {tuple(embedding.shape)} != {(config.vocab_size, d_e)}")
                    self.embed.weight.data.copy_(embedding)
                self.embed.weight.requires_grad_(not config.freeze_embeddings)
            self.trnn1 = make_rnn(config.rnncell, d_e, d_e)
            self.trnn2 = make_rnn(config.rnncell, 2 * d_e, d_e)
            self.tlayer_norm = nn.LayerNorm(2 * d_e)

        # --- visual / acoustic sLSTMs ---
        self.vrnn1 = make_rnn(config.rnncell, d_v, d_v)
        self.vrnn2 = make_rnn(config.rnncell, 2 * d_v, d_v)
        self.arnn1 = make_rnn(config.rnncell, d_a, d_a)
        self.arnn2 = make_rnn(config.rnncell, 2 * d_a, d_a)
        self.vlayer_norm = nn.LayerNorm(2 * d_v)
        self.alayer_norm = nn.LayerNorm(2 * d_a)

        # --- projections, private / shared encoders, reconstruction ---
        self.project_t = _seq("project_t", ("", nn.Linear(config.text_utterance_size, hidden)),
                              ("_activation", act()), ("_layer_norm", nn.LayerNorm(hidden)))
        self.project_v = _seq("project_v", ("", nn.Linear(4 * d_v, hidden)),
                              ("_activation", act()), ("_layer_norm", nn.LayerNorm(hidden)))
        self.project_a = _seq("project_a", ("", nn.Linear(4 * d_a, hidden)),
                              ("_activation", act()), ("_layer_norm", nn.LayerNorm(hidden)))
        self.private_t = _seq("private_t", ("_1", nn.Linear(hidden, hidden)), ("_activation_1", nn.Sigmoid()))
        self.private_v = _seq("private_v", ("_1", nn.Linear(hidden, hidden)), ("_activation_1", nn.Sigmoid()))
        self.private_a = _seq("private_a", ("_3", nn.Linear(hidden, hidden)), ("_activation_3", nn.Sigmoid()))
        self.shared = _seq("shared", ("_1", nn.Linear(hidden, hidden)), ("_activation_1", nn.Sigmoid()))
        self.recon_t = _seq("recon_t", ("_1", nn.Linear(hidden, hidden)))
        self.recon_v = _seq("recon_v", ("_1", nn.Linear(hidden, hidden)))
        self.recon_a = _seq("recon_a", ("_1", nn.Linear(hidden, hidden)))

        if config.similarity == "adversarial":
            self.discriminator = _seq(
                "discriminator",
                ("_layer_1", nn.Linear(hidden, hidden)),
                ("_layer_1_activation", act()),
                ("_layer_1_dropout", nn.Dropout(config.dropout)),
                ("_layer_2", nn.Linear(hidden, 3)),
            )

        # --- fusion ---
        layer = nn.TransformerEncoderLayer(d_model=hidden, nhead=2)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fusion = _seq(
            "fusion",
            ("_layer_1", nn.Linear(6 * hidden, 3 * hidden)),
            ("_layer_1_dropout", nn.Dropout(config.dropout)),
            ("_layer_1_activation", act()),
            ("_layer_3", nn.Linear(3 * hidden, config.num_classes)),
        )

        # --- MMLatch feedback (None for the plain MISA reproduction) ---
        self.feedback = None if config.feedback == "none" else build_feedback(config)

        init_recurrent_weights(self)

    # ------------------------------------------------------------------------------------------
    # passes
    # ------------------------------------------------------------------------------------------
    def low_level(self, inputs: ModelInputs) -> LowLevel:
        """The tensors feedback masks multiply; the text embedding runs once per step."""
        cfg = self.config
        if cfg.text_encoder == "bert":
            if inputs.bert_input_ids is None:
                raise ValueError("text_encoder=bert needs bert_input_ids")
            token_types = inputs.bert_token_type_ids
            if token_types is None:
                token_types = torch.zeros_like(inputs.bert_input_ids)
            text = bert_embed(self.bertmodel, inputs.bert_input_ids, token_types)
        elif cfg.text_encoder == "glove":
            if inputs.text_ids is None:
                raise ValueError("text_encoder=glove needs text_ids")
            text = self.embed(inputs.text_ids)
        else:
            if inputs.text_vectors is None:
                raise ValueError("text_encoder=vectors needs text_vectors")
            text = inputs.text_vectors
        return LowLevel(text=text, visual=inputs.visual, acoustic=inputs.acoustic)

    def encode(self, low: LowLevel, inputs: ModelInputs) -> Encoded:
        """One pass of the unimodal encoders on (possibly masked) low-level inputs."""
        text_hidden, text_slstm = None, None
        if self.config.text_encoder == "bert":
            mask = inputs.bert_attention_mask
            text_hidden = bert_encode(self.bertmodel, low.text, mask)
            x_t = masked_mean(text_hidden, mask)
        else:
            text_slstm = run_slstm(low.text, inputs.lengths, self.trnn1, self.tlayer_norm, self.trnn2)
            x_t = text_slstm.utterance
        vis = run_slstm(low.visual, inputs.visual_lengths, self.vrnn1, self.vlayer_norm, self.vrnn2)
        aco = run_slstm(low.acoustic, inputs.acoustic_lengths, self.arnn1, self.alayer_norm, self.arnn2)
        return Encoded(
            x=PerModality(t=x_t, v=vis.utterance, a=aco.utterance),
            text_hidden=text_hidden,
            text_slstm=text_slstm,
            visual_slstm=vis,
            acoustic_slstm=aco,
        )

    def first_pass(self, low: LowLevel, inputs: ModelInputs) -> FirstPass:
        """The encoders on the unmasked inputs (MMLATCH.md §4.2): what the feedback block reads.

        The projections u_y run only for feedback that reads them (``static-projected``).
        """
        encoded = self.encode(low, inputs)
        reads_projection = self.feedback is not None and self.feedback.reads_projection
        return FirstPass(encoded, self.project(encoded.x) if reads_projection else None)

    def _encode_plain(self, inputs: ModelInputs) -> PerModality[torch.Tensor]:
        """MISA without feedback: BERT's standard forward, exactly as the original calls it."""
        if self.config.text_encoder == "bert":
            mask = inputs.bert_attention_mask
            token_types = inputs.bert_token_type_ids
            if token_types is None:
                token_types = torch.zeros_like(inputs.bert_input_ids)
            hidden = self.bertmodel(
                input_ids=inputs.bert_input_ids, attention_mask=mask, token_type_ids=token_types
            ).last_hidden_state
            x_t = masked_mean(hidden, mask)
            vis = run_slstm(inputs.visual, inputs.visual_lengths, self.vrnn1, self.vlayer_norm, self.vrnn2)
            aco = run_slstm(inputs.acoustic, inputs.acoustic_lengths, self.arnn1, self.alayer_norm, self.arnn2)
            return PerModality(t=x_t, v=vis.utterance, a=aco.utterance)
        return self.encode(self.low_level(inputs), inputs).x

    def project(self, x: PerModality[torch.Tensor]) -> PerModality[torch.Tensor]:
        """u_m = LayerNorm(act(Linear_m(x_m))), ``(B, H)`` each."""
        return PerModality(t=self.project_t(x.t), v=self.project_v(x.v), a=self.project_a(x.a))

    def head(self, x: PerModality[torch.Tensor], masks: FeedbackMasks | None = None) -> MisaOutput:
        """Projections, private/shared codes, reconstruction, discriminator, fusion and prediction."""
        utt = self.project(x)
        private = PerModality(t=self.private_t(utt.t), v=self.private_v(utt.v), a=self.private_a(utt.a))
        shared = PerModality(t=self.shared(utt.t), v=self.shared(utt.v), a=self.shared(utt.a))
        recon = PerModality(
            t=self.recon_t(private.t + shared.t),
            v=self.recon_v(private.v + shared.v),
            a=self.recon_a(private.a + shared.a),
        )
        domain_logits = None
        if self.config.similarity == "adversarial":
            weight = self.config.reverse_grad_weight
            domain_logits = PerModality(
                t=self.discriminator(reverse_gradient(shared.t, weight)),
                v=self.discriminator(reverse_gradient(shared.v, weight)),
                a=self.discriminator(reverse_gradient(shared.a, weight)),
            )
        codes = torch.stack((private.t, private.v, private.a, shared.t, shared.v, shared.a), dim=0)  # (6, B, H)
        fused = self.transformer_encoder(codes)
        z = torch.cat(tuple(fused[i] for i in range(6)), dim=1)  # (B, 6H)
        prediction = self.fusion(z)
        return MisaOutput(
            prediction=prediction,
            utt=utt,
            private=private,
            shared=shared,
            recon=recon,
            domain_logits=domain_logits,
            masks=masks,
        )

    def forward(
        self,
        inputs: ModelInputs,
        labels: torch.Tensor | None = None,
        *,
        mask_transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> MisaOutput:
        """Run MISA (and the feedback block, if configured); losses are filled when labels are given.

        ``mask_transform(target, mask) -> mask`` (feedback variants only) replaces each combined mask
        before it is applied, e.g. by ones for the identity-mask test (MMLATCH.md §4.11).
        """
        masks = None
        if self.feedback is None:
            if mask_transform is not None:
                raise ValueError("mask_transform needs a feedback variant (feedback is 'none')")
            x = self._encode_plain(inputs)
        else:
            # The model runs both passes; the block only turns first-pass outputs into masks.
            low = self.low_level(inputs)
            axes = time_axes(self.config, low, inputs)
            masks = self.feedback(self.first_pass(low, inputs), axes)
            if mask_transform is not None:
                masks = FeedbackMasks(
                    text=mask_transform("text", masks.text),
                    visual=mask_transform("visual", masks.visual),
                    acoustic=mask_transform("acoustic", masks.acoustic),
                    text_layout=masks.text_layout,
                )
            masked = LowLevel(
                text=low.text * masks.text,
                visual=low.visual * masks.visual,
                acoustic=low.acoustic * masks.acoustic,
            )
            x = self.encode(masked, inputs).x
        output = self.head(x, masks)
        if labels is not None:
            output.losses = self.losses(output, labels)
        return output

    def losses(self, output: MisaOutput, labels: torch.Tensor) -> MisaLosses:
        """The four losses of a forward's output (separate so that several processes can compute
        them on the outputs of the whole batch, gathered: ``misalatch.training.distributed``)."""
        return compute_losses(output, labels, self.config)
