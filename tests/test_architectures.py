"""Architecture specs: validation, building, safetensors metadata, optional transformers, third-party plugins."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelkin.registry.architectures import (
    ARCH_METADATA_KEY,
    ENTRY_POINT_GROUP,
    ArchitectureUnavailable,
    InvalidArchitecture,
    UnknownArchitecture,
    build_module,
    input_space,
    known_families,
    spec_from_hf_config,
    spec_from_safetensors_metadata,
    spec_to_safetensors_metadata,
    validate_spec,
)

MLP = {"family": "mlp", "in_features": 64, "hidden": [64, 32], "num_classes": 10, "input_space": "digits-64"}
CNN = {"family": "cnn", "image_shape": [1, 8, 8], "channels": [8, 8], "num_classes": 5, "input_space": "digits-64"}
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "modelkin-example-arch"


def test_builtin_specs_validate_to_themselves() -> None:
    assert validate_spec(MLP) == MLP
    assert validate_spec(CNN) == CNN
    assert {"mlp", "cnn", "hf-transformers"} <= set(known_families())


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({"in_features": 3}, "string 'family'"),
        ({**MLP, "num_classes": 0}, "'num_classes'"),
        ({**MLP, "num_classes": True}, "'num_classes'"),
        ({**MLP, "hidden": [64, "32"]}, "'hidden'"),
        ({**MLP, "dropout": 0.1}, "'dropout'"),
        ({k: v for k, v in MLP.items() if k != "input_space"}, "'input_space'"),
        ({**CNN, "channels": [4, 4, 4, 4], "image_shape": [1, 4, 4]}, "too often"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(spec: object, fragment: str) -> None:
    with pytest.raises(InvalidArchitecture, match=fragment):
        validate_spec(spec)


def test_unknown_family_names_itself_and_the_known_ones() -> None:
    with pytest.raises(UnknownArchitecture) as caught:
        build_module({"family": "resnet-9000", "num_classes": 3})
    assert "'resnet-9000'" in str(caught.value) and "mlp" in str(caught.value)
    assert caught.value.hint is not None and ENTRY_POINT_GROUP in caught.value.hint


@pytest.mark.parametrize("spec", [MLP, CNN])
def test_builtin_modules_split_into_trunk_and_head(spec: dict[str, object]) -> None:
    module = build_module(spec).eval()
    x = torch.rand(4, 64)
    assert torch.equal(module(x), module.get_submodule("head")(module.get_submodule("trunk")(x)))
    assert module(x).shape == (4, spec["num_classes"])
    assert {"head.weight", "head.bias"} <= set(module.state_dict())
    assert input_space(spec) == "digits-64"


def test_mlp_tensor_names_follow_its_layers() -> None:
    names = list(build_module(MLP).state_dict())
    assert names == ["trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias", "head.weight", "head.bias"]


def test_spec_survives_safetensors_metadata(tmp_path: Path) -> None:
    module = build_module(CNN).eval()
    path = tmp_path / "m.safetensors"
    save_file(module.state_dict(), str(path), metadata=spec_to_safetensors_metadata(CNN))
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"][ARCH_METADATA_KEY] == json.dumps(CNN, sort_keys=True, separators=(",", ":"))
    spec = spec_from_safetensors_metadata(header["__metadata__"])
    assert spec == CNN
    loaded = build_module(spec)
    loaded.load_state_dict(load_file(str(path)), strict=True)
    x = torch.rand(3, 64)
    assert torch.equal(loaded.eval()(x), module(x))


def test_metadata_without_or_with_broken_spec() -> None:
    assert spec_from_safetensors_metadata(None) is None
    assert spec_from_safetensors_metadata({"format": "pt"}) is None
    with pytest.raises(InvalidArchitecture, match="not valid JSON"):
        spec_from_safetensors_metadata({ARCH_METADATA_KEY: "{oops"})


def test_hf_config_needs_transformers_only_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    spec = spec_from_hf_config(config)
    assert spec == {"family": "hf-transformers", "config": config}
    assert spec_from_hf_config({"hidden_size": 32}) is None
    assert validate_spec(spec) == spec  # storable without transformers
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ArchitectureUnavailable) as caught:
        build_module(spec)
    assert caught.value.hint == "pip install 'modelkin[transformers]'"


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sys, modelkin.registry as r; before = 'torch' in sys.modules;"
        "import modelkin.registry.architectures; print(before, 'torch' in sys.modules)"
    )
    before, after = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if before == "True":
        pytest.skip("modelkin.registry itself imports torch, so this module's imports cannot be told apart")
    assert after == "False"


def install_example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the README's example plugin with pip (offline) into a private site dir, as a user would."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the plugin offline (--no-build-isolation) needs setuptools in this environment")
    source = shutil.copytree(EXAMPLE_PLUGIN, tmp_path / "src")  # pip builds in place: keep the repo clean
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delitem(sys.modules, "modelkin_example_arch", raising=False)


def test_example_plugin_installs_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example plugin, installed with pip (offline) like a user would, is found by entry point."""
    install_example_plugin(tmp_path, monkeypatch)
    try:
        spec = {"family": "example-logreg", "in_features": 64, "num_classes": 3, "input_space": "digits-64"}
        assert "example-logreg" in known_families()
        assert validate_spec(spec) == spec
        assert input_space(spec) == "digits-64"
        module = build_module(spec).eval()
        assert set(module.state_dict()) == {"head.weight", "head.bias"}
        assert module(torch.rand(2, 64)).shape == (2, 3)
        with pytest.raises(InvalidArchitecture, match="'num_classes' must be a positive integer"):
            validate_spec({**spec, "num_classes": 0})
    finally:
        sys.modules.pop("modelkin_example_arch", None)
