"""Run by tests/training/test_distributed.py: fit a tiny MISA once, as one process or under torchrun.

    python tests/training/ddp_fit.py OUT.pt
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/training/ddp_fit.py OUT.pt

Every dropout is switched off (including the fusion transformer's fixed 0.1, as in the original), so
that a step is deterministic and the two launches can be compared number for number. Rank 0 saves
the per-epoch losses, the dev losses and the final weights to OUT.pt.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from misalatch.training.config import TrainConfig
from misalatch.training.distributed import distributed_job
from misalatch.training.loop import fit
from misalatch.training.seeding import seed_everything
from misalatch.training.setup import build_model, setup_run


def main(out: str) -> None:
    torch.set_num_threads(1)
    cfg = TrainConfig(synthetic_size=(22, 9, 8), text_encoder="learned", hidden_size=8, batch_size=7,
                      device="cpu", dropout=0.0, max_epochs=3, patience=1, trials=2, seed=7)
    setup = setup_run(cfg)
    device = torch.device("cpu")
    with distributed_job(device) as ctx:
        generator = seed_everything(cfg.seed)
        model = build_model(setup)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
            if isinstance(module, nn.MultiheadAttention):
                module.dropout = 0.0
        result = fit(model, setup.dataset.splits["train"], setup.dataset.splits["valid"], setup.spec,
                     batch_size=cfg.batch_size, lr=1e-3, clip_value=cfg.clip_value, max_epochs=cfg.max_epochs,
                     patience=cfg.patience, trials=cfg.trials, lr_decay=cfg.lr_decay,
                     dev_loss_reduction=cfg.dev_loss_reduction, generator=generator, device=device, dist_ctx=ctx)
        if ctx.is_main:
            torch.save({"history": result.history, "state": model.state_dict(), "world": ctx.world_size,
                        "best_epoch": result.best_epoch}, out)


if __name__ == "__main__":
    main(sys.argv[1])
