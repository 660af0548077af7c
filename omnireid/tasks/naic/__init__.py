"""NAIC competition workflow: the synthetic demo of the NAIC20 recipe on NAIC's list layout.
(The NAIC datasets are core datasets, ``omnireid.data.datasets.naic``; ensembles and submissions are
``omnireid ensemble`` / ``omnireid submit``.)"""
from . import demo  # noqa: F401  (importing registers it)
