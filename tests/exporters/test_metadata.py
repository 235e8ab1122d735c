"""The model metadata reader (``exporters.metadata``): out-of-range values are refused when a model is opened.

A NaN or out-of-[-1, 1] threshold would silently call every pair "different", a zero or NaN
``std`` would turn every input into inf/NaN. Each is one line naming the key; a fuzz of the
reader (random JSON values, random bytes, random ``metadata_props``) checks that it returns
valid metadata or raises ``ToolkitError``, never another exception.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporters import metadata
from exporters.onnx_export import read_info
from tests.scoring.test_bad_input import only_line
from tests.test_cli import invoke
from toolkit.errors import ToolkitError

GOOD = {"format": metadata.FORMAT, "image_size": 16, "resize_size": 18, "channels": 3, "mean": [0.5, 0.4, 0.3],
        "std": [0.25, 0.2, 0.3], "embedding_dim": 12, "threshold": 0.6, "unknown_threshold": 0.7}
FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize(("key", "value"), [
    ("threshold", math.nan), ("threshold", 5.0), ("threshold", -1.5), ("threshold", math.inf),
    ("unknown_threshold", math.nan), ("unknown_threshold", 1.01),
    ("std", [0.25, 0.0, 0.3]), ("std", [0.25, -0.2, 0.3]), ("std", [0.25, math.nan, 0.3]),
    ("std", [math.inf, 0.2, 0.3]), ("mean", [0.5, math.nan, 0.3]),
    ("image_size", 0), ("embedding_dim", -3), ("resize_size", 8), ("image_size", 10**9),
    ("support_tta", 65), ("support_tta", -1), ("support_augment", {"crop_min_scale": 0.0}),
    ("support_augment", {"hflip": 1.5}), ("support_augment", {"crop_min_scale": 0.9, "crop_max_scale": 0.5}),
    ("support_augment", {"warp": 1.0}),
])
def test_out_of_range_metadata_is_refused_naming_the_key(key: str, value: object, tmp_path: Path) -> None:
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps({**GOOD, key: value}))  # json writes NaN / Infinity, and reads them back
    with pytest.raises(ToolkitError, match=rf"{path}: metadata key {key}") as caught:
        metadata.read_json(path)
    assert "\n" not in str(caught.value)


def test_edge_values_are_accepted(tmp_path: Path) -> None:
    for threshold in (-1.0, 1.0, 0.0, None):
        info = metadata.ModelInfo.from_dict({**GOOD, "threshold": threshold, "unknown_threshold": threshold}, "x")
        assert info.thresholds.pair == threshold and info.thresholds.unknown == threshold


def _set_prop(onnx_path: Path, key: str, value: str) -> None:
    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save_model(model, str(onnx_path))


@pytest.mark.parametrize(("key", "value"), [("threshold", "NaN"), ("threshold", "5.0"),
                                            ("unknown_threshold", "NaN"), ("std", "[0.25, 0, 0.3]")])
def test_score_with_a_tampered_model_is_one_line(key: str, value: str, exported_run: Path, tmp_path: Path,
                                                 images: Path) -> None:
    model = tmp_path / "encoder.onnx"
    model.write_bytes((exported_run / "export" / "encoder.onnx").read_bytes())
    _set_prop(model, key, value)
    paths = sorted(images.rglob("*.png"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\n" + "".join(f"{a},{b}\n" for a, b in zip(paths[:3], paths[3:6])))
    line = only_line(invoke("score", str(model), "--pairs", str(pairs), "--out", str(tmp_path / "s.csv"),
                            "--threads", "1", "--workers", "0"))
    assert f"{model}: metadata key {key}" in line
    assert not (tmp_path / "s.csv").exists()


def _check_valid(info: metadata.ModelInfo) -> None:
    pre = info.preprocessing
    assert pre.channels in (1, 3) and len(pre.mean) == len(pre.std) == pre.channels
    assert all(math.isfinite(s) and s > 0 for s in pre.std) and all(math.isfinite(m) for m in pre.mean)
    assert 1 <= pre.image_size <= pre.resize_size <= metadata.MAX_SIZE
    assert 1 <= info.embedding_dim <= metadata.MAX_SIZE
    assert 0 <= info.support_tta <= 64
    assert info.support_augment is None or all(math.isfinite(v) for v in info.support_augment.values())
    for value in (info.thresholds.pair, info.thresholds.unknown):
        assert value is None or (math.isfinite(value) and -1 <= value <= 1)


JSON_LEAVES = (st.none() | st.booleans() | st.integers(-10, 40) | st.integers() | st.floats(allow_nan=True)
               | st.text(max_size=5) | st.sampled_from(["16", "3", "0.5", "NaN", metadata.FORMAT]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=3), inner, max_size=3), max_leaves=8)
KEYS = st.sampled_from(sorted(GOOD) + ["opset", "kind", "checkpoint", "toolkit_version", "extra", "support_tta",
                                       "support_augment"])


@FUZZ
@given(changes=st.dictionaries(KEYS, JSON_VALUES, max_size=4), dropped=st.sets(st.sampled_from(sorted(GOOD))))
def test_fuzz_from_dict_gives_valid_metadata_or_one_toolkit_error(changes: dict, dropped: set) -> None:
    data = {k: v for k, v in {**GOOD, **changes}.items() if k not in dropped}
    try:
        info = metadata.ModelInfo.from_dict(data, "fuzz")
    except ToolkitError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        return
    _check_valid(info)


@FUZZ
@given(blob=st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), JSON_VALUES)
       | st.builds(lambda k, v: json.dumps({**GOOD, k: v}).encode(), KEYS, JSON_VALUES))
def test_fuzz_read_json_on_random_files(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "encoder.json"
        path.write_bytes(blob)
        try:
            info = metadata.read_json(path)
        except ToolkitError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            return
    _check_valid(info)


@FUZZ
@given(key=KEYS, raw=st.text(max_size=12) | st.sampled_from(["NaN", "Infinity", "-1e999", "[1e308, 2]", "1e400"]))
def test_fuzz_onnx_metadata_props(key: str, raw: str) -> None:
    props = metadata.to_props(metadata.ModelInfo.from_dict(GOOD, "good"))
    props[key] = raw
    try:
        info = metadata.from_props(props, "model.onnx")
    except ToolkitError as exc:
        assert str(exc).startswith("model.onnx") and "\n" not in str(exc)
        return
    _check_valid(info)


def test_read_info_refuses_a_tampered_onnx(exported_run: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes((exported_run / "export" / "encoder.onnx").read_bytes())
    _set_prop(model, "threshold", "NaN")
    with pytest.raises(ToolkitError, match="metadata key threshold is nan"):
        read_info(model)


def test_support_views_settings_round_trip_and_stay_out_of_older_layouts(exported_run: Path) -> None:
    from toolkit.engine.checkpoint import Checkpoint

    info = metadata.ModelInfo.from_dict({**GOOD, "support_tta": 8, "support_augment": {"crop_min_scale": 0.7, "hflip": 0}},
                                        "x")
    assert info.support_tta == 8 and info.support_augment == {"crop_min_scale": 0.7, "hflip": 0.0}
    assert metadata.from_props(metadata.to_props(info), "x") == info
    plain = metadata.ModelInfo.from_dict(GOOD, "x")
    assert plain.support_tta == 0 and plain.support_augment is None
    assert "support_tta" not in plain.to_dict() and "support_augment" not in plain.to_dict()
    for bad in (2.5, True, "3", None):
        with pytest.raises(ToolkitError, match="broken toolkit metadata"):
            metadata.ModelInfo.from_dict({**GOOD, "support_tta": bad}, "x")
    # export records the checkpoint's fine-tuning augmentation, field by field
    recorded = json.loads((exported_run / "export" / "encoder.json").read_text())["support_augment"]
    augment = Checkpoint.load(exported_run).recipe.finetune.augment
    assert recorded == {name: float(getattr(augment, name)) for name in recorded}
    assert set(recorded) == set(augment.__dataclass_fields__)


def test_encoder_json_is_byte_identical_to_the_flat_layout() -> None:
    """``ModelInfo`` composes ``Preprocessing`` and ``Thresholds``; on disk it stays flat, key for key and in order."""
    from toolkit.data.preprocess import Preprocessing
    from toolkit.evaluate.report import Thresholds

    info = metadata.ModelInfo(Preprocessing(16, 20, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)), 8, Thresholds(0.61, 0.72),
                              kind="finetune", toolkit_version="1.2.3", opset=20, checkpoint="run/checkpoint.pt",
                              features="embedding")
    # written by the ModelInfo of flat fields (before it composed Preprocessing and Thresholds)
    before = ('{"format": "toolkit-encoder", "input_name": "images", "output_name": "embeddings", "image_size": 16, '
              '"resize_size": 20, "channels": 3, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "embedding_dim": 8, '
              '"threshold": 0.61, "kind": "finetune", "toolkit_version": "1.2.3", "opset": 20, '
              '"checkpoint": "run/checkpoint.pt", "unknown_threshold": 0.72, "features": "embedding", '
              '"input_shape": ["batch", 3, 16, 16]}')
    assert json.dumps(info.to_dict()) == before
    assert metadata.ModelInfo.from_dict(json.loads(before), "x") == info
    assert metadata.from_props(metadata.to_props(info), "x") == info
