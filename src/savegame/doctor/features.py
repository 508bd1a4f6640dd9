"""Numbers the verdict rules read off one loss curve: where it started, bottomed out and ended,
how much of its progress came late, how noisy it is, where it went non-finite.

Long series are first reduced to at most 2,000 bucket medians, so a 100,000-point curve costs
the same as a short one; the curve is then smoothed with a centred running median (robust to
the spikes of minibatch losses) whose window grows with the number of points.

>>> import numpy as np
>>> steps = np.arange(1, 101); values = 2.0 * np.exp(-steps / 10) + 0.1
>>> f = curve_features(steps, values)
>>> round(f.start, 2), round(f.end, 2), f.late_share < 0.01, f.nonfinite_step is None
(1.74, 0.1, True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_BUCKETS = 2000


@dataclass
class CurveFeatures:
    steps: np.ndarray          # the (bucketed) steps of the finite part
    raw: np.ndarray            # the (bucketed) values
    smooth: np.ndarray         # running median of raw
    start: float               # smoothed value at the start
    end: float                 # smoothed value at the end
    low: float                 # smoothed minimum
    low_step: int
    high_after_low: float      # smoothed maximum after the minimum
    high_before_low: float     # smoothed maximum up to the minimum
    progress: float            # (start - end) / |start|: the share of the loss removed
    late_share: float          # share of the total drop made in the last quarter of the steps
    early_share: float         # share made in the first quarter
    noise: float               # median |raw - smooth| / |smooth| over the second half
    swing: float               # 90th percentile of |raw - smooth| over the second half / |start|: how big
                               # the jumps are against the whole curve (near a loss of 0, any jitter is
                               # a large share of the level but a negligible one of the start)
    nonfinite_step: int | None  # first step of the NaN/inf values the curve ENDS with (it never recovered)
    nonfinite_count: int       # every NaN/inf value, also the transient ones (an AMP overflow)
    first_nonfinite_step: int | None  # the first NaN/inf anywhere
    points: int                # finite points the features are computed from

    def at(self, step: int) -> float:
        """The smoothed value at (or just before) ``step``."""
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        return float(self.smooth[max(i, 0)])

    def drop_between(self, a: float, b: float) -> float:
        """Smoothed value at fraction ``a`` of the step range minus the value at fraction ``b``."""
        lo, hi = float(self.steps[0]), float(self.steps[-1])
        return self.at(int(lo + a * (hi - lo))) - self.at(int(lo + b * (hi - lo)))


def curve_features(steps: np.ndarray, values: np.ndarray) -> CurveFeatures | None:
    """Features of one curve's finite points, up to the NaN/inf values it ends with (if it does);
    a NaN/inf it recovered from is skipped. None when fewer than 2 finite points are left."""
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite)
    cut = len(values)
    while cut > 0 and not finite[cut - 1]:
        cut -= 1  # the trailing run of NaN/inf: the curve died there
    nonfinite_step = int(steps[cut]) if cut < len(values) else None
    keep = finite[:cut]
    s, v = steps[:cut][keep], values[:cut][keep].astype(np.float64)
    if len(v) < 2:
        return None
    s, v = _bucket(s, v)
    window = _window(len(v))
    smooth = running_median(v, window)
    # The first values, not the smoothed ones: a fast early drop would pull a window's median down.
    # The end is the median of the last few: one spike at the last step is not where a curve ends.
    tail = 1 if len(v) < 10 else max(3, window // 2 + 1)  # a short curve (one point per epoch): its last
    start, end = float(np.median(v[:3])), float(np.median(v[-tail:]))
    i_low = int(np.argmin(smooth))
    low = float(smooth[i_low])
    scale = abs(start) if start else 1.0
    total_drop = start - end
    features = CurveFeatures(
        steps=s, raw=v, smooth=smooth, start=start, end=end, low=low, low_step=int(s[i_low]),
        high_after_low=float(smooth[i_low:].max()), high_before_low=float(max(smooth[:i_low + 1].max(), start)),
        progress=total_drop / scale, late_share=0.0,
        early_share=0.0, noise=_noise(v, smooth), swing=_swing(v, smooth, start), nonfinite_step=nonfinite_step,
        nonfinite_count=int(len(bad)), first_nonfinite_step=int(steps[bad[0]]) if len(bad) else None,
        points=int(keep.sum()))
    if total_drop > 1e-12 * scale:
        features.late_share = features.drop_between(0.75, 1.0) / total_drop
        features.early_share = features.drop_between(0.0, 0.25) / total_drop
    return features


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median; the ends use the shrinking window that fits."""
    if window <= 1 or len(values) < 3:
        return values.copy()
    half = window // 2
    padded = np.concatenate([np.full(half, np.nan), values, np.full(half, np.nan)])
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.nanmedian(view, axis=1)


def _window(n: int) -> int:
    return max(1, min(n // 12, 101)) | 1  # odd, about 8% of the curve


def _bucket(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    if n <= MAX_BUCKETS:
        return steps, values
    size = math.ceil(n / MAX_BUCKETS)
    usable = (n // size) * size  # the ragged tail becomes its own bucket
    body_v = np.median(values[:usable].reshape(-1, size), axis=1)
    body_s = steps[:usable].reshape(-1, size)[:, -1]
    if usable < n:
        body_v = np.append(body_v, np.median(values[usable:]))
        body_s = np.append(body_s, steps[-1])
    return body_s, body_v


def _swing(raw: np.ndarray, smooth: np.ndarray, start: float) -> float:
    half = len(raw) // 2
    jumps = np.abs(raw[half:] - smooth[half:])
    return float(np.percentile(jumps, 90) / abs(start)) if len(jumps) and start else 0.0


def _noise(raw: np.ndarray, smooth: np.ndarray) -> float:
    half = len(raw) // 2
    level = np.abs(smooth[half:])
    level = np.where(level > 0, level, np.nan)
    ratio = np.abs(raw[half:] - smooth[half:]) / level
    ratio = ratio[np.isfinite(ratio)]
    return float(np.median(ratio)) if len(ratio) else 0.0
