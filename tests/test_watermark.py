"""The NeuralMark algorithms as pure functions: keys and hashing, filter, layer rule, embedding, verification,
permutation alignment, the training-time regulariser, and the Uchida baseline they are measured against."""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest
import torch

from modelkin.provenance.watermark import (
    DEFAULT_MARGIN,
    TRAINING_MARGIN,
    Detection,
    Projection,
    Regulariser,
    align,
    binomial_tail,
    choose_layer,
    commitment,
    consumer,
    corrected,
    detect,
    embed_posthoc,
    fine_tune,
    generate_key,
    plan_rounds,
    pool_indices,
    pool_size,
    projections,
    survivors,
    unit_metric,
    watermark_bits,
)
from modelkin.provenance.watermark.keys import BITS_TAG, WatermarkKey
from modelkin.provenance.watermark.uchida import uchida_embed, uchida_forge, uchida_key, uchida_matched


@pytest.fixture(scope="module")
def key() -> WatermarkKey:
    return generate_key(512, 256, seed=b"test")


def test_keys_are_gaussian_and_reproducible_only_from_a_seed(key: WatermarkKey) -> None:
    assert key.matrix.shape == (512, 256) and key.matrix.dtype == np.float32
    assert abs(float(key.matrix.mean())) < 0.02 and abs(float(key.matrix.std()) - 1) < 0.02
    assert np.array_equal(generate_key(512, 256, seed=b"test").matrix, key.matrix)
    assert not np.array_equal(generate_key(512, 256).matrix, generate_key(512, 256).matrix)  # OS entropy
    with pytest.raises(ValueError, match="multiple of 8"):
        generate_key(512, 100)
    with pytest.raises(ValueError, match="at least as many rows"):
        generate_key(128, 256)


def test_bits_are_shake256_of_the_key_msb_first(key: WatermarkKey) -> None:
    raw = hashlib.shake_256(BITS_TAG + struct.pack(">II", 512, 256) + key.matrix.astype("<f4").tobytes()).digest(32)
    first = raw[0]
    assert [int(b) for b in key.watermark()[:8]] == [(first >> (7 - i)) & 1 for i in range(8)]
    assert key.hash_ok()
    altered = key.matrix.copy()
    altered[0, 0] += 1e-3
    assert not np.array_equal(watermark_bits(altered), key.watermark())
    assert commitment(altered) != key.commitment() and key.commitment().startswith("sha256:")
    assert not WatermarkKey(altered, key.claimed_bits).hash_ok()


