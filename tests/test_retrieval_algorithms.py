"""The pure retrieval algorithms: estimators, the probe-space encoder, the knowledge proxy, order invariance."""

from __future__ import annotations

import numpy as np
import pytest

from modelkin.retrieval import baselines
from modelkin.retrieval.features import query_features
from modelkin.retrieval.proxy import knowledge_logme, nearest_probes
from modelkin.retrieval.space import fit_space


def _clusters(seed: int = 0, n: int = 20, d: int = 8, sep: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n)
    centres = rng.standard_normal((3, d)) * sep
    return centres[y] + rng.standard_normal((len(y), d)), y


def test_logme_and_knn_prefer_features_that_separate_the_classes() -> None:
    good, y = _clusters()
    noise = np.random.default_rng(1).standard_normal(good.shape)
    assert baselines.logme(good, y) > baselines.logme(noise, y)
    assert baselines.knn(good, y) == 1.0 and baselines.knn(noise, y) < 0.7


def _explicit_evidence(f: np.ndarray, t: np.ndarray) -> float:
    """The textbook fixed point and log evidence per sample, with explicit (D x D) matrices."""
    n, d = f.shape
    eig = np.linalg.eigvalsh(f.T @ f)
    alpha, beta = 1.0, 1.0
    for _ in range(500):
        m = beta * np.linalg.solve(alpha * np.eye(d) + beta * f.T @ f, f.T @ t)
        gamma = np.sum(beta * eig / (alpha + beta * eig))
        alpha, beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - t) ** 2)
    a_mat = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a_mat, f.T @ t)
    fit = beta / 2 * np.sum((f @ m - t) ** 2) + alpha / 2 * m @ m
    logdet = np.linalg.slogdet(a_mat)[1]
    return float(n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - fit - logdet / 2) / n


@pytest.mark.parametrize(("n", "d"), [(6, 5), (2, 10)])  # more samples than features, and fewer
def test_logme_matches_the_evidence_formula_at_its_fixed_point(n: int, d: int) -> None:
    """The SVD shortcut equals the explicit computation, averaged over the classes' one-hot columns."""
    f, y = _clusters(n=n, d=d)
    expected = np.mean([_explicit_evidence(f, (y == k).astype(float)) for k in np.unique(y)])
    assert np.isclose(baselines.logme(f, y), expected, atol=1e-4)


def test_leep_and_nce_of_a_perfect_source_model() -> None:
    y = np.repeat(np.arange(3), 5)
    perfect = np.eye(4)[y + 1] * 0.999 + 0.00025
    blind = np.full((len(y), 4), 0.25)
    assert np.isclose(baselines.nce(perfect, y), 0.0) and baselines.nce(blind, y) < -1.0
    assert baselines.leep(perfect, y) > -0.01 and np.isclose(baselines.leep(blind, y), np.log(1 / 3))


def test_the_space_encoder_is_deterministic_and_signed() -> None:
    pool = np.random.default_rng(3).random((300, 16))
    a, b = fit_space(pool, dims=8, landmarks=10), fit_space(pool.copy(), dims=8, landmarks=10)
    assert np.array_equal(a.components, b.components) and np.array_equal(a.landmarks, b.landmarks)
    rows = np.arange(len(a.components))
    assert (a.components[rows, np.abs(a.components).argmax(axis=1)] > 0).all()


def test_the_knowledge_proxy_is_centred_logme_when_the_query_samples_are_probes() -> None:
    rng = np.random.default_rng(4)
    pool_phi = rng.standard_normal((50, 6))
    logits = rng.standard_normal((50, 5))
    pick = np.arange(0, 50, 5)
    y = np.arange(10) % 2
    nearest = nearest_probes(pool_phi[pick], pool_phi)
    assert np.array_equal(nearest[0][:, 0], pick) and np.allclose(nearest[1][:, 0], 1.0)
    other = rng.standard_normal((50, 3))  # a model with another output width is scored in its own batch
    scores = knowledge_logme([logits, other, logits * 2], nearest, y)
    expected = [baselines.logme(f[pick] - f[pick].mean(axis=0), y) for f in (logits, other, logits * 2)]
    assert np.allclose(scores, expected)
    # an offset common to every sample does not change the score (it would without the centring)
    assert np.isclose(knowledge_logme([logits + 5.0], nearest, y)[0], scores[0])
    assert not np.isclose(baselines.logme(logits[pick] + 5.0, y), baselines.logme(logits[pick], y))


def test_the_knowledge_proxy_averages_the_nearest_probes_by_distance() -> None:
    pool_phi = np.array([[0.0], [1.0], [3.0], [10.0]])
    near, weights = nearest_probes(np.array([[0.5], [2.0]]), pool_phi, k=3)
    assert near.tolist() == [[0, 1, 2], [1, 2, 0]]
    assert np.allclose(weights.sum(axis=1), 1.0) and np.isclose(weights[0, 0], weights[0, 1])  # equidistant
    assert (np.diff(weights, axis=1) <= 1e-12).all() and weights[0, 2] < weights[0, 1]


def test_query_features_do_not_depend_on_label_names_or_order() -> None:
    pool = np.random.default_rng(5).random((200, 12))
    space = fit_space(pool, dims=6, landmarks=8)
    x, y = _clusters(d=12, n=4)
    q = query_features(x, y, space)
    renamed = query_features(x[::-1], (2 - y)[::-1] + 10, space)
    key = np.lexsort(q.prototypes.T)
    assert np.allclose(q.prototypes[key], renamed.prototypes[np.lexsort(renamed.prototypes.T)])
    assert np.allclose(q.landmarks, renamed.landmarks) and np.allclose(q.globals, renamed.globals)


