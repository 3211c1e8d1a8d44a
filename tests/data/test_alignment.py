"""Word alignment of CSD sequences (DATA.md §3.2–§3.5) on tiny hand-made files with hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from misalatch.data.canonical import CanonicalDataset
from misalatch.data.readers import csd
from misalatch.data.readers.csd import EPS, build_csd_dataset, collapse_to_words, overlap_matrix, znorm
from misalatch.data.synthetic.csd import write_csd, write_synthetic_csds
from misalatch.errors import DataFormatError

INF = float("inf")


def words_entry(rows: list[tuple[str, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    intervals = np.array([[a, b] for _, a, b in rows], np.float64)
    return intervals, np.array([[w.encode()] for w, _, _ in rows])


def write_set(tmp: Path, *, words: dict, visual: dict, acoustic: dict, labels: dict,
              folds: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Four CSD files and a fold file; every video goes to train unless ``folds`` says otherwise."""
    paths = {
        "words": write_csd(tmp / "w.csd", words, root="words"),
        "visual": write_csd(tmp / "v.csd", visual, root="FACET"),
        "acoustic": write_csd(tmp / "a.csd", acoustic, root="COVAREP"),
        "labels": write_csd(tmp / "l.csd", labels, root="Opinion Segment Labels"),
    }
    if folds is None:
        vids = sorted(v for v in labels if not v.startswith("__"))
        folds = {"train": vids, "valid": ["__valid__"], "test": ["__test__"]}
    paths["folds"] = tmp / "folds.json"
    paths["folds"].write_text(json.dumps({"mosi": folds}))
    return paths


def build(paths: dict[str, Path], **kwargs) -> CanonicalDataset:
    kwargs.setdefault("dataset", "mosi")
    return build_csd_dataset(labels=paths["labels"], words=paths["words"], visual=paths["visual"],
                             acoustic=paths["acoustic"], folds=paths["folds"], **kwargs)


def with_filler(entries: dict, kind: str) -> dict:
    """Add videos ``__valid__`` and ``__test__`` (one clean word each) so no split is empty."""
    out = dict(entries)
    for vid in ("__valid__", "__test__"):
        if kind == "words":
            out[vid] = words_entry([("ok", 0.0, 1.0)])
        elif kind == "labels":
            out[vid] = (np.array([[0.0, 1.0]]), np.array([[0.5]], np.float32))
        else:
            out[vid] = (np.array([[0.0, 1.0]]), np.ones((1, kind), np.float32))
    return out


def make(tmp: Path, words: dict, visual: dict, acoustic: dict, labels: dict, **kw) -> dict[str, Path]:
    d_v = next(iter(visual.values()))[1].shape[1]
    d_a = next(iter(acoustic.values()))[1].shape[1]
    return write_set(tmp, words=with_filler(words, "words"), visual=with_filler(visual, d_v),
                     acoustic=with_filler(acoustic, d_a), labels=with_filler(labels, "labels"), **kw)


def segment(ds, seg_id: str):
    found = [s for segs in ds.splits.values() for s in segs if s.id == seg_id]
    assert len(found) == 1, f"{seg_id} not found once in {[s.id for segs in ds.splits.values() for s in segs]}"
    return found[0]


# A video whose hand-computed word means exercise every ε rule of §3.2.
WORDS_A = [("hello", 0.0, 1.0), ("sp", 1.0, 1.5), ("world", 1.5, 2.0), ("zero", 2.0, 2.0), ("again", 2.0, 3.0)]
VISUAL_A = (
    np.array([[0.0, 0.5], [0.5, 1.2], [1.2, 1.6], [1.6, 2.0], [2.0, 2.000001], [2.0, 3.0], [2.99998, 3.5],
              [2.999995, 4.0]]),
    np.array([[1, 10], [3, 20], [5, 30], [7, 40], [100, 100], [9, 50], [11, 60], [1000, 1000]], np.float32),
)
# hello: frames 0, 1; sp: 1 (clipped to [1.0, 1.2]), 2; world: 2, 3 (frame 5 touches it with zero length);
# "zero" vanishes; again: 5 and 6 (clipped length 2e-5 > ε), not 4 (1e-6) nor 7 (5e-6).
EXPECTED_A = {"hello": [2, 15], "sp": [4, 25], "world": [6, 35], "again": [10, 55]}
ACOUSTIC_A = (np.array([[0.0, 1.0], [1.0, 1.5], [1.5, 2.0], [2.0, 3.0]]), np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))


