from __future__ import annotations

import pytest

from modelkin.errors import InvalidFilter, InvalidRef
from modelkin.refs import ModelRef
from modelkin.registry.filters import parse_filter
from modelkin.registry.rows import FIELDS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bert", ModelRef("bert")),
        ("org/bert-base.v2", ModelRef("org/bert-base.v2")),
        ("bert:12", ModelRef("bert", version=12)),
        ("bert@prod", ModelRef("bert", alias="prod")),
        ("sha256:53aa51172d14", ModelRef(None, digest_prefix="53aa51172d14")),
        ("SHA256:53AA51172D14", ModelRef(None, digest_prefix="53aa51172d14")),
    ],
)
def test_valid_refs(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "bert:", "bert:0", "bert:x", "bert@", "bert@1x", "sha256:abc", "sha256:zzzzzzzzzzzzzz", "a b", "../x",
     "/abs", "org//x", "bert:1:2", "bert:1@x", "-x"],
)  # fmt: skip
def test_invalid_refs(text: str) -> None:
    with pytest.raises(InvalidRef):
        ModelRef.parse(text)


def test_ref_round_trips() -> None:
    for text in ["bert", "bert:3", "bert@prod", "sha256:53aa51172d14"]:
        assert str(ModelRef.parse(text)) == text


RECORD = {"name": "bert-base", "family": "mlp", "parameters": 2_000_000, "version": 2, "tags.task": "digits",
          "tags.acc": "0.93", "yanked": False}  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("name LIKE 'bert%' AND tags.task = 'digits' AND family = 'mlp' AND parameters > 1e6", True),
        ("name LIKE 'BERT%'", False),
        ("name ILIKE 'BERT%'", True),
        ("name = 'bert-base' AND version >= 3", False),
        ("name = 'x' OR (family = 'mlp' AND version = 2)", True),
        ("family IN ('cnn', 'mlp')", True),
        ("tags.acc > 0.9", True),
        ("tags.missing = 'x'", False),
        ("tags.missing != 'x'", False),
        ("yanked = false", True),
        ("name != 'bert-base'", False),
        ("name = 'it''s'", False),
    ],
)
def test_filter_semantics(expr: str, matches: bool) -> None:
    assert parse_filter(expr, FIELDS)(RECORD) is matches


@pytest.mark.parametrize(
    "expr",
    [
        "name LIKE",
        "nosuch = 1",
        "name = 'open",
        "name = 1 AND",
        "(name = 'a'",
        "name ~ 'a'",
        "name LIKE 3",
        "(" * 1500 + "name = 'a'" + ")" * 1500,
    ],  # fmt: skip
)
def test_bad_filters_raise_one_clear_error(expr: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(expr, FIELDS)
    assert str(info.value).startswith("filter:")
