"""A bounded scalar minimisation that can be run a few evaluations at a time.

:class:`BoundedSearch` is Brent's bounded minimisation (golden section plus
parabolic interpolation) exactly as scipy's
``minimize_scalar(method="bounded")`` does it, turned inside out: the caller
asks for the next point (:attr:`BoundedSearch.x_next`), evaluates the function
there and hands the value back (:meth:`BoundedSearch.tell`). The state is
plain floats, so a search can be pickled between two evaluations and resumed
in another process; run to the end it returns the same point after the same
number of evaluations as scipy.

It lets a streaming model spread a refit over several days: each day pays
for a couple of evaluations instead of one day paying for all of them.
"""

from __future__ import annotations

import math

__all__ = ["BoundedSearch"]

_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))


class BoundedSearch:
    """Brent's bounded minimisation of ``f`` on ``[lo, hi]``, one evaluation per step.

    Parameters
    ----------
    lo, hi : float
        Finite bounds, ``lo <= hi``.
    xatol : float
        Absolute tolerance on the minimiser, > 0 (scipy's ``xatol``).
    max_evals : int
        Evaluations after which the search stops unconverged, >= 1.

    Attributes
    ----------
    x_ : float
        Best point so far (the answer once :attr:`done`).
    f_ : float
        ``f(x_)``; nan before the first evaluation.
    n_evals_ : int
        Evaluations told so far.
    converged_ : bool
        True when the search stopped on the tolerance (not on ``max_evals``).

    Examples
    --------
    >>> s = BoundedSearch(0.0, 4.0, xatol=1e-6)
    >>> while not s.done:
    ...     s.tell((s.x_next - 1.5) ** 2)
    >>> round(s.x_, 5), s.converged_
    (1.5, True)
    """

    def __init__(self, lo: float, hi: float, xatol: float = 1e-5, max_evals: int = 500) -> None:
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"bounds must be finite, got ({lo}, {hi})")
        if lo > hi:
            raise ValueError(f"lower bound {lo} exceeds upper bound {hi}")
        if not (math.isfinite(xatol) and xatol > 0):
            raise ValueError(f"xatol must be a finite number > 0, got {xatol}")
        if int(max_evals) < 1:
            raise ValueError(f"max_evals must be >= 1, got {max_evals}")
        self.xatol = float(xatol)
        self.max_evals = int(max_evals)
        # the names of scipy's _minimize_scalar_bounded, for a line-by-line comparison
        self.a, self.b = lo, hi
        self.fulc = lo + _GOLDEN * (hi - lo)
        self.nfc = self.fulc
        self.x_ = self.fulc
        self.rat = 0.0
        self.e = 0.0
        self.f_ = math.nan
        self.ffulc = math.nan
        self.fnfc = math.nan
        self.n_evals_ = 0
        self.converged_ = False
        self.done = False
        self.x_next: float = self.x_

    def _tolerances(self) -> tuple[float, float, float]:
        tol1 = _SQRT_EPS * abs(self.x_) + self.xatol / 3.0
        return 0.5 * (self.a + self.b), tol1, 2.0 * tol1

    def tell(self, fx: float) -> None:
        """Hand back ``f(x_next)``; then :attr:`x_next` is the next point, or :attr:`done`.

        Raises
        ------
        RuntimeError
            If the search is already done.
        """
        if self.done:
            raise RuntimeError("the search is done; read x_")
        fx = float(fx)
        x = self.x_next
        self.n_evals_ += 1
        if self.n_evals_ == 1:
            self.f_ = self.ffulc = self.fnfc = fx
        else:
            self._absorb(x, fx)
        xm, tol1, tol2 = self._tolerances()
        if abs(self.x_ - xm) <= tol2 - 0.5 * (self.b - self.a) or math.isnan(self.f_):
            self.done = True
            self.converged_ = not math.isnan(self.f_)
            return
        if self.n_evals_ >= self.max_evals:
            self.done = True
            return
        self.x_next = self._propose(xm, tol1, tol2)

    def _absorb(self, x: float, fu: float) -> None:
        if fu <= self.f_:
            if x >= self.x_:
                self.a = self.x_
            else:
                self.b = self.x_
            self.fulc, self.ffulc = self.nfc, self.fnfc
            self.nfc, self.fnfc = self.x_, self.f_
            self.x_, self.f_ = x, fu
        else:
            if x < self.x_:
                self.a = x
            else:
                self.b = x
            if fu <= self.fnfc or self.nfc == self.x_:
                self.fulc, self.ffulc = self.nfc, self.fnfc
                self.nfc, self.fnfc = x, fu
            elif fu <= self.ffulc or self.fulc == self.x_ or self.fulc == self.nfc:
                self.fulc, self.ffulc = x, fu

    def _propose(self, xm: float, tol1: float, tol2: float) -> float:
        xf, fx = self.x_, self.f_
        golden = True
        if abs(self.e) > tol1:  # try a parabola through the three best points
            golden = False
            r = (xf - self.nfc) * (fx - self.ffulc)
            q = (xf - self.fulc) * (fx - self.fnfc)
            p = (xf - self.fulc) * q - (xf - self.nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r = self.e
            self.e = self.rat
            if abs(p) < abs(0.5 * q * r) and q * (self.a - xf) < p < q * (self.b - xf):
                self.rat = p / q
                x = xf + self.rat
                if (x - self.a) < tol2 or (self.b - x) < tol2:
                    self.rat = tol1 * _sign(xm - xf)
            else:
                golden = True
        if golden:
            self.e = (self.a - xf) if xf >= xm else (self.b - xf)
            self.rat = _GOLDEN * self.e
        return xf + _sign(self.rat) * max(abs(self.rat), tol1)


def _sign(v: float) -> float:
    """``np.sign(v) + (v == 0)``: +1 for zero, as scipy steps."""
    return 1.0 if v >= 0.0 else -1.0