def test_word_means_eps_rules_and_sp_removal(tmp_path: Path) -> None:
    paths = make(tmp_path, {"vidA": words_entry(WORDS_A)}, {"vidA": VISUAL_A}, {"vidA": ACOUSTIC_A},
                 {"vidA": (np.array([[0.0, 3.0]]), np.array([[1.5]], np.float32))})
    ds = build(paths, normalize=False)
    seg = segment(ds, "vidA_1")
    assert seg.words == ["hello", "world", "again"]  # sp removed, zero-length row vanished
    np.testing.assert_array_equal(seg.visual, np.array([EXPECTED_A[w] for w in seg.words], np.float32))
    np.testing.assert_array_equal(seg.acoustic, np.array([[1.0], [3.0], [4.0]], np.float32))
    assert seg.label == 1.5
    assert seg.visual.dtype == np.float32 and seg.acoustic.dtype == np.float32
    assert ds.alignment == "word" and ds.task == "regression"
    assert ds.meta["dropped"] == {"no_fold": 0, "missing_modality": 0, "length_mismatch": 0, "empty": 0}


def test_collapse_kernel_straddling_frames_count_for_both() -> None:
    w_iv, _ = words_entry(WORDS_A)
    rows = collapse_to_words(w_iv, VISUAL_A[0], VISUAL_A[1])
    assert rows.present.tolist() == [True, True, True, False, True]
    np.testing.assert_array_equal(rows.features[[0, 1, 2, 4]], [EXPECTED_A[w] for w in ("hello", "sp", "world", "again")])
    # the collapsed row spans the clipped frames: frame 1 clipped to [1.0, 1.2] for "sp"
    np.testing.assert_allclose(rows.intervals[1], [1.0, 1.5])
    np.testing.assert_allclose(rows.intervals[4], [2.0, 3.0])


def naive_collapse(w_iv: np.ndarray, f_iv: np.ndarray, f_x: np.ndarray, eps: float = EPS):
    """The SDK's loop, written plainly (reference for the vectorised kernel)."""
    order = sorted(range(f_iv.shape[0]), key=lambda j: f_iv[j, 0])
    f_iv, f_x = f_iv[order], f_x[order]
    means = np.zeros((w_iv.shape[0], f_x.shape[1]))
    present = np.zeros(w_iv.shape[0], bool)
    for i, (r0, r1) in enumerate(w_iv):
        if abs(r1 - r0) < eps:
            continue
        sel = (f_iv[:, 0] < r1 + eps) & (f_iv[:, 1] > r0 - eps)
        clipped = np.stack([np.maximum(f_iv[sel, 0], r0), np.minimum(f_iv[sel, 1], r1)], 1)
        keep = np.abs(clipped[:, 0] - clipped[:, 1]) > eps
        if keep.any():
            means[i] = f_x[sel][keep].mean(0)
            present[i] = True
    return means, present


@pytest.mark.parametrize("budget", [csd.PAIR_BUDGET, 7])
def test_collapse_kernel_matches_naive_loop(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csd, "PAIR_BUDGET", budget)  # 7 forces one-word chunks
    rng = np.random.default_rng(3)
    w_start = np.sort(rng.uniform(0, 20, 60))
    w_iv = np.stack([w_start, w_start + rng.choice([0.0, 0.05, 0.3, 1.5], 60)], 1)  # overlaps, zero-length
    f_start = rng.uniform(-1, 21, 400)  # unsorted frames of varied length, ends not monotonic
    f_iv = np.stack([f_start, f_start + rng.uniform(0, 0.4, 400)], 1)
    f_x = rng.normal(size=(400, 3)).astype(np.float32)
    rows = collapse_to_words(w_iv, f_iv, f_x)
    means, present = naive_collapse(w_iv, f_iv, f_x)
    np.testing.assert_array_equal(rows.present, present)
    np.testing.assert_allclose(rows.features[present], means[present], rtol=1e-6, atol=1e-6)
    assert present.sum() > 30 and (~present).sum() > 0


def test_overlap_matrix_eps() -> None:
    labels = np.array([[0.0, 1.0], [1.0, 2.0]])
    rows = np.array([[0.5, 1.0], [1.0, 1.000005], [0.99998, 1.5]])
    m = overlap_matrix(labels, rows, np.array([True, True, True]))
    assert m.tolist() == [[True, False, True], [False, False, True]]