@pytest.mark.parametrize("config", [{"dims": 4, "landmarks": 2, "hidden": 8, "out": 4}, {"dims": 4}, "not an object"])
def test_an_encoder_of_another_layout_is_a_clear_error(config: object) -> None:
    import json

    import torch
    from safetensors.torch import save

    from modelkin.errors import InvalidModelFile
    from modelkin.retrieval.scorers import ENCODER_FORMAT, Learned, TrainingFree

    blob = save({"bogus.weight": torch.zeros(3)}, metadata={ENCODER_FORMAT: json.dumps(config)})
    with pytest.raises(InvalidModelFile, match="does not fit this modelkin's encoder layout"):
        Learned.from_bytes(bytes(blob), TrainingFree(4, 2, 1.0))


def test_the_mix_weight_follows_the_score_that_ranks_held_out_tasks() -> None:
    from modelkin.retrieval.mixing import WEIGHTS, fit_weight, folds, mix

    rng = np.random.default_rng(6)
    truth = [rng.random(30) for _ in range(6)]
    noise = [rng.random(30) for _ in range(6)]
    assert fit_weight(truth, noise, truth)[0] == 0.0  # knowledge alone ranks perfectly
    assert fit_weight(noise, truth, truth)[0] == max(WEIGHTS)  # the learned score does
    weight, means = fit_weight([t + n for t, n in zip(truth, noise, strict=True)], truth, truth)
    assert 0.0 < weight and set(means) == {str(w) for w in WEIGHTS}
    k, v = rng.random(10), rng.random(10)
    assert np.allclose(mix(k * 10 + 3, v, 0.3), mix(k, v * 2, 0.3))  # z-scored: scales do not matter
    assert np.allclose(mix(k, np.ones(10), 0.5), mix(k, v, 0.0))  # a constant score adds nothing
    assert folds(3) == [] and sorted(np.concatenate(folds(7)).tolist()) == list(range(7))


def _trained_scorer(seed: int = 0) -> tuple[object, object]:
    """A small Learned scorer, trained for a few epochs on random model and query features, and its space."""
    from modelkin.retrieval.features import ModelFeatures
    from modelkin.retrieval.scorers import TrainingFree
    from modelkin.retrieval.training import TaskExample, train

    rng = np.random.default_rng(seed)
    space = fit_space(rng.random((200, 12)), dims=6, landmarks=8)
    free = TrainingFree(6, 8, space.bandwidth)
    models = [ModelFeatures(rng.random((3, 8)), rng.random((2, 8)), rng.random(8), rng.random(5)) for _ in range(6)]
    x, y = _clusters(seed, d=12, n=4)
    task = TaskExample([query_features(x, y, space)], np.arange(6), rng.random(6))
    learned, _ = train(free, models, [task], epochs=3, seed=seed, hidden=8, out=4)
    return learned, space


def test_the_numpy_query_encoder_equals_the_torch_one_and_survives_a_round_trip() -> None:
    from modelkin.retrieval.encoder import layout
    from modelkin.retrieval.scorers import Learned
    from modelkin.retrieval.training import query_vectors

    learned, space = _trained_scorer()
    shapes = {k: tuple(v.shape) for k, v in learned.net.state_dict().items()}
    assert shapes == layout(learned.config)
    again = Learned.from_bytes(learned.to_bytes(), learned.free)
    for seed in range(3):
        x, y = _clusters(seed + 10, d=12, n=3 + seed)
        q = query_features(x, y, space)
        torch_vec = query_vectors(learned, [q])[0]
        assert np.allclose(learned.query_vector(q), torch_vec, atol=1e-6)
        assert np.allclose(again.query_vector(q), torch_vec, atol=1e-6)  # numpy weights read back, torch never built
    assert again._net is None
    assert np.allclose(again.net.state_dict()["qout.weight"].numpy(), learned.state["qout.weight"])


def test_the_rerank_picks_leaders_that_disagree_and_combines_three_scores() -> None:
    from modelkin.retrieval.rerank import combine, pick

    copy = np.zeros(50, np.int64)
    other = np.ones(50, np.int64)
    scores = np.array([3.0, 2.9, 2.8, 0.0, -1.0])
    preds = [copy, copy, other, other, copy]
    assert pick(scores, preds, 2) == [0, 2]  # the runner-up is a copy of the leader: the next distinct one runs
    assert pick(scores, [np.arange(50) + i * 100 for i in range(5)], 3) == [0, 1, 2]  # all distinct: score order
    assert len(pick(scores, preds, 9)) == 5
    best = combine(np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.9]), np.array([0.0, 0.0, 1.0]))
    assert int(np.argmax(best)) == 2  # second on LogME, on kNN and first on stage 2 beats one estimator's favourite


def test_models_of_a_family_absent_from_training_get_the_unseen_family_weight() -> None:
    learned, _ = _trained_scorer()
    learned.config.update(knowledge_mix=0.75, unseen_family_mix=0.1, families=["mlp"])
    assert learned.mix_weight("mlp") == 0.75 and learned.mix_weight("cnn") == 0.1 and learned.mix_weight(None) == 0.1
    del learned.config["families"]  # an encoder trained before families were recorded: one weight for all
    assert learned.mix_weight("cnn") == 0.75
