"""The conformance kit: what xpsoftmax's own tests check its functions with, public.

Use it to check your own softmax kernel, or a new array library, against the contract:

* :class:`Backend` and :data:`BACKENDS`: one adapter per array library and device (make an
  array from NumPy data, bring it back, wait for it, its dtypes), usable as pytest
  parameters (:meth:`Backend.pytest_params`);
* :mod:`xpsoftmax.testing.cases`: the edge-case catalogue (all ``-inf`` rows, masks, ``+-inf``,
  NaN, huge logits, empty and 0-d inputs, tuple axes...) as named NumPy float64 inputs, and the
  cross-entropy catalogue;
* :mod:`xpsoftmax.testing.reference`: float64 / long-double reference implementations written
  straight from the definitions;
* :func:`assert_close`: NaN and infinity positions exact, finite values within a tolerance;
* :func:`check_implementation`: all of it at once, for any callable with the signature of an
  xpsoftmax function, with a readable report of every mismatch;
* :func:`check_gradients`: the same grid through the library's autodiff (torch, JAX), every
  gradient against the generic implementation's.

Importing this module imports NumPy (the catalogue is NumPy data); ``import xpsoftmax`` does
not import it.

Examples
--------
>>> import numpy as np
>>> import xpsoftmax
>>> from xpsoftmax.testing import BY_ID, assert_close, cases, reference
>>> numpy_backend = BY_ID["numpy"]
>>> case = cases.make("all_neginf_row", np.random.default_rng(0))
>>> x = numpy_backend.asarray(case.x, "float64")
>>> got = numpy_backend.to_numpy(xpsoftmax.softmax(x, axis=case.axis))
>>> assert_close(got, reference.softmax(case.x, case.axis), rtol=1e-12, atol=1e-15)
"""

from __future__ import annotations

from . import cases, reference
from .backends import BACKENDS, BY_ID, Backend
from .cases import assert_close
from .conformance import check_implementation
from .gradients import check_gradients

__all__ = [
    "BACKENDS",
    "BY_ID",
    "Backend",
    "assert_close",
    "cases",
    "check_gradients",
    "check_implementation",
    "reference",
]