def test_out_of_order_label_rows_keep_row_index(tmp_path: Path) -> None:
    labels = {"vidB": (np.array([[2.0, 3.0], [0.0, 2.0]]), np.array([[-1.0], [2.0]], np.float32))}
    paths = make(tmp_path, {"vidB": words_entry(WORDS_A)}, {"vidB": VISUAL_A}, {"vidB": ACOUSTIC_A}, labels)
    ds = build(paths, normalize=False)
    first, second = segment(ds, "vidB_1"), segment(ds, "vidB_2")  # MOSI: row k is clip k + 1
    assert (first.words, first.label) == (["again"], -1.0)
    assert (second.words, second.label) == (["hello", "world"], 2.0)
    np.testing.assert_array_equal(second.visual, [EXPECTED_A["hello"], EXPECTED_A["world"]])
    assert [s.id for s in ds.splits["train"]] == ["vidB_1", "vidB_2"]  # file row order, not time order


def test_mosei_ids_are_zero_based(tmp_path: Path) -> None:
    labels = {"vidB": (np.array([[2.0, 3.0], [0.0, 2.0]]), np.array([[-1.0], [2.0]], np.float32))}
    paths = make(tmp_path, {"vidB": words_entry(WORDS_A)}, {"vidB": VISUAL_A}, {"vidB": ACOUSTIC_A}, labels)
    doc = json.loads(paths["folds"].read_text())
    paths["folds"].write_text(json.dumps({"mosei": doc["mosi"]}))
    ds = build(paths, normalize=False, dataset="mosei")
    assert [s.id for s in ds.splits["train"]] == ["vidB_0", "vidB_1"]
    assert ds.meta["options"]["segment_ids"] == "<vid>_<k>"


def test_missing_modality_drop_versus_impute(tmp_path: Path) -> None:
    words = {"vidC": words_entry([("a", 0.0, 1.0), ("b", 1.0, 2.0), ("c", 5.0, 6.0)])}
    visual = {"vidC": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))}
    acoustic = {"vidC": (np.array([[0.0, 6.0]]), np.array([[7.0]], np.float32))}
    labels = {"vidC": (np.array([[0.0, 2.0], [5.0, 6.0], [0.0, 6.0]]), np.array([[1.0], [2.0], [3.0]], np.float32))}
    paths = make(tmp_path, words, visual, acoustic, labels)
    misa = build(paths, normalize=False)
    assert [s.id for s in misa.splits["train"]] == ["vidC_1"]
    assert misa.meta["dropped"]["missing_modality"] == 1  # segment 2: its only word has no frame
    assert misa.meta["dropped"]["length_mismatch"] == 1  # segment 3: 3 words, 2 visual rows
    assert misa.meta["dropped_by_split"]["train"] == {"missing_modality": 1, "length_mismatch": 1}
    mmlatch = build(paths, normalize=False, impute=True)
    assert [s.id for s in mmlatch.splits["train"]] == ["vidC_1", "vidC_2", "vidC_3"]
    np.testing.assert_array_equal(segment(mmlatch, "vidC_2").visual, [[0.0, 0.0]])
    np.testing.assert_array_equal(segment(mmlatch, "vidC_3").visual, [[1, 2], [3, 4], [0, 0]])
    np.testing.assert_array_equal(segment(mmlatch, "vidC_3").acoustic, [[7], [7], [7]])
    assert mmlatch.meta["dropped"]["missing_modality"] == 0 and mmlatch.meta["options"]["impute"] is True


def test_video_absent_from_a_modality_is_missing_modality(tmp_path: Path) -> None:
    words = {"v1": words_entry([("a", 0.0, 1.0)]), "v2": words_entry([("b", 0.0, 1.0)])}
    visual = {"v1": (np.array([[0.0, 1.0]]), np.ones((1, 2), np.float32))}
    acoustic = {"v1": (np.array([[0.0, 1.0]]), np.ones((1, 1), np.float32)),
                "v2": (np.array([[0.0, 1.0]]), np.ones((1, 1), np.float32))}
    labels = {v: (np.array([[0.0, 1.0], [0.0, 0.5]]), np.zeros((2, 1), np.float32)) for v in ("v1", "v2")}
    ds = build(make(tmp_path, words, visual, acoustic, labels), impute=True)
    assert ds.meta["dropped"]["missing_modality"] == 2
    assert ds.meta["videos_missing"]["visual"] == 1


def test_empty_segments(tmp_path: Path) -> None:
    words = {"vidE": words_entry([("sp", 0.0, 1.0), ("hi", 1.0, 2.0)])}
    visual = {"vidE": (np.array([[0.0, 2.0]]), np.ones((1, 2), np.float32))}
    acoustic = {"vidE": (np.array([[0.0, 2.0]]), np.ones((1, 1), np.float32))}
    labels = {"vidE": (np.array([[0.0, 1.0], [1.0, 2.0], [1.5, 1.5], [5.0, 6.0]]), np.zeros((4, 1), np.float32))}
    ds = build(make(tmp_path, words, visual, acoustic, labels))
    # only sp; kept; zero-length label interval; no word at all
    assert [s.id for s in ds.splits["train"]] == ["vidE_2"]
    assert ds.meta["dropped"]["empty"] == 3


