"""ZooPFL (Lu et al., arXiv 2310.05143): personalised federated learning through a black-box model.

Modules: :mod:`~fmbook.zoopfl.blackbox` (forward-only, query-counting access), :mod:`~fmbook.zoopfl.zo`
(zeroth-order gradient estimators), :mod:`~fmbook.zoopfl.surgery` (input surgery and re-mapping),
:mod:`~fmbook.zoopfl.method` (one client's round for every compared method),
:mod:`~fmbook.zoopfl.setup` (clients and black boxes), :mod:`~fmbook.zoopfl.federated` (the adapter
to :mod:`fmbook.core.fl`), :mod:`~fmbook.zoopfl.analysis` (intervals, claims),
:mod:`~fmbook.zoopfl.text` (a text classifier as the black box, ``full`` profile).
"""

from fmbook.zoopfl.blackbox import BlackBox, QueryBudgetExceeded, ZooPFLError
from fmbook.zoopfl.method import METHOD_LABELS, METHODS, ZooPFLConfig
from fmbook.zoopfl.zo import ESTIMATORS, ZOConfig

__all__ = ["BlackBox", "ESTIMATORS", "METHODS", "METHOD_LABELS", "QueryBudgetExceeded", "ZOConfig",
           "ZooPFLConfig", "ZooPFLError", "claims"]


def claims(*args, **kwargs):
    """See :func:`fmbook.zoopfl.analysis.claims`."""
    from fmbook.zoopfl.analysis import claims as _claims

    return _claims(*args, **kwargs)
