"""NeuralMark on the real all-MiniLM-L6-v2 weights through the Python API (Registry.ownership)."""

from __future__ import annotations

from pathlib import Path

import torch

from modelkin import Registry
from modelkin.provenance.watermark import generate_key


def test_minilm_is_marked_in_a_mid_depth_matrix_and_still_runs(minilm_dir: Path, tmp_path: Path) -> None:
    with Registry.init(tmp_path / "home") as reg:
        reg.register(minilm_dir, name="minilm")
        key = generate_key(seed=b"minilm-test")
        result = reg.ownership.embed("minilm", key, "minilm-marked")
        assert result.ref == "minilm-marked:1" and result.placement.pool >= 32 and result.placement.rounds == 4
        layer = result.placement.layer
        assert layer.startswith("encoder.layer.") and layer.endswith(".weight") and "LayerNorm" not in layer
        assert result.detection.matched_bits == 256 and result.relative_change < 0.1
        report = reg.ownership.verify("minilm-marked", key)
        assert report.detection.detected and report.detection.p_value < 2.0**-64
        assert report.placement.found_by == "record"
        assert not reg.ownership.verify("minilm", key).detection.detected
        marked = reg.get("minilm-marked")
        assert marked.relation == "watermarked" and marked.declared_parents == ("minilm:1",)
        assert {f.path for f in marked.files} == {f.path for f in reg.get("minilm").files}  # tokenizer etc. kept
        a, b = reg.load_module("minilm"), reg.load_module("minilm-marked")
        ids = torch.tensor([[101, 7592, 2088, 102]])
        with torch.no_grad():
            out_a, out_b = a(input_ids=ids).last_hidden_state, b(input_ids=ids).last_hidden_state
        assert 0 < float((out_b - out_a).norm() / out_a.norm()) < 0.05
