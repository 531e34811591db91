"""The relative losses against an independent NumPy implementation of MiDaS's published formulas.

Written from the equations of Ranftl et al. (TPAMI), per image with M valid pixels:
  median/MAD alignment  d_hat = (d - median(d)) / ((1/M) sum |d - median(d)|), for prediction AND target;
  least squares         (s, t) = argmin sum (s d + t - d*)^2 (here constrained to s >= 0), d_hat = s d + t;
  SSI                   (1/2M) sum_{kept} rho(d_hat - d_hat*), rho = |.| or (.)^2, trimming drops the
                        largest rho among the eligible pixels (pseudo-label pixels or all);
  GM                    sum_k (1/M_k) sum (|grad_x R^k| + |grad_y R^k|), R^k = R[::2^k, ::2^k].
Loops and np.median / np.linalg.lstsq / np.argsort: nothing shared with the torch implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridgedepth.data.targets import SOURCE_GT, SOURCE_NONE, SOURCE_PSEUDO
from bridgedepth.mde.losses import gradient_matching_loss, relative_loss


def _np_normalize(v: np.ndarray) -> np.ndarray:
    t = np.median(v)
    s = np.mean(np.abs(v - t))
    return (v - t) / s


def _np_residual_map(pred, target, mask, alignment, target_normalization):
    """R (H, W) with zeros off the mask."""
    p, g = pred[mask], target[mask]
    if alignment == "median_mad":
        r = _np_normalize(p) - _np_normalize(g)
    else:
        if target_normalization == "mad":
            g = _np_normalize(g)
        a = np.stack([p, np.ones_like(p)], 1)
        (s, t), *_ = np.linalg.lstsq(a, g, rcond=None)
        if s < 0:  # constrained optimum: s = 0, t = mean
            s, t = 0.0, g.mean()
        r = s * p + t - g
    out = np.zeros(pred.shape)
    out[mask] = r
    return out


def _np_ssi(pred, target, mask, eligible, alignment, residual, trim, target_normalization):
    losses = []
    for b in range(pred.shape[0]):
        m = mask[b]
        big_m = int(m.sum())
        if big_m == 0:
            continue
        r = _np_residual_map(pred[b], target[b], m, alignment, target_normalization)[m]
        rho = np.abs(r) if residual == "absolute" else r**2
        el = eligible[b][m]
        n_drop = int(math.floor(trim * el.sum()))
        el_idx = np.nonzero(el)[0]
        worst = el_idx[np.argsort(-rho[el_idx], kind="stable")[:n_drop]]
        keep = np.ones(big_m, bool)
        keep[worst] = False
        losses.append(rho[keep].sum() / (2 * big_m))
    return float(np.mean(losses))


def _np_gm(res, mask, scales):
    per_image = []
    for b in range(res.shape[0]):
        total, pairs = 0.0, 0
        for k in range(scales):
            st = 2**k
            r, m = res[b, ::st, ::st], mask[b, ::st, ::st]
            mk = int(m.sum())
            acc = 0.0
            for i in range(r.shape[0]):
                for j in range(r.shape[1]):
                    if j + 1 < r.shape[1] and m[i, j] and m[i, j + 1]:
                        acc += abs(r[i, j + 1] - r[i, j])
                        pairs += 1
                    if i + 1 < r.shape[0] and m[i, j] and m[i + 1, j]:
                        acc += abs(r[i + 1, j] - r[i, j])
                        pairs += 1
            if mk:
                total += acc / mk
        if pairs:
            per_image.append(total)
    return float(np.mean(per_image))


def _np_total(pred, target, mask, source, *, alignment, residual, trim, trim_sources, target_normalization,
              ssi_weight, gm_weight, gm_scales):
    eligible = mask.copy() if (source is None or trim_sources == "all") else mask & (source == SOURCE_PSEUDO)
    ssi = _np_ssi(pred, target, mask, eligible, alignment, residual, trim, target_normalization)
    res = np.stack([_np_residual_map(pred[b], target[b], mask[b], alignment, target_normalization)
                    for b in range(pred.shape[0])])
    gm = _np_gm(res, mask, gm_scales)
    return ssi, gm, ssi_weight * ssi + gm_weight * gm


def _random_case(seed, b=3, h=13, w=11):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.05, 2.0, (b, h, w))
    pred = 0.7 * target + rng.normal(0, 0.3, (b, h, w)) + 0.2  # correlated, noisy
    mask = rng.random((b, h, w)) > 0.25
    source = np.where(rng.random((b, h, w)) > 0.5, SOURCE_GT, SOURCE_PSEUDO).astype(np.uint8)
    source[~mask] = SOURCE_NONE
    return pred, target, mask, source


CASES = [
    dict(alignment="median_mad", residual="absolute", trim=0.1, trim_sources="pseudo", target_normalization="mad"),
    dict(alignment="median_mad", residual="absolute", trim=0.2, trim_sources="all", target_normalization="mad"),
    dict(alignment="median_mad", residual="squared", trim=0.0, trim_sources="pseudo", target_normalization="mad"),
    dict(alignment="lstsq", residual="squared", trim=0.0, trim_sources="all", target_normalization="none"),  # ssimse
    dict(alignment="lstsq", residual="absolute", trim=0.1, trim_sources="pseudo", target_normalization="mad"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("seed", [0, 1])
def test_relative_loss_matches_numpy_midas(case, seed):
    pred, target, mask, source = _random_case(seed)
    weights = dict(ssi_weight=1.0, gm_weight=4.0, gm_scales=4)
    ref_ssi, ref_gm, ref_total = _np_total(pred, target, mask, source, **case, **weights)
    t = relative_loss(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask),
                      torch.from_numpy(source), ssi_residual=case["residual"],
                      **{k: v for k, v in case.items() if k != "residual"}, **weights)
    assert abs(float(t.ssi) - ref_ssi) < 1e-5 * max(1.0, ref_ssi)
    assert abs(float(t.gm) - ref_gm) < 1e-5 * max(1.0, ref_gm)
    assert abs(float(t.total) - ref_total) < 1e-5 * max(1.0, ref_total)
    # float32 inputs agree to float32 precision
    t32 = relative_loss(torch.from_numpy(pred).float(), torch.from_numpy(target).float(), torch.from_numpy(mask),
                        torch.from_numpy(source), ssi_residual=case["residual"],
                        **{k: v for k, v in case.items() if k != "residual"}, **weights)
    assert abs(float(t32.total) - ref_total) < 1e-4 * max(1.0, ref_total)


def test_no_source_map_trims_every_valid_pixel():
    pred, target, mask, source = _random_case(3)
    ref = _np_total(pred, target, mask, None, alignment="median_mad", residual="absolute", trim=0.1,
                    trim_sources="pseudo", target_normalization="mad", ssi_weight=1.0, gm_weight=4.0, gm_scales=4)
    t = relative_loss(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask))
    assert abs(float(t.total) - ref[2]) < 1e-5 * max(1.0, ref[2])


def test_gradient_matching_matches_numpy():
    rng = np.random.default_rng(4)
    res = rng.normal(size=(2, 17, 9))
    mask = rng.random((2, 17, 9)) > 0.3
    for k in (1, 2, 4):
        ref = _np_gm(res, mask, k)
        assert abs(float(gradient_matching_loss(torch.from_numpy(res), torch.from_numpy(mask), k)) - ref) < 1e-9


def test_even_count_median_is_the_mean_of_the_middle_pair():
    """NumPy's (and the usual) median of an even count; a lower median would differ from the reference."""
    from bridgedepth.mde.losses import masked_median

    x = torch.tensor([[[4.0, 1.0], [3.0, 100.0]]], dtype=torch.float64)
    m = torch.tensor([[[True, True], [True, False]]])
    assert float(masked_median(x, torch.ones_like(m))) == 3.5
    assert float(masked_median(x, m)) == 3.0
    assert float(masked_median(x, torch.zeros_like(m))) == 0.0