def test_nonfinite_values_become_zero_and_are_counted(tmp_path: Path) -> None:
    words = {"vidN": words_entry([("a", 0.0, 1.0), ("b", 1.0, 2.0)])}
    visual = {"vidN": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32))}
    acoustic = {"vidN": (np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 2.0]]), np.array([[-INF], [1.0], [INF]], np.float32))}
    labels = {"vidN": (np.array([[0.0, 2.0]]), np.array([[1.5]], np.float32))}
    ds = build(make(tmp_path, words, visual, acoustic, labels), normalize=False)
    seg = segment(ds, "vidN_1")
    np.testing.assert_array_equal(seg.visual, [[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(seg.acoustic, [[0.0], [0.0]])  # mean(-inf, 1) = -inf -> 0
    assert seg.label == 1.5
    assert ds.meta["nonfinite"] == {"visual": 1, "acoustic": 2}
    assert all(np.isfinite(s.acoustic).all() for segs in ds.splits.values() for s in segs)


def test_z_normalisation_values(tmp_path: Path) -> None:
    paths = make(tmp_path, {"vidA": words_entry(WORDS_A)}, {"vidA": VISUAL_A}, {"vidA": ACOUSTIC_A},
                 {"vidA": (np.array([[0.0, 3.0], [2.0, 3.0]]), np.array([[1.5], [0.0]], np.float32))})
    ds = build(paths)  # normalize=True is the default
    seg = segment(ds, "vidA_1")
    v = np.array([EXPECTED_A[w] for w in ("hello", "world", "again")], np.float64)
    expected = (v - v.mean(0)) / (v.std(0) + 1e-6)  # ddof 0
    np.testing.assert_allclose(seg.visual, expected, rtol=1e-6)
    np.testing.assert_allclose(seg.visual[:, 0], np.array([-4, 0, 4]) / (math.sqrt(32 / 3) + 1e-6), rtol=1e-6)
    a = np.array([1.0, 3.0, 4.0])
    np.testing.assert_allclose(seg.acoustic[:, 0], (a - a.mean()) / (a.std() + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(segment(ds, "vidA_2").visual, [[0.0, 0.0]])  # one word -> zeros
    assert ds.meta["options"]["normalize"] is True


def test_znorm_constant_column_is_zero() -> None:
    out = znorm(np.array([[1.0, 5.0], [1.0, 7.0]]))
    np.testing.assert_allclose(out, [[0.0, -1.0], [0.0, 1.0]], atol=1e-5)


def test_variable_length_words_and_grouped_entries(tmp_path: Path) -> None:
    # words stored as variable-length byte strings in two entries vid[0], vid[1] (an aligned file)
    words = {
        "vidV[1]": (np.array([[1.0, 2.0]]), np.array([[b"caf\xc3\xa9"]], dtype=object)),
        "vidV[0]": (np.array([[0.0, 1.0]]), np.array([[b"un"]], dtype=object)),
    }
    visual = {"vidV": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[1.0], [2.0]], np.float32))}
    acoustic = {"vidV": (np.array([[0.0, 2.0]]), np.ones((1, 1), np.float32))}
    labels = {"vidV": (np.array([[0.0, 2.0]]), np.array([[0.5]], np.float32))}
    ds = build(make(tmp_path, words, visual, acoustic, labels), normalize=False)
    seg = segment(ds, "vidV_1")
    assert seg.words == ["un", "café"]
    np.testing.assert_array_equal(seg.visual, [[1.0], [2.0]])


def test_words_only_and_label_only(tmp_path: Path) -> None:
    paths = make(tmp_path, {"vidA": words_entry(WORDS_A)}, {"vidA": VISUAL_A}, {"vidA": ACOUSTIC_A},
                 {"vidA": (np.array([[0.0, 3.0]]), np.array([[1.5]], np.float32))})
    text = build_csd_dataset(labels=paths["labels"], words=paths["words"], folds=paths["folds"])
    seg = segment(text, "vidA_1")
    assert seg.words == ["hello", "world", "again"] and seg.visual is None and seg.acoustic is None
    only = build_csd_dataset(labels=paths["labels"], folds=paths["folds"])
    seg = segment(only, "vidA_1")
    assert seg.words is None and seg.label == 1.5
    with pytest.raises(ValueError, match="give the words sequence"):
        build_csd_dataset(labels=paths["labels"], visual=paths["visual"], folds=paths["folds"])


def test_synthetic_files_build_end_to_end(tmp_path: Path) -> None:
    paths = write_synthetic_csds(tmp_path, n_videos=12, segments_per_video=4, seconds_per_video=20, seed=1)
    assert set(paths) == {"words", "visual", "acoustic", "labels", "folds"}
    ds = build_csd_dataset(labels=paths["labels"], words=paths["words"], visual=paths["visual"],
                           acoustic=paths["acoustic"], dataset="mosei", folds=paths["folds"])
    sizes = ds.split_sizes()
    assert all(n > 0 for n in sizes.values())
    assert sum(sizes.values()) + sum(ds.meta["dropped"].values()) == 48
    assert (ds.visual_dim, ds.acoustic_dim) == (35, 74)
    assert ds.meta["nonfinite"].get("acoustic", 0) > 0  # planted -inf
    assert all("sp" not in s.words for segs in ds.splits.values() for s in segs)
    roles = {s["role"] for s in ds.meta["sources"]}
    assert roles == {"labels", "words", "visual", "acoustic", "folds"}
    assert all(len(s["sha256"]) == 64 for s in ds.meta["sources"])
    assert ds.meta["csd_metadata"]["acoustic"]["dimension names"][0] == "covarep_0"  # from the joined key


def test_reopening_files_does_not_change_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_synthetic_csds(tmp_path, n_videos=6, segments_per_video=3, seconds_per_video=10, seed=2)
    kwargs = dict(labels=paths["labels"], words=paths["words"], visual=paths["visual"], acoustic=paths["acoustic"],
                  dataset="mosei", folds=paths["folds"])
    reference = build_csd_dataset(**kwargs)
    monkeypatch.setattr(csd, "REOPEN_EVERY", 2)  # HDF5 caches are released by reopening the files
    again = build_csd_dataset(**kwargs)
    for split in ("train", "valid", "test"):
        assert [s.id for s in again.splits[split]] == [s.id for s in reference.splits[split]]
        for a, b in zip(again.splits[split], reference.splits[split]):
            np.testing.assert_array_equal(a.acoustic, b.acoustic)
            assert a.words == b.words


# ---- no silent misreads (issue 17 §6) ------------------------------------------------------------
def _one_video(tmp: Path, labels: tuple, visual_iv=np.array([[0.0, 1.0], [1.0, 2.0]])) -> dict[str, Path]:
    words = {"vidN": words_entry([("a", 0.0, 1.0), ("b", 1.0, 2.0)])}
    visual = {"vidN": (visual_iv, np.ones((2, 2), np.float32))}
    acoustic = {"vidN": (np.array([[0.0, 1.0], [1.0, 2.0]]), np.ones((2, 1), np.float32))}
    return make(tmp, words, visual, acoustic, {"vidN": labels})


def test_a_nan_label_is_an_error_naming_the_file_split_and_count(tmp_path: Path) -> None:
    paths = _one_video(tmp_path, (np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[np.nan], [np.nan]], np.float32)))
    with pytest.raises(DataFormatError, match=r"l\.csd: split 'train': 2 label\(s\) are NaN .*'vidN_1'"):
        build(paths, normalize=False)