def test_filter_keeps_the_entries_under_one_bits_each_round(key: WatermarkKey) -> None:
    bits = key.watermark()
    one = survivors(1000, bits, 1)
    expected = [i for i in range(768) if bits[i % 256]]  # truncated to 3 x 256, tiled
    assert one.tolist() == expected
    two = survivors(1000, bits, 2)
    usable = (len(one) // 256) * 256
    assert two.tolist() == [one[i] for i in range(usable) if bits[i % 256]]
    index = pool_indices(20000, bits, 2, 512)
    assert index.shape[1] == 512 and len(set(index.ravel())) == index.size
    with pytest.raises(ValueError, match="fewer than"):
        pool_indices(600, bits, 1, 512)


def test_layer_rule_skips_heads_embeddings_norms_and_biases(key: WatermarkKey) -> None:
    shapes = {
        "embeddings.word_embeddings.weight": ((30000, 384), "F32"),
        "encoder.layer.0.attention.output.LayerNorm.weight": ((384,), "F32"),
        "encoder.layer.0.intermediate.dense.weight": ((1536, 384), "F32"),
        "encoder.layer.1.intermediate.dense.weight": ((1536, 384), "F32"),
        "encoder.layer.2.intermediate.dense.weight": ((1536, 384), "F32"),
        "encoder.layer.10.intermediate.dense.weight": ((1536, 384), "F32"),
        "encoder.layer.11.intermediate.dense.weight": ((1536, 384), "F32"),
        "encoder.layer.0.intermediate.dense.bias": ((1536,), "F32"),
        "head.weight": ((5000, 384), "F32"),
        "classifier.weight": ((5000, 384), "F32"),
        "counts": ((2000, 384), "I64"),
    }
    plan = choose_layer(shapes, key.watermark(), key.rows)
    assert plan.layer == "encoder.layer.2.intermediate.dense.weight"  # mid-depth in natural order (2 < 10 < 11)
    assert plan.pool >= 32 and plan.rounds == 4
    rounds, pool = plan_rounds(4096, key.watermark(), 512)  # too small for m >= 8: one round, the most entries
    assert rounds == 1 and 1 <= pool < 8
    with pytest.raises(ValueError, match="large enough"):
        choose_layer({"trunk.0.weight": ((16, 8), "F32")}, key.watermark(), key.rows)


def test_binomial_tail_is_exact() -> None:
    assert binomial_tail(0, 256) == 1.0
    assert binomial_tail(256, 256) == 2.0**-256
    assert binomial_tail(255, 256) == 257 * 2.0**-256
    assert binomial_tail(129, 256) == pytest.approx((1 - math.comb(256, 128) / 2**256) / 2)
    assert binomial_tail(200, 256) < 2.0**-64 < binomial_tail(199, 256)


def test_posthoc_embedding_is_detected_and_unmarked_weights_are_not(key: WatermarkKey) -> None:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((256, 512)) * 0.05).astype(np.float32)
    before = weight.copy()
    marked = embed_posthoc(weight, key, rounds=2, margin=1.0)
    assert np.array_equal(weight, before)  # the input is not mutated
    d = detect(marked.reshape(-1), key, rounds=2)
    assert d.detected and d.matched_bits == 256 and d.hash_ok and d.p_value == 2.0**-256
    z = projections(marked.reshape(-1), key, rounds=2)
    signs = 2.0 * key.watermark() - 1
    index = pool_indices(weight.size, key.watermark(), 2, 512)
    spread = np.linalg.norm(weight.reshape(-1).astype(np.float64)[index].mean(0))  # |w~| of the unmarked tensor
    assert (signs * z >= 0.99 * spread).all()  # every bit beyond the margin (1.0 x the spread)
    untouched = np.setdiff1d(np.arange(weight.size), index.ravel())
    assert np.array_equal(marked.reshape(-1)[untouched], weight.reshape(-1)[untouched])  # only pooled entries move
    assert not detect(weight.reshape(-1), key, rounds=2).detected
    other = generate_key(512, 256, seed=b"other")
    assert not detect(marked.reshape(-1), other, rounds=2).detected


def test_the_consumer_is_the_next_weight_that_reads_the_layers_outputs() -> None:
    mlp = {"head.weight": (9, 16), "head.bias": (9,), "trunk.0.weight": (64, 64), "trunk.0.bias": (64,),
           "trunk.2.weight": (64, 64), "trunk.4.weight": (16, 64), "trunk.10.weight": (5, 16)}  # fmt: skip
    assert consumer(mlp, "trunk.0.weight") == "trunk.2.weight"  # not trunk.4 (same width, further down)
    assert consumer(mlp, "trunk.4.weight") == "trunk.10.weight"  # depth order, not alphabetical
    assert consumer(mlp, "trunk.10.weight") is None  # nothing after it
    assert consumer({"a.1.weight": (8, 4), "a.2.weight": (3, 5)}, "a.1.weight") is None  # widths disagree
    conv = {"c.1.weight": (8, 1, 3, 3), "c.4.weight": (8, 8, 3, 3)}
    assert consumer(conv, "c.1.weight") == "c.4.weight"
    block = {"layer.2.output.dense.weight": (384, 1536), "layer.3.attention.output.dense.weight": (384, 384)}
    assert consumer(block, "layer.2.output.dense.weight") is None  # another kind of tensor: not a known reader


def test_the_unit_metric_is_what_the_next_layer_reads_normalised_and_floored() -> None:
    reader = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 1.0]])  # reads unit 0 strongly, unit 1 not at all
    gram = reader.T @ reader  # diag 25, 0, 2
    expected = (0.75 * gram + 0.25 * np.diag(np.diag(gram))) / 9.0 + 0.1 * np.eye(3)
    assert np.allclose(unit_metric(reader, floor=0.1, together=0.75), expected)
    assert np.allclose(unit_metric(reader, floor=0.0, together=0.0), np.diag([25, 0, 2]) / 9.0)  # independent units
    assert np.allclose(unit_metric(np.zeros((2, 3)), floor=0.5), 1.5 * np.eye(3))  # a silent reader says nothing