def _sort_median(x, mask):
    """The sort-based median the loss used before it selected (kept here as the reference)."""
    b = x.shape[0]
    flat, fmask = x.reshape(b, -1), mask.reshape(b, -1)
    n = fmask.sum(1)
    vals = torch.where(fmask, flat, torch.full_like(flat, torch.finfo(flat.dtype).max)).sort(dim=1).values
    lo, hi = ((n - 1).clamp_min(0) // 2)[:, None], (n // 2).clamp_max(flat.shape[1] - 1)[:, None]
    has = (n > 0)[:, None]
    v = 0.5 * (vals.gather(1, lo) + vals.gather(1, hi))
    return torch.where(has, v, torch.zeros_like(v)).squeeze(1)


def _argsort_keep(per_pixel, mask, trim, eligible):
    """Trimming by a stable descending sort of the eligible values (the earlier implementation)."""
    b = per_pixel.shape[0]
    flat, fel = per_pixel.reshape(b, -1), (mask & eligible).reshape(b, -1)
    drop_n = torch.floor(fel.sum(1).to(torch.float64) * trim).long()
    vals = torch.where(fel, flat, torch.full_like(flat, torch.finfo(flat.dtype).min))
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1]).expand(b, -1).contiguous())
    return mask & ~(fel & (rank < drop_n[:, None])).reshape(mask.shape)


@pytest.mark.parametrize("seed", range(6))
def test_selection_median_and_trim_equal_the_sort_based_ones(seed):
    """masked_median and trim_keep_mask select (kthvalue) instead of sorting: same values, same pixels
    (ties broken by position), same gradient, for equal and unequal valid counts, ties and empty images."""
    from bridgedepth.mde.losses import masked_median, trim_keep_mask

    g = torch.Generator().manual_seed(seed)
    b, h, w = 5, 13, 11
    # coarse values: many ties
    x = (torch.randint(0, 7 if seed % 2 else 1000, (b, h, w), generator=g).double() / 3.0)
    full = torch.ones(b, h, w, dtype=torch.bool)
    ragged = torch.rand(b, h, w, generator=g) > 0.4
    ragged[2] = False  # an image without valid pixels
    ragged[3, :1] = True
    eligible = torch.rand(b, h, w, generator=g) > 0.3
    for mask in (full, ragged):
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        ma, mb = masked_median(xa, mask), _sort_median(xb, mask)
        assert torch.equal(ma, mb)
        if seed % 2 == 0:  # distinct values: the gradient goes to the same element(s)
            (ma * torch.arange(1.0, b + 1, dtype=torch.float64)).sum().backward()
            (mb * torch.arange(1.0, b + 1, dtype=torch.float64)).sum().backward()
            assert torch.equal(xa.grad, xb.grad)
        for trim in (0.1, 0.37, 0.9):
            for elig in (torch.ones_like(mask), eligible):
                keep = trim_keep_mask(x, mask, trim, elig)
                assert torch.equal(keep, _argsort_keep(x, mask, trim, elig))
                n_el = (mask & elig).reshape(b, -1).sum(1)
                dropped = (mask & ~keep).reshape(b, -1).sum(1)
                assert torch.equal(dropped, torch.floor(n_el.double() * trim).long())
