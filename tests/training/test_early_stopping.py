"""Patience / trials / lr-decay semantics (MISA.md §11)."""

from __future__ import annotations

from misalatch.training.early_stopping import EarlyStopping


def _run(losses: list[float], patience: int, trials: int) -> list[tuple[bool, bool, bool]]:
    stopper = EarlyStopping(patience, trials)
    out = []
    for loss in losses:
        d = stopper.step(loss)
        out.append((d.improved, d.restore, d.stop))
        if d.stop:
            break
    return out


def test_original_behaviour_stops_after_patience_plus_one_bad_epochs() -> None:
    decisions = _run([1.0] + [2.0] * 10, patience=6, trials=1)
    assert len(decisions) == 8  # 1 good + 7 bad epochs
    assert decisions[-1] == (False, True, True)  # best restored, then stop
    assert all(not r for _, r, _ in decisions[:-1])


def test_ties_count_as_improvements() -> None:
    assert [d[0] for d in _run([1.0, 1.0, 1.0], patience=0, trials=1)] == [True, True, True]


def test_trials_restore_then_continue() -> None:
    # patience 1, trials 2: two bad epochs -> restore (continue), two more bad -> restore + stop
    decisions = _run([1.0, 2.0, 2.0, 2.0, 2.0, 2.0], patience=1, trials=2)
    assert decisions == [(True, False, False), (False, False, False), (False, True, False),
                         (False, False, False), (False, True, True)]


def test_improvement_resets_patience() -> None:
    decisions = _run([3.0, 4.0, 2.0, 4.0, 4.0], patience=1, trials=1)
    assert [d[1] for d in decisions] == [False, False, False, False, True]


def test_warmup_epochs_do_not_count_against_the_patience() -> None:
    from misalatch.training.early_stopping import EarlyStopping

    losses = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]  # only epoch 1 improves
    stopper = EarlyStopping(patience=1, trials=1)
    plain = [stopper.step(x).stop for x in losses]
    assert plain.index(True) == 2  # epochs 2 and 3 are patience + 1 bad epochs
    warm = EarlyStopping(patience=1, trials=1, warmup=4)
    decisions = [warm.step(x) for x in losses]
    assert [d.stop for d in decisions].index(True) == 5  # bad epochs 2-4 are free, then 5 and 6 count
    assert decisions[0].improved and not any(d.improved for d in decisions[1:])


def test_feedback_variants_warm_up_by_default() -> None:
    from misalatch.training.config import FEEDBACK_WARMUP_EPOCHS, TrainConfig

    assert TrainConfig().resolved_warmup_epochs == 0
    assert TrainConfig(feedback="static").resolved_warmup_epochs == FEEDBACK_WARMUP_EPOCHS
    assert TrainConfig(feedback="static", warmup_epochs=0).resolved_warmup_epochs == 0


def test_training_honours_the_warmup(tmp_path) -> None:
    """patience 0: without warm-up the first non-improving epoch stops the run; with warm-up 3 the
    run goes on until the first non-improving epoch after epoch 3."""
    import csv

    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    tiny = dict(synthetic_size=(16, 8, 8), text_encoder="learned", hidden_size=8, batch_size=8, lr=0.05,
                patience=0, trials=1, max_epochs=6)
    run = train(TrainConfig(out=str(tmp_path / "warm"), warmup_epochs=3, **tiny)).runs[0]
    with open(tmp_path / "warm" / "history.csv") as handle:
        improved = [r["improved"] == "True" for r in csv.DictReader(handle)]
    bad_after_warmup = [e for e, ok in enumerate(improved, start=1) if not ok and e > 3]
    assert run.epochs_run == (bad_after_warmup[0] if bad_after_warmup else 6) and run.epochs_run >= 4


def test_a_resumed_stopper_is_still_inside_its_warmup() -> None:
    """The resume state carries the epoch counter: a run killed during the warm-up stops, after
    resuming, exactly when the uninterrupted run does (a counter restarting at 0 would stop later)."""
    losses = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    whole = EarlyStopping(patience=1, trials=1, warmup=2)
    expected = [whole.step(x).stop for x in losses]
    first = EarlyStopping(patience=1, trials=1, warmup=2)
    got = [first.step(x).stop for x in losses[:2]]
    resumed = EarlyStopping(patience=1, trials=1, warmup=2)
    resumed.load_state(first.state())
    got += [resumed.step(x).stop for x in losses[2:]]
    assert got == expected and expected.index(True) == 3
    old = {k: v for k, v in first.state().items() if k != "epoch"}  # a state saved before the counter was
    legacy = EarlyStopping(patience=1, trials=1, warmup=2)
    legacy.load_state(old, epoch=2)
    assert [legacy.step(x).stop for x in losses[2:]] == expected[2:]
