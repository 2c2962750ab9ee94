import math
import pickle

import numpy as np
import pytest
from scipy import optimize

from models.scalar_search import BoundedSearch


def _run(search: BoundedSearch, f) -> BoundedSearch:
    while not search.done:
        search.tell(f(search.x_next))
    return search


FUNCTIONS = {
    "quadratic": (lambda x: (x - 1.3) ** 2, (0.0, 4.0)),
    "quartic_flat": (lambda x: (x - 0.2) ** 4 + 0.1 * x, (-3.0, 3.0)),
    "cosine": (lambda x: math.cos(3 * x) + 0.1 * x * x, (-2.0, 2.5)),
    "boundary_min": (lambda x: x, (0.7, 5.0)),
    "abs_kink": (lambda x: abs(x - 0.123456), (-1.0, 1.0)),
    "log_t_likelihood": (None, (math.log(2.05), math.log(100.0))),
}


def _t_neg_loglik():
    from scipy import stats

    y = stats.t.rvs(6.0, size=400, random_state=np.random.default_rng(42))
    return lambda log_nu: -float(np.sum(stats.t.logpdf(y, math.exp(log_nu))))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("xatol", [1e-3, 1e-5])
def test_same_point_and_evaluations_as_scipy_bounded(name, xatol):
    f, bounds = FUNCTIONS[name]
    f = f or _t_neg_loglik()
    ref = optimize.minimize_scalar(f, bounds=bounds, method="bounded", options={"xatol": xatol})
    s = _run(BoundedSearch(*bounds, xatol=xatol), f)
    assert s.converged_ and ref.success
    assert s.x_ == ref.x  # the same arithmetic, step for step
    assert s.f_ == ref.fun
    assert s.n_evals_ == ref.nfev


def test_pickled_between_evaluations_resumes_identically():
    f, bounds = FUNCTIONS["cosine"]
    whole = _run(BoundedSearch(*bounds, xatol=1e-6), f)
    s = BoundedSearch(*bounds, xatol=1e-6)
    while not s.done:
        s = pickle.loads(pickle.dumps(s))
        s.tell(f(s.x_next))
    assert (s.x_, s.n_evals_) == (whole.x_, whole.n_evals_)


def test_max_evals_stops_unconverged_and_tell_after_done_raises():
    s = _run(BoundedSearch(-2.0, 2.5, xatol=1e-9, max_evals=4), FUNCTIONS["cosine"][0])
    assert s.done and not s.converged_ and s.n_evals_ == 4
    with pytest.raises(RuntimeError, match="done"):
        s.tell(0.0)


def test_nan_at_the_first_point_stops_unconverged():
    s = BoundedSearch(0.0, 1.0)
    s.tell(float("nan"))
    assert s.done and not s.converged_


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lo=1.0, hi=0.0), "exceeds"),
        (dict(lo=0.0, hi=math.inf), "finite"),
        (dict(lo=0.0, hi=1.0, xatol=0.0), "xatol"),
        (dict(lo=0.0, hi=1.0, max_evals=0), "max_evals"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BoundedSearch(**kwargs)
