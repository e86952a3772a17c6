"""Numba kernels of the evaluation stage, by what they do (this module gathers their names):

- :mod:`lthash.evaluate._ap_kernels`: exact AP of one query from its distance histogram, in
  index order and tie-averaged (the notation and formulas are there);
- :mod:`lthash.evaluate._scan_kernels`: the one-pass Hamming scan that scores every query
  (class labels and label sets);
- :mod:`lthash.evaluate._code_kernels`: popcount, packing codes and labels into words, the
  popcount floor and top-k search.
"""

from lthash.evaluate._ap_kernels import (  # noqa: F401
    bucket_expected_sum,
    harmonic_diff,
    straddle_expected_ap,
    tie_average_ap,
)
from lthash.evaluate._code_kernels import (  # noqa: F401
    onehot_rows_kernel,
    pack_rows_kernel,
    popcount64,
    popcount_floor_kernel,
    topk_kernel,
)
from lthash.evaluate._scan_kernels import (  # noqa: F401
    GROUP,
    count_relevant_multilabel,
    score_classes_kernel,
    score_multilabel_kernel,
)
