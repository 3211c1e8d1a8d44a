"""The bad-input battery (issue 8 §3): every bad input gets one clear line, exit status 1, and leaves
nothing behind.

Each case builds a small bad input, runs a real ``misalatch`` command in-process through
:func:`misalatch.cli.main` and checks it with :func:`assert_clean_failure`: the typed misalatch error,
a one-line message naming the file and the field, exit status 1, and no output left behind. One
section per source; add a section (and its cases) for every new source of input.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from misalatch import cli
from misalatch.data.synthetic.csd import write_synthetic_csds
from misalatch.data.synthetic.files import write_misa_pickles, write_mmsa_pickle, write_mult_pickle, write_urfunny
from misalatch.errors import DataFormatError, MisalatchError, UnsafePickleError

# ---- the shared check -----------------------------------------------------------------------------


def _snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}


def assert_clean_failure(argv: list[str], *, names: tuple[str, ...], error: type[MisalatchError] = DataFormatError,
                         out: Path | None = None, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> MisalatchError:
    """Run ``misalatch *argv`` and assert a clean failure.

    * the command raised ``error`` (a misalatch error type) and the CLI turned it into exit status 1;
    * its message is one line and contains every string in ``names`` (the file, the field);
    * the CLI printed exactly that line (``misalatch <command>: error: ...``) and no traceback;
    * ``out`` (the command's output path, if any) is as before: absent, or unchanged.
    """
    command = argv[0]
    helptext, run = cli.COMMANDS[command]
    caught: list[BaseException] = []

    def spy(rest: list[str]) -> int:
        try:
            return run(rest)
        except BaseException as err:  # record, then let the CLI handle it as it would
            caught.append(err)
            raise

    monkeypatch.setitem(cli.COMMANDS, command, (helptext, spy))
    before = _snapshot(out) if out is not None else None
    capsys.readouterr()
    status = cli.main(argv)
    captured = capsys.readouterr()
    assert caught, f"misalatch {' '.join(argv)} raised nothing (exit {status})"
    err = caught[0]
    assert isinstance(err, error), f"expected {error.__name__}, got {type(err).__name__}: {err}"
    message = str(err)
    assert status == 1
    assert "\n" not in message, f"message is not one line: {message!r}"
    for name in names:
        assert name in message, f"{name!r} not in the message: {message}"
    lines = [ln for ln in captured.err.splitlines() if ln.startswith(f"misalatch {command}: error:")]
    assert lines == [f"misalatch {command}: error: {message}"], captured.err
    assert "Traceback" not in captured.err
    if out is not None:
        assert _snapshot(out) == before, f"{out} was left changed"
    return err


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(tmp)`` writes it and returns (argv, names the message must contain)."""

    id: str
    make: Callable[[Path], tuple[list[str], tuple[str, ...]]]
    error: type[MisalatchError] = DataFormatError


def _run_case(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    argv, names = case.make(tmp_path)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    assert_clean_failure(argv, names=names, error=case.error, out=out, capsys=capsys, monkeypatch=monkeypatch)


def _prepare(fmt: str, source: Path, tmp: Path) -> list[str]:
    return ["prepare", "--format", fmt, "--input", str(source), "--out", str(tmp / "prepared")]


def _load(path: Path):
    return pickle.loads(path.read_bytes())


def _dump(obj, path: Path, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ---- MMSA pickles ---------------------------------------------------------------------------------


def _mmsa(change: Callable[[dict], None]) -> Callable[[Path], tuple[list[str], tuple[str, ...]]]:
    def make(tmp: Path):
        path = write_mmsa_pickle(tmp / "aligned_50.pkl")
        raw = _load(path)
        change(raw)
        _dump(raw, path)
        return _prepare("mmsa", path, tmp), (str(path),)
    return make


def _with_names(make, *names: str):
    def wrapped(tmp: Path):
        argv, found = make(tmp)
        return argv, found + names
    return wrapped


def _set(split: str, key: str, value) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        raw[split][key] = value(raw[split][key]) if callable(value) else value
    return change


MMSA_CASES = [
    Case("labels-as-strings", _with_names(_mmsa(_set("train", "regression_labels", lambda v: v.astype(str))),
                                          "field 'regression_labels'")),
    Case("labels-as-dict", _with_names(_mmsa(_set("valid", "regression_labels", {"a": 1})), "'regression_labels'")),
    Case("ids-as-dict", _with_names(_mmsa(_set("train", "id", lambda v: {str(k): k for k in v})), "'id'")),
    Case("ids-as-floats", _with_names(_mmsa(_set("test", "id", lambda v: np.arange(len(v), dtype=float))),
                                      "field 'id'")),
    Case("duplicate-ids", _with_names(_mmsa(_set("test", "id", lambda v: np.array(
        [v[0], v[0]] + list(v[2:])))), "field 'id': duplicate id")),
    Case("text-bert-strings", _with_names(_mmsa(_set("train", "text_bert", lambda v: v.astype(str))),
                                          "'text_bert'")),
    Case("audio-strings", _with_names(_mmsa(_set("train", "audio", lambda v: v.astype(str))), "'audio'")),
]


def _mmsa_raw_bytes(blob: bytes, names: tuple[str, ...]):
    def make(tmp: Path):
        path = tmp / "aligned_50.pkl"
        path.write_bytes(blob)
        return _prepare("mmsa", path, tmp), (str(path),) + names
    return make


_BOMB = b"\x80\x02]q\x00(" + b"K\x00" * 1000 + b"e" + b"".join(
    b"]q" + bytes([lv]) + b"(" + (b"h" + bytes([lv - 1])) * 1000 + b"e" for lv in range(1, 4)) + b"."
_UNINIT = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R."
HOSTILE_PICKLE_CASES = [
    Case("memo-bomb", _mmsa_raw_bytes(_BOMB, ("memo",))),
    Case("deep-nesting", _mmsa_raw_bytes(b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".", ("nests deeper",))),
    Case("reconstruct-without-build", _mmsa_raw_bytes(_UNINIT, ("before its data",)), UnsafePickleError),
    Case("os-system", _mmsa_raw_bytes(b"cos\nsystem\n(S'true'\ntR.", ("os.system",)), UnsafePickleError),
    Case("codecs-unknown-codec", _mmsa_raw_bytes(
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", ("_codecs.encode",)),
        UnsafePickleError),
    Case("forged-length", _mmsa_raw_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc",
                                          ("not a readable pickle",))),
]

# ---- MulT / MultiBench pickles --------------------------------------------------------------------


def _mult(change: Callable[[dict], None], *names: str, classification: bool = False):
    def make(tmp: Path):
        path = write_mult_pickle(tmp / ("humor.pkl" if classification else "mosi_data.pkl"),
                                 classification=classification)
        raw = _load(path)
        change(raw)
        _dump(raw, path)
        return _prepare("mult", path, tmp), (str(path),) + names
    return make


def _nan_label(raw: dict) -> None:
    raw["train"]["labels"] = raw["train"]["labels"].astype(np.float64)
    raw["train"]["labels"].reshape(-1)[0] = np.nan


MULT_CASES = [
    Case("labels-as-strings", _mult(_set("train", "labels", lambda v: v.astype(str)), "field 'labels'")),
    Case("ids-as-dict", _mult(_set("valid", "id", lambda v: {i: i for i in range(len(v))}), "field 'id'")),
    Case("nan-class-label", _mult(_nan_label, "field 'labels'", "classification label", classification=True)),
    Case("class-label-2", _mult(lambda r: r["test"]["labels"].reshape(-1).__setitem__(0, 2.0), "field 'labels'",
                                classification=True)),
]

# ---- MISA pickles ---------------------------------------------------------------------------------


def _misa(change: Callable[[list], None], *names: str, layout: str = "mosi", file: str = "train.pkl"):
    def make(tmp: Path):
        folder = write_misa_pickles(tmp / "MOSI", layout=layout, with_embedding=False)
        path = folder / file
        samples = _load(path)
        change(samples)
        _dump(samples, path, protocol=3)
        return _prepare("misa", folder, tmp), (str(folder),) + names
    return make


def _sample(i: int, part: int, value, *, inner: int | None = None) -> Callable[[list], None]:
    def change(samples: list) -> None:
        s = list(samples[i])
        if inner is None:
            s[part] = value(s[part]) if callable(value) else value
        else:
            inner_t = list(s[0])
            inner_t[inner] = value(inner_t[inner]) if callable(value) else value
            s[0] = tuple(inner_t)
        samples[i] = tuple(s)
    return change


MISA_CASES = [
    Case("label-as-string", _misa(_sample(1, 1, "positive"), "field 'label'")),
    Case("segment-id-as-int", _misa(_sample(0, 2, 17), "field 'segment_id'")),
    Case("duplicate-segment-ids", _misa(lambda s: s.__setitem__(1, (s[1][0], s[1][1], s[0][2])),
                                        "field 'segment_id': duplicate id")),
    Case("word-id-1e9", _misa(_sample(0, 0, lambda ids: np.full_like(ids, 10**9), inner=0), "field 'word_ids'")),
    Case("negative-word-id", _misa(_sample(0, 0, lambda ids: np.full_like(ids, -1), inner=0), "field 'word_ids'")),
    Case("words-as-int", _misa(_sample(2, 0, 5, inner=3), "field 'words'")),
    Case("nan-class-label", _misa(_sample(1, 1, np.array([[np.nan]])), "field 'label'", "classification label",
                                  layout="ur_funny")),
]

# ---- UR-FUNNY release pickles ---------------------------------------------------------------------


def _urfunny(file: str, change: Callable[[dict], None], *names: str, version: int = 1):
    def make(tmp: Path):
        folder = write_urfunny(tmp / "urfunny", version=version)
        path = folder / file
        obj = _load(path)
        change(obj)
        _dump(obj, path)
        return _prepare("urfunny", folder, tmp), (str(path) if file != "-" else str(folder),) + names
    return make


def _first_value(key: str, value) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        obj[next(iter(obj))][key] = value
    return change


def _index_1e12(obj: dict) -> None:
    for entry in obj.values():
        entry["punchline_embedding_indexes"] = [10**12] * len(entry["punchline_embedding_indexes"])


URFUNNY_CASES = [
    Case("index-1e12", lambda tmp: _urfunny("word_embedding_indexes_sdk.pkl", _index_1e12)(tmp)[:1] + (
        (str(tmp / "urfunny"), "field 'punchline_embedding_indexes'"),)),
    Case("label-as-string", _urfunny("humor_label_sdk.pkl", lambda o: o.__setitem__(next(iter(o)), "1"),
                                     "field 'label'")),
    Case("nan-label", _urfunny("humor_label_sdk.pkl", lambda o: o.__setitem__(next(iter(o)), float("nan")),
                               "field 'label'")),
    Case("fold-id-as-list", _urfunny("data_folds.pkl", lambda o: o["train"].__setitem__(0, [1, 2]), "field 'id'")),
    Case("sentence-as-int", lambda tmp: _urfunny("language_sdk.pkl", lambda o: [e.__setitem__(
        "punchline_sentence", 7) for e in o.values()], version=2)(tmp)[:1] + (
        (str(tmp / "urfunny"), "field 'punchline_sentence'"),)),
]

# ---- text CSV -------------------------------------------------------------------------------------

GOOD_CSV = ("segment_id,text,label,split\n"
            "a1,good movie,1.5,train\na2,bad plot,-2,train\nb1,fine,0.5,valid\nc1,meh,0,test\n")


def _csv(content: bytes, *names: str):
    def make(tmp: Path):
        path = tmp / "table.csv"
        path.write_bytes(content)
        return ["prepare", "--format", "csv", "--input", str(path), "--out", str(tmp / "prepared")], (str(path),) + names
    return make


CSV_CASES = [
    Case("latin-1", _csv(GOOD_CSV.replace("fine", "caf\xe9").encode("latin-1"), "line 4", "UTF-8")),
    Case("utf-16", _csv(GOOD_CSV.encode("utf-16"), "UTF-16")),
    Case("field-over-csv-limit", _csv((GOOD_CSV + "d1," + "w " * 70_000 + ",1,test\n").encode(),
                                      "line 6", "field larger than field limit")),
    Case("unclosed-quote", _csv(GOOD_CSV.replace("c1,meh", 'c1,"meh').encode(), "line 5", "fewer fields")),
    Case("label-0_3", _csv(GOOD_CSV.replace("0.5", "0_3").encode(), "line 4", "field 'label'", "'0_3'")),
    Case("label-arabic-digit", _csv(GOOD_CSV.replace("0.5", "\u0661").encode(), "field 'label'")),
    Case("duplicate-id", _csv(GOOD_CSV.replace("c1", "a1").encode(), "field 'segment_id'", "duplicate id")),
]

# ---- CMU-SDK .csd files ---------------------------------------------------------------------------


def _csd(tamper: Callable[[h5py.Group, Path], None], role: str, *names: str):
    def make(tmp: Path):
        files = write_synthetic_csds(tmp / "csd", n_videos=4, segments_per_video=2, seconds_per_video=10,
                                     visual_dim=47, acoustic_dim=5, seed=3)
        with h5py.File(files[role], "a") as f:
            root = next(iter(f))
            entry = f[root]["data"][next(iter(f[root]["data"]))]
            tamper(entry, tmp)
        argv = ["prepare", "--format", "csd", "--dataset", "mosi", "--folds", str(files["folds"]),
                "--out", str(tmp / "prepared")]
        for r in ("labels", "words", "visual", "acoustic"):
            argv += [f"--{r}", str(files[r])]
        return argv, (str(files[role]),) + names
    return make


def _external_storage(entry: h5py.Group, tmp: Path) -> None:
    (tmp / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n" * 8)
    del entry["features"]
    entry.create_dataset("features", shape=(4, 1), dtype="S32",
                         external=[(str(tmp / "passwd"), 0, h5py.h5f.UNLIMITED)])


def _external_link(entry: h5py.Group, tmp: Path) -> None:
    with h5py.File(tmp / "other.h5", "w") as f:
        f["x"] = np.zeros((3, 47))
    del entry["features"]
    entry["features"] = h5py.ExternalLink(str(tmp / "other.h5"), "/x")


def _huge(entry: h5py.Group, tmp: Path) -> None:
    del entry["features"]
    entry.create_dataset("features", shape=(250_000_000, 37), dtype="f8", chunks=(1024, 37), compression="gzip")


CSD_CASES = [
    Case("external-storage", _csd(_external_storage, "words", "dataset 'features'", "external file")),
    Case("external-link", _csd(_external_link, "visual", "'features' is an external link")),
    Case("declares-70-GiB", _csd(_huge, "acoustic", "dataset 'features'", "declares shape (250000000, 37)")),
]

# ---- prepared folders (misalatch train --data <prepared>) -----------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A small valid prepared folder with a vocabulary (from a MISA folder: text_ids + vocab.json)."""
    tmp = tmp_path_factory.mktemp("prepared-src")
    folder = write_misa_pickles(tmp / "MOSI", with_embedding=False)
    assert cli.main(["prepare", "--format", "misa", "--input", str(folder), "--out", str(tmp / "p")]) == 0
    return tmp / "p"


def _prepared_case(tamper: Callable[[Path], None], file: str, *names: str):
    def make(tmp: Path, source: Path):
        folder = tmp / "data"
        shutil.copytree(source, folder)
        tamper(folder)
        argv = ["train", "--data", str(folder), "--out", str(tmp / "run"), "--max-epochs", "1"]
        return argv, (str(folder / file) if file else str(folder),) + names
    return make


def _edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        doc = json.loads((folder / "meta.json").read_text())
        change(doc)
        (folder / "meta.json").write_text(json.dumps(doc))
    return tamper


def _edit_npz(split: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        with np.load(folder / f"{split}.npz") as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        np.savez(folder / f"{split}.npz", **arrays)
    return tamper


def _truncate(folder: Path) -> None:
    data = (folder / "train.npz").read_bytes()
    (folder / "train.npz").write_bytes(data[: len(data) // 2])


def _declare_15_gib(folder: Path) -> None:
    """Rewrite the .npy header of ``labels`` to declare (2**31,) float64 with the same small body."""
    path = folder / "valid.npz"
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = members["labels.npy"]
    header_len = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + header_len].decode("latin1")
    start, end = header.index("'shape': (") + len("'shape': ("), header.index(")", header.index("'shape': ("))
    new = (header[:start] + f"{2 ** 31}," + header[end:]).rstrip() + " "
    new = new.ljust(header_len - 1) + "\n"
    assert len(new) == header_len
    members["labels.npy"] = data[:10] + new.encode("latin1") + data[10 + header_len:]
    with zipfile.ZipFile(path, "w") as z:
        for name, body in members.items():
            z.writestr(name, body)


def _nan_label_npz(arrays: dict) -> None:
    arrays["labels"] = arrays["labels"].astype(np.float64)
    arrays["labels"][0] = np.nan


def _oov_ids(arrays: dict) -> None:
    arrays["text_ids"] = arrays["text_ids"].copy()
    arrays["text_ids"][0] = 10**6


PREPARED_CASES = [
    Case("truncated-npz", _prepared_case(_truncate, "train.npz", "unreadable split archive")),
    Case("npz-declares-15-GiB", _prepared_case(_declare_15_gib, "valid.npz", "'labels'", "declares shape")),
    Case("nan-labels", _prepared_case(_edit_npz("test", _nan_label_npz), "test.npz", "field 'labels'", "NaN")),
    Case("out-of-vocabulary-ids", _prepared_case(_edit_npz("train", _oov_ids), "train.npz", "field 'text_ids'")),
    Case("object-array", _prepared_case(_edit_npz("train", lambda a: a.__setitem__(
        "ids", a["ids"].astype(object))), "train.npz", "'ids'", "dtype object")),
    Case("unknown-task", _prepared_case(_edit_meta(lambda d: d["dataset"].__setitem__("task", "regresion")),
                                        "meta.json", "field 'dataset.task'", "'regresion'")),
    Case("unknown-alignment", _prepared_case(_edit_meta(lambda d: d["dataset"].__setitem__("alignment", "diag")),
                                             "meta.json", "field 'dataset.alignment'")),
    Case("num-classes-as-string", _prepared_case(_edit_meta(lambda d: d["dataset"].__setitem__("num_classes", "1")),
                                                 "meta.json", "field 'dataset.num_classes'")),
    Case("vocab-not-json", _prepared_case(lambda f: (f / "vocab.json").write_bytes(b"[\"<unk>\", \xff"),
                                          "vocab.json", "unreadable vocabulary JSON")),
    Case("vocab-not-a-list", _prepared_case(lambda f: (f / "vocab.json").write_text('{"a": 1}'), "vocab.json",
                                            "list of strings")),
    Case("vocab-duplicate", _prepared_case(lambda f: (f / "vocab.json").write_text(json.dumps(
        json.loads((f / "vocab.json").read_text()) + ["<pad>"])), "vocab.json", "twice")),
]


# ---- model configuration sizes (checkpoint sidecars) -----------------------------------------------


@pytest.mark.parametrize("field, value", [("hidden_size", 10**8), ("vocab_size", 10**9), ("visual_size", 10**7),
                                          ("text_input_size", 1e3), ("num_classes", True)])
def test_forged_model_sizes_are_refused_before_allocation(field, value):
    from misalatch.errors import ConfigError
    from misalatch.models.config import MisaConfig

    with pytest.raises(ConfigError, match=field):
        MisaConfig.from_dict({field: value})


# ---- the tests ------------------------------------------------------------------------------------

READER_CASES = ([pytest.param(c, id=f"mmsa-{c.id}") for c in MMSA_CASES]
                + [pytest.param(c, id=f"pickle-{c.id}") for c in HOSTILE_PICKLE_CASES]
                + [pytest.param(c, id=f"mult-{c.id}") for c in MULT_CASES]
                + [pytest.param(c, id=f"misa-{c.id}") for c in MISA_CASES]
                + [pytest.param(c, id=f"urfunny-{c.id}") for c in URFUNNY_CASES]
                + [pytest.param(c, id=f"csv-{c.id}") for c in CSV_CASES]
                + [pytest.param(c, id=f"csd-{c.id}") for c in CSD_CASES])


@pytest.mark.parametrize("case", READER_CASES)
def test_reader_bad_input(case: Case, tmp_path, capsys, monkeypatch):
    _run_case(case, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in PREPARED_CASES])
def test_prepared_folder_bad_input(case: Case, prepared: Path, tmp_path, capsys, monkeypatch):
    argv, names = case.make(tmp_path, prepared)
    assert_clean_failure(argv, names=names, error=case.error, out=tmp_path / "run", capsys=capsys,
                         monkeypatch=monkeypatch)


def test_existing_output_is_left_unchanged(tmp_path, capsys, monkeypatch):
    """A failing prepare onto an existing (prepared) --out with --overwrite keeps the old folder."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV)
    out = tmp_path / "prepared"
    assert cli.main(["prepare", "--format", "csv", "--input", str(good), "--out", str(out)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(GOOD_CSV.replace("0.5", "0_3"))
    assert_clean_failure(["prepare", "--format", "csv", "--input", str(bad), "--out", str(out), "--overwrite"],
                         names=(str(bad), "field 'label'"), out=out, capsys=capsys, monkeypatch=monkeypatch)


def test_the_battery_checks_what_it_claims(tmp_path, capsys, monkeypatch):
    """The helper itself fails on a command that succeeds or leaves output behind."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV)
    with pytest.raises(AssertionError, match="raised nothing"):
        assert_clean_failure(["prepare", "--format", "csv", "--input", str(good), "--out", str(tmp_path / "o")],
                             names=(), out=tmp_path / "o", capsys=capsys, monkeypatch=monkeypatch)
