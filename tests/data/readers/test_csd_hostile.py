"""Hostile ``.csd`` files (issue 8 §2): HDF5 features that read other files or declare more than
they hold are refused, naming the entry, before anything is read or allocated."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from misalatch.data.readers.csd import CsdSequence, build_csd_dataset, read_csd
from misalatch.data.synthetic.csd import write_synthetic_csds
from misalatch.errors import DataFormatError


@pytest.fixture
def csds(tmp_path: Path) -> dict[str, Path]:
    return write_synthetic_csds(tmp_path / "csd", n_videos=4, segments_per_video=2, seconds_per_video=12,
                                visual_dim=47, acoustic_dim=5, seed=1)


def _first_entry(path: Path) -> tuple[str, str]:
    with h5py.File(path, "r") as f:
        root = next(iter(f))
        return root, next(iter(f[root]["data"]))


def _replace_features(path: Path, make) -> str:
    root, entry = _first_entry(path)
    with h5py.File(path, "a") as f:
        group = f[root]["data"][entry]
        del group["features"]
        make(group, "features")
    return entry


def _build(csds: dict[str, Path]):
    return build_csd_dataset(labels=csds["labels"], words=csds["words"], visual=csds["visual"],
                             acoustic=csds["acoustic"], folds=csds["folds"], dataset="mosi")


def test_external_storage_is_refused(csds, tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    entry = _replace_features(csds["words"], lambda g, n: g.create_dataset(
        n, shape=(4, 1), dtype="S32", external=[(str(secret), 0, h5py.h5f.UNLIMITED)]))
    with pytest.raises(DataFormatError, match=rf"entry '{entry}' dataset 'features' stores its data in the "
                                              r"external file .*passwd.*refused"):
        _build(csds)


def test_external_link_is_refused(csds, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros((3, 47))
    root, entry = _first_entry(csds["visual"])
    with h5py.File(csds["visual"], "a") as f:
        group = f[root]["data"][entry]
        del group["features"]
        group["features"] = h5py.ExternalLink(str(other), "/x")
    with pytest.raises(DataFormatError, match=rf"'features' is an external link to .*other.h5.*refused"):
        _build(csds)
    # a whole entry linked to another file is refused the same way
    with h5py.File(csds["visual"], "a") as f:
        f[root]["data"]["linked"] = h5py.ExternalLink(str(other), "/")
    with pytest.raises(DataFormatError, match="entry 'linked' is an external link"):
        CsdSequence(csds["visual"], role="visual").read("linked")


def test_virtual_dataset_is_refused(csds, tmp_path):
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["x"] = np.ones((3, 47))
    layout = h5py.VirtualLayout(shape=(3, 47), dtype="f8")
    layout[:] = h5py.VirtualSource(str(src), "x", shape=(3, 47))
    entry = _replace_features(csds["visual"], lambda g, n: g.create_virtual_dataset(n, layout))
    with pytest.raises(DataFormatError, match=rf"entry '{entry}' dataset 'features' is a virtual dataset"):
        _build(csds)


def test_huge_declared_dataset_is_refused_before_allocation(csds):
    # chunked and never written: 70 GiB of fill values in a file of a few kB
    entry = _replace_features(csds["acoustic"], lambda g, n: g.create_dataset(
        n, shape=(250_000_000, 37), dtype="f8", chunks=(1024, 37), compression="gzip"))
    assert csds["acoustic"].stat().st_size < 2_000_000
    with pytest.raises(DataFormatError, match=rf"entry '{entry}' dataset 'features' declares shape "
                                              r"\(250000000, 37\).*refused before reading"):
        _build(csds)


def test_video_with_zero_frames_counts_as_absent(csds):
    root, entry = _first_entry(csds["visual"])
    with h5py.File(csds["visual"], "a") as f:
        group = f[root]["data"][entry]
        del group["features"], group["intervals"]
        group.create_dataset("features", shape=(0, 47), dtype="f8")
        group.create_dataset("intervals", shape=(0, 2), dtype="f8")
    ds = _build(csds)
    assert ds.meta["skipped_entries"]["visual"] == {entry: "no rows (a video with zero frames)"}
    assert ds.meta["dropped"]["missing_modality"] >= 1
    assert all(not s.id.startswith(entry + "_") for segs in ds.splits.values() for s in segs)


def test_valid_files_still_read(csds):
    ds = _build(csds)
    assert sum(ds.split_sizes().values()) > 0
    assert read_csd(csds["visual"])