def test_a_downstream_metric_keeps_every_bit_and_changes_what_the_next_layer_sees_less(key: WatermarkKey) -> None:
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    reader = rng.standard_normal((16, 64))  # a narrower next layer: 48 directions of the 64 units it cannot see
    metric = unit_metric(reader, floor=0.1, together=1.0)
    plain = embed_posthoc(weight, key, 1, margin=1.0)
    marked = embed_posthoc(weight, key, 1, margin=1.0, metric=metric)
    index = pool_indices(weight.size, key.watermark(), 1, 512)
    spread = np.linalg.norm(weight.reshape(-1).astype(np.float64)[index].mean(0))
    z = projections(marked.reshape(-1), key, rounds=1)
    assert ((2.0 * key.watermark() - 1) * z >= 0.99 * spread).all()  # every bit still beyond the margin
    untouched = np.setdiff1d(np.arange(weight.size), index.ravel())
    assert np.array_equal(marked.reshape(-1)[untouched], weight.reshape(-1)[untouched])

    def seen(m: np.ndarray) -> float:  # how much the next layer's pre-activations move, inputs isotropic
        return float(np.linalg.norm(reader @ (m.astype(np.float64) - weight)))

    assert seen(marked) < 0.5 * seen(plain)
    assert np.linalg.norm(marked - weight) > np.linalg.norm(plain - weight)  # it moves more, where it is unseen


def test_a_larger_margin_survives_more_noise_and_costs_more(key: WatermarkKey) -> None:
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((256, 512)) * 0.05).astype(np.float32)
    noise = rng.standard_normal(weight.shape).astype(np.float32) * 0.05
    small, large = embed_posthoc(weight, key, 2, margin=0.1), embed_posthoc(weight, key, 2, margin=2.0)
    assert np.linalg.norm(small - weight) < np.linalg.norm(large - weight)
    matched = [detect((w + noise).reshape(-1), key, 2).matched_bits for w in (small, large)]
    assert matched[0] < matched[1]


