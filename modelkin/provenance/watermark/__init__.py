"""NeuralMark: a hashed weight watermark (keys, filter and pooling, layer rule, embedding, verification).

Pure functions over numpy arrays (torch only for the training-time regulariser); no files, no database.
"""

from modelkin.provenance.watermark.align import align
from modelkin.provenance.watermark.cost import DEFAULT_FLOOR, DEFAULT_TOGETHER, consumer, unit_metric
from modelkin.provenance.watermark.embed import (
    DEFAULT_MARGIN,
    TRAINING_MARGIN,
    Regulariser,
    embed_posthoc,
    least_norm_shift,
)
from modelkin.provenance.watermark.filter import pool_indices, pool_size, survivors
from modelkin.provenance.watermark.heal import HEAL_BUFFER, Projection, fine_tune
from modelkin.provenance.watermark.keys import (
    DEFAULT_BITS,
    DEFAULT_ROWS,
    WatermarkKey,
    commitment,
    generate_key,
    watermark_bits,
)
from modelkin.provenance.watermark.layer import Plan, choose_layer, eligible, plan_rounds
from modelkin.provenance.watermark.verify import (
    DEFAULT_FPR,
    Detection,
    binomial_tail,
    corrected,
    detect,
    projections,
)

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_FLOOR",
    "DEFAULT_FPR",
    "DEFAULT_MARGIN",
    "DEFAULT_ROWS",
    "DEFAULT_TOGETHER",
    "HEAL_BUFFER",
    "Detection",
    "Plan",
    "Projection",
    "Regulariser",
    "TRAINING_MARGIN",
    "WatermarkKey",
    "align",
    "binomial_tail",
    "choose_layer",
    "commitment",
    "consumer",
    "corrected",
    "detect",
    "eligible",
    "embed_posthoc",
    "fine_tune",
    "generate_key",
    "least_norm_shift",
    "plan_rounds",
    "pool_indices",
    "pool_size",
    "projections",
    "survivors",
    "unit_metric",
    "watermark_bits",
]
