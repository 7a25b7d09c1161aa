"""Inception score against values worked out by hand."""
import numpy as np
import pytest

from harness.errors import MetricError
from harness.metrics.is_ import inception_score


def test_inception_score_uniform_and_one_hot():
    assert inception_score(np.full((100, 1008), 1 / 1008)) == (pytest.approx(1.0), pytest.approx(0.0))
    k = 7
    probs = np.eye(k)[np.arange(700) % k]  # K classes, each used equally, confidently
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(MetricError):
        inception_score(probs[:5], splits=10)