def test_labels_outside_the_datasets_range_need_allow_label_range(tmp_path: Path) -> None:
    from misalatch.data.prepare import PrepareSource, read_any

    paths = _one_video(tmp_path, (np.array([[0.0, 2.0]]), np.array([[7.0]], np.float32)))
    source = dict(format="csd", labels=str(paths["labels"]), words=str(paths["words"]), visual=str(paths["visual"]),
                  acoustic=str(paths["acoustic"]), folds=str(paths["folds"]), dataset="mosi")
    with pytest.raises(DataFormatError, match=r"1 label\(s\) outside mosi's range \[-3, 3\].*'vidN_1': 7.*--allow-label-range"):
        read_any(PrepareSource(**source))
    ds = read_any(PrepareSource(**source, allow_label_range=True))
    assert segment(ds, "vidN_1").label == 7.0


def test_reversed_intervals_are_an_error_with_row_numbers(tmp_path: Path) -> None:
    paths = _one_video(tmp_path, (np.array([[0.0, 2.0]]), np.array([[1.0]], np.float32)),
                       visual_iv=np.array([[0.0, 1.0], [2.0, 1.0]]))
    with pytest.raises(DataFormatError, match=r"entry 'vidN', dataset 'intervals': 1 row\(s\) end before they start "
                                              r"\(rows 1; row 1: \[2, 1\]\)"):
        build(paths, normalize=False)
