"""Hostile input ends quickly in one clear sentence and exit 1 (issue 10, "Bounded work on hostile input").

The inputs that once took minutes or gigabytes (a YAML alias bomb, a 300,000-dimension shape) run in a child
process with a 1 GiB address-space limit and a hang guard, so a regression fails here instead of passing slowly.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelkin import Registry


@pytest.fixture
def sqlite_registry() -> Iterator[Registry]:
    """Parsing hostile files does not depend on the database: these run on SQLite only."""
    reg = Registry.init()
    yield reg
    reg.close()


GUARD_SECONDS = 60  # a hang guard for a loaded CI machine, not a timing assertion: the fixed code needs ~1 s


def write_safetensors(path: Path, header: dict[str, Any] | bytes, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def assert_one_sentence(result: Any, fragment: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.stderr.startswith("Error: ") and fragment in result.stderr, result.stderr


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def run_bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process that may use at most 1 GiB and must finish within the guard."""
    return subprocess.run(
        [sys.executable, "-c", "from modelkin.cli.app import main; main()", *args],
        capture_output=True, text=True, timeout=GUARD_SECONDS, preexec_fn=_limit_memory,
    )  # fmt: skip


F32_1 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
HEADERS: list[tuple[str, bytes, str]] = [
    ("huge-int", b'{"w": {"dtype": "F32", "shape": [' + b"9" * 3000 + b'], "data_offsets": [0, 4]}}',
     "not a list of 64-bit unsigned integers"),
    ("over-4300-digits", b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
     "not a 64-bit integer"),
    ("dtype-list", json.dumps({"w": {**F32_1, "dtype": ["F32"]}}).encode(), "unknown dtype"),
    ("dtype-dict", json.dumps({"w": {**F32_1, "dtype": {"a": 1}}}).encode(), "unknown dtype"),
    ("lone-surrogate", b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "lone surrogate"),
    ("deep-metadata", b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests"),
    ("nan-offset", b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, NaN]}}', "not a 64-bit integer"),
    ("shape-dtype-offsets", json.dumps({"w": {**F32_1, "shape": [3]}}).encode(), "needs 12 bytes"),
    ("offsets-past-end", json.dumps({"w": {**F32_1, "data_offsets": [0, 8]}}).encode(), "needs 4 bytes"),
    ("float-dim", json.dumps({"w": {**F32_1, "shape": [1.0]}}).encode(), "64-bit unsigned"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "header", "fragment"), HEADERS, ids=[h[0] for h in HEADERS])
def test_malformed_safetensors_headers_are_one_clear_error(
    sqlite_registry: Registry, tmp_path: Path, cli: Any, case: str, header: bytes, fragment: str
) -> None:
    path = write_safetensors(tmp_path / f"{case}.safetensors", header, b"\0" * 4)
    assert_one_sentence(cli("register", path, "--name", "x"), fragment)
    assert sqlite_registry.list() == []


def test_header_over_the_format_limit_is_refused_before_reading(
    sqlite_registry: Registry, tmp_path: Path, cli: Any
) -> None:
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 200_000_000) + b"{}")
    assert_one_sentence(cli("register", path), "more than the 100000000 allowed")


def test_shape_of_300k_dimensions_is_bounded(sqlite_registry: Registry, tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [2] * 300_000, "data_offsets": [0, 4]}}  # a 1.8 MB header
    path = write_safetensors(tmp_path / "rank.safetensors", header, b"\0" * 4)
    result = run_bounded("register", str(path))
    assert result.returncode == 1 and "300000 dimensions, more than the 64 allowed" in result.stderr, result.stderr


def _hf_folder(tmp_path: Path, weights: Path, **files: str) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(weights, folder / "model.safetensors")
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text, encoding="utf-8", errors="surrogatepass")
    return folder


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(levels):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "---\n" + "\n".join(lines) + "\n---\n# bomb\n"


def test_yaml_alias_bomb_in_a_card_is_refused_in_bounded_memory(
    sqlite_registry: Registry, tmp_path: Path, weights: Path
) -> None:
    folder = _hf_folder(tmp_path, weights, README__md=_alias_bomb())
    result = run_bounded("import-hf", str(folder))
    assert result.returncode == 1 and "alias bomb" in result.stderr, result.stderr


