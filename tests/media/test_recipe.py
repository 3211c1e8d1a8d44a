"""The recipe: round trip, fingerprint, validation of a recorded (untrusted) recipe, and the refusal to
re-create features with other extractor versions. Importing misalatch.media loads no media library."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from misalatch.errors import DataFormatError, MediaError
from misalatch.media import Recipe, check_recipe_reproducible, default_recipe
from misalatch.media.recipe import installed_version


def test_default_recipe_records_the_installed_tools_and_names() -> None:
    recipe = default_recipe()
    tools = recipe.tool_versions()
    assert tools == {"av": installed_version("av"), "afx-audio": installed_version("afx-audio"),
                     "mediapipe": "0.10.14"}
    assert recipe.sample_rate == 16000 and recipe.visual_rate == 15.0 and recipe.acoustic == "afx-egemaps"
    assert recipe.acoustic_dim == len(recipe.acoustic_names) == 26
    assert recipe.visual_dim == len(recipe.visual_names) == 143
    assert len(set(recipe.visual_names)) == 143 and recipe.visual_names[-1] == "face_present"


def test_round_trip_and_fingerprint() -> None:
    recipe = default_recipe(visual_rate=30.0)
    data = json.loads(json.dumps(recipe.to_dict()))
    back = Recipe.from_dict(data)
    assert back == recipe and back.fingerprint() == recipe.fingerprint()
    assert len(recipe.fingerprint()) == 64
    assert default_recipe().fingerprint() != recipe.fingerprint()  # a parameter changes the key
    assert default_recipe().fingerprint() == default_recipe().fingerprint()


@pytest.mark.parametrize("change, field", [
    ({"visual_rate": "fast"}, "visual_rate"),
    ({"visual_rate": -1}, "visual_rate"),
    ({"sample_rate": 16000.5}, "sample_rate"),
    ({"sample_rate": True}, "sample_rate"),
    ({"acoustic": "covarep"}, "acoustic"),
    ({"visual_names": ["a", "b"]}, "visual_names"),
    ({"acoustic_names": "Loudness"}, "acoustic_names"),
    ({"tools": ["av"]}, "tools"),
    ({"format": 2}, "format"),
    ({"visual_dim": 7}, "visual_dim"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_recorded_recipe_names_the_field(change: dict, field: str) -> None:
    data = {**default_recipe().to_dict(), **change}
    with pytest.raises(DataFormatError, match=rf"run/recipe\.json: .*{field}"):
        Recipe.from_dict(data, source="run/recipe.json")


def test_missing_field_and_non_mapping() -> None:
    data = default_recipe().to_dict()
    del data["max_side"]
    with pytest.raises(DataFormatError, match="'max_side' is missing"):
        Recipe.from_dict(data)
    with pytest.raises(DataFormatError, match="expected a mapping"):
        Recipe.from_dict(["not", "a", "recipe"])  # type: ignore[arg-type]


def test_reproducible_recipe_is_returned() -> None:
    recipe = default_recipe(visual_rate=30.0)
    assert check_recipe_reproducible(recipe.to_dict()) == recipe
    assert check_recipe_reproducible(recipe, default_recipe(visual_rate=30.0)) == recipe


def test_other_extractor_versions_are_refused_naming_both() -> None:
    recorded = default_recipe().to_dict()
    recorded["tools"] = {**recorded["tools"], "mediapipe": "0.10.9"}
    with pytest.raises(MediaError, match=r"^run: .*mediapipe 0\.10\.9 \(installed: 0\.10\.14\)") as info:
        check_recipe_reproducible(recorded, source="run")
    assert "\n" not in str(info.value)
    with pytest.raises(MediaError, match="differs from the recorded one in visual_rate"):
        check_recipe_reproducible(default_recipe(), replace(default_recipe(), visual_rate=30.0))


def test_default_recipe_refuses_derived_fields_and_unknown_parameters() -> None:
    with pytest.raises(DataFormatError, match="derived"):
        default_recipe(tools=())
    with pytest.raises(DataFormatError, match="recipe"):
        default_recipe(colour=True)
    with pytest.raises(DataFormatError, match="max_side"):
        default_recipe(max_side=10)


def test_importing_misalatch_media_loads_no_media_library() -> None:
    code = ("import sys, misalatch, misalatch.media, misalatch.media.recipe; misalatch.media.default_recipe(); "
            "print(sorted(m for m in ('av', 'mediapipe', 'cv2', 'afx_audio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_missing_media_extra_is_one_error_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from misalatch.errors import MissingDependencyError
    from misalatch.media import _deps

    real = importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name.split(".")[0] == "av":
            raise ImportError("No module named 'av'")
        return real(name, *args)

    monkeypatch.setattr(_deps.importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"needs av .*misalatch\[media\].*--no-deps mediapipe==0\.10\.14"):
        _deps.require("av")


def test_extract_clip_refuses_a_hand_built_recipe_without_names(clips) -> None:
    from misalatch.media import extract_clip

    with pytest.raises(DataFormatError, match="acoustic_names"):
        extract_clip(clips["audio_only"], Recipe(), modalities=("acoustic",))
