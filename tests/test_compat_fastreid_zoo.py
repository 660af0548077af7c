"""FastReID ResNeSt, ResNeXt, OSNet (+IBN) and MGN checkpoints give the same features in omnireid.

Same procedure as tests/test_compat_fastreid.py (FastReID 1.4.0 from PyPI is the reference); split
off to keep each test file fast.
"""
from __future__ import annotations

import pytest

from test_compat_fastreid import ZOO_CASES, check_same_features


@pytest.mark.parametrize("case", list(ZOO_CASES))
def test_converted_fastreid_zoo_model_gives_the_same_features(case, tmp_path):
    check_same_features(*ZOO_CASES[case], tmp_path)