def test_regulariser_embeds_during_training(key: WatermarkKey) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 128)
    reg = Regulariser(key, rounds=1, numel=layer.weight.numel(), lam=1.0)
    assert not detect(layer.weight.detach().numpy().reshape(-1), key, 1).detected
    optimiser = torch.optim.Adam(layer.parameters(), lr=1e-3)
    for _ in range(200):
        loss = reg(layer.weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert detect(layer.weight.detach().numpy().reshape(-1), key, 1).detected


def test_a_regulariser_margin_asks_each_bit_for_more(key: WatermarkKey) -> None:
    """NeuralMark's loss is margin 0; the default asks each bit for TRAINING_MARGIN of the spread, more is dearer."""
    layer = torch.nn.Linear(64, 128)
    plain = Regulariser(key, rounds=1, numel=layer.weight.numel(), margin=0.0)
    default = Regulariser(key, rounds=1, numel=layer.weight.numel())
    wide = Regulariser(key, rounds=1, numel=layer.weight.numel(), margin=1.0)
    assert default.margin == TRAINING_MARGIN
    with torch.no_grad():
        assert float(wide(layer.weight)) > float(default(layer.weight)) > float(plain(layer.weight)) > 0


def test_healing_is_the_plain_fine_tune_while_the_bits_hold_and_keeps_the_data_free_margin(
    key: WatermarkKey,
) -> None:
    """Healing costs nothing while every bit stays past the data-free mark's margin (it is then exactly the plain
    fine-tune; the previous rule, the regulariser's loss beside the task loss, changed every step), and where the
    plain fine-tune would pull bits back it ends with each of them at that margin."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 4))
    source = model[0].weight.detach().numpy().copy()
    pool = pool_size(source.size, key.watermark(), 1, key.rows)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(embed_posthoc(source, key, 1, pool, DEFAULT_MARGIN)))
    marked = {n: t.clone() for n, t in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    y = (x[:, :4] @ rng.standard_normal((4, 4))).argmax(1)
    index = pool_indices(source.size, key.watermark(), 1, key.rows, pool)
    need = DEFAULT_MARGIN * float(np.linalg.norm(source.reshape(-1).astype(np.float64)[index].mean(0)))
    signs = 2.0 * key.watermark() - 1.0
    projection = Projection(key, 1, pool, source, DEFAULT_MARGIN)

    def weakest(state: dict[str, torch.Tensor]) -> float:
        return float((signs * projections(state["0.weight"].numpy().reshape(-1), key, 1, pool)).min())

    def tuned(lr: float, healed: bool) -> dict[str, torch.Tensor]:
        model.load_state_dict(marked)
        return fine_tune(model, x, y, layer="0.weight", projection=projection if healed else None, lr=lr, epochs=1)

    assert weakest(marked) >= need
    gentle = tuned(1e-6, healed=False)
    assert weakest(gentle) >= need and not torch.equal(gentle["2.weight"], marked["2.weight"])
    assert all(torch.equal(gentle[n], t) for n, t in tuned(1e-6, healed=True).items())
    model.load_state_dict(marked)
    reg = Regulariser(key, rounds=1, numel=source.size, pool=pool, margin=0.5)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-6)
    for batch in torch.randperm(512, generator=torch.Generator().manual_seed(0)).split(64):  # the old rule
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[batch])), torch.from_numpy(y[batch]))
        optimiser.zero_grad()
        (loss + reg(model[0].weight)).backward()
        optimiser.step()
    assert not torch.equal(model[0].weight.detach(), gentle["0.weight"])
    assert weakest(tuned(1e-2, healed=False)) < need  # a real fine-tune pulls bits back...
    healed = tuned(1e-2, healed=True)
    assert weakest(healed) >= need  # ...which healing does not let it
    assert not torch.equal(healed["0.weight"], marked["0.weight"])  # the marked layer trains too, within the set
    with pytest.raises(KeyError, match="not a trainable parameter"):
        fine_tune(model, x, y, layer="missing.weight", projection=projection)


def test_alignment_undoes_row_and_column_permutations(key: WatermarkKey) -> None:
    rng = np.random.default_rng(2)
    reference = embed_posthoc((rng.standard_normal((128, 96)) * 0.1).astype(np.float32), key, 1, margin=1.0)
    shuffled = reference[rng.permutation(128)][:, rng.permutation(96)]
    shuffled = shuffled + rng.standard_normal(shuffled.shape).astype(np.float32) * 0.01  # and fine-tuned a little
    assert not detect(shuffled.reshape(-1), key, 1).detected
    assert detect(align(shuffled, reference).reshape(-1), key, 1).detected
    with pytest.raises(ValueError, match="cannot align"):
        align(shuffled[:10], reference)


def test_alignment_leaves_an_unshuffled_copy_alone_and_recovers_shuffled_rows_of_a_drifted_one() -> None:
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((64, 32)).astype(np.float32)
    drifted = reference + 0.5 * rng.standard_normal(reference.shape).astype(np.float32)  # trained for a while
    assert align(drifted, reference) is drifted  # already in the reference's order: nothing to solve
    rows = rng.permutation(64)
    assert np.array_equal(align(drifted[rows], reference), drifted)  # a first layer: only its units shuffled


def test_two_readings_double_the_p_value() -> None:
    key = generate_key(512, 256, seed=b"two")
    flat = embed_posthoc(np.random.default_rng(0).standard_normal(4096).astype(np.float32), key, 1)
    one = detect(flat, key, 1)
    two = corrected(one, 2)
    assert two.p_value == 2 * one.p_value and two.matched_bits == one.matched_bits and two.detected
    assert not corrected(Detection(199, 256, binomial_tail(199, 256), True, False), 2).detected
    assert corrected(Detection(200, 256, binomial_tail(200, 256), True, True), 2).detected  # 200 bits still do
    assert not corrected(Detection(256, 256, 2.0**-256, False, False), 2).detected  # nor does it skip the hash


def test_a_forged_key_matches_its_bits_but_fails_the_hash_check(key: WatermarkKey) -> None:
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal((256, 512)) * 0.05).astype(np.float32)
    forged = generate_key(512, 256, seed=b"forger")
    z = projections(weight.reshape(-1), forged, 2)
    matrix = forged.matrix.copy()
    matrix[:, (z > 0) != forged.watermark().astype(bool)] *= -1  # flip the columns that disagree
    fake = WatermarkKey(matrix, forged.claimed_bits)
    assert not fake.hash_ok()
    d = detect(weight.reshape(-1), fake, 2)
    assert not d.detected and not d.hash_ok


def test_uchida_baseline_embeds_and_is_trivially_forged() -> None:
    rng = np.random.default_rng(4)
    weight = (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)
    k = uchida_key(weight.size, 256, rng)
    marked = uchida_embed(weight, k, margin=1.0)
    assert uchida_matched(marked, k)[0] == 256 and uchida_matched(weight, k)[0] < 200
    forged = uchida_forge(weight, 256, rng)
    assert uchida_matched(weight, forged)[0] == 256  # nothing ties the bits to the projection