def test_card_linked_to_a_device_is_refused_in_bounded_memory(
    sqlite_registry: Registry, tmp_path: Path, weights: Path
) -> None:
    folder = _hf_folder(tmp_path, weights)
    (folder / "README.md").symlink_to("/dev/zero")
    result = run_bounded("import-hf", str(folder))
    assert result.returncode == 1 and "/dev/zero" in result.stderr and "Traceback" not in result.stderr


CARDS = [
    ("recursive-alias", "---\na: &a [*a]\n---\n", "refers to itself"),
    ("deep", "---\na: " + "[" * 100 + "]" * 100 + "\n---\n", "nests deeper than 64 levels"),
    ("very-deep", "---\na: " + "[" * 5000 + "]" * 5000 + "\n---\n", "nests deeper than 64 levels"),
    ("oversized", "---\na: '" + "x" * 1_100_000 + "'\n---\n", "larger than 1000000 bytes"),
]


@pytest.mark.parametrize(("case", "card", "fragment"), CARDS, ids=[c[0] for c in CARDS])
def test_hostile_card_metadata_is_one_clear_error(
    sqlite_registry: Registry, tmp_path: Path, weights: Path, cli: Any, case: str, card: str, fragment: str
) -> None:
    folder = _hf_folder(tmp_path, weights, README__md=card)
    assert_one_sentence(cli("import-hf", folder), fragment)


def test_card_with_broken_yaml_or_odd_values_still_imports(
    sqlite_registry: Registry, tmp_path: Path, weights: Path, cli: Any
) -> None:
    folder = _hf_folder(tmp_path, weights, README__md="---\nlicense: mit\ndate: 2024-01-02\n7: seven\n---\n# m\n")
    result = cli("import-hf", folder, "--json")
    assert result.exit_code == 0, result.stderr
    assert sqlite_registry.get("hf").card == {"license": "mit", "date": "2024-01-02", "7": "seven"}
    (folder / "README.md").write_text("---\nlicense: [\n---\n# broken\n")
    result = cli("import-hf", folder, "--name", "broken", "--json")
    assert result.exit_code == 0 and any("not valid YAML" in w for w in json.loads(result.stdout)["warnings"])


CONFIGS = [
    ("deep", "[" * 100_000 + "]" * 100_000, "nests deeper than 64 levels"),
    ("deep-but-parseable", '{"a": ' + "[" * 500 + "]" * 500 + "}", "nests deeper than 64 levels"),
    ("over-4300-digits", '{"a": ' + "9" * 5000 + "}", "over 4300 digits"),
    ("nan", '{"model_type": "bert", "a": NaN}', "NaN, which JSON does not allow"),
    ("infinite", '{"model_type": "bert", "a": 1e999}', "out of range"),
    ("lone-surrogate", '{"model_type": "bert", "a": "\\ud800"}', "lone surrogate"),
]


@pytest.mark.parametrize(("case", "config", "fragment"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_hostile_config_json_is_one_clear_error(
    sqlite_registry: Registry, tmp_path: Path, weights: Path, cli: Any, case: str, config: str, fragment: str
) -> None:
    folder = _hf_folder(tmp_path, weights, config__json=config)
    assert_one_sentence(cli("import-hf", folder), fragment)
    assert sqlite_registry.list() == []


def test_deep_shard_index_and_arch_file_are_one_clear_error(
    sqlite_registry: Registry, tmp_path: Path, weights: Path, cli: Any
) -> None:
    folder = _hf_folder(
        tmp_path, weights, model__safetensors__index__json='{"weight_map": ' + "[" * 3000 + "]" * 3000 + "}"
    )
    assert_one_sentence(cli("register", folder), "nests deeper than 64 levels")
    arch = tmp_path / "arch.json"
    arch.write_text('{"family": "mlp", "x": ' + "9" * 5000 + "}")
    assert_one_sentence(cli("register", weights, "--arch", arch), "over 4300 digits")


def test_like_on_a_long_tag_runs_in_linear_time(registry: Registry, weights: Path, cli: Any) -> None:
    registry.register(weights, name="m", tags={"note": "a" * 3000})
    result = run_bounded("list", "--filter", "tags.note LIKE '%a%a%a%a%z'", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    result = cli("list", "--filter", "tags.note LIKE '%a%a%a%a%'", "--json")
    assert [v["name"] for v in json.loads(result.stdout)] == ["m"]
