"""Why are the demo's metric rows no better than a constant depth? References and diagnostics.

The demo's two metric stages start from the BRIDGE student (seed 0) and train 60 SiLog steps on the
synthetic-look training scenes. This script measures, on a held-out scene set (the demo's val scenes
by default; never the test set), what the relative model's output allows and what the metric
checkpoints do:

* each metric checkpoint's AbsRel per scene kind (indoor, outdoor, object) and its median scale error
  (median prediction / median ground truth) per kind;
* references for a scale head (an affine map of the relative disparity to metric disparity per image,
  fitted by least squares in inverse depth): each image's own affine (an oracle), the per-kind median
  of those affines (a head that knows only the kind), and one global affine for all the scenes (what
  the scale-head stage starts from, fitted there on training batches);
* how well the scale head's inputs (CLS token and mean patch token of the last tapped layer) tell the
  scene kind, by a linear probe trained on the training scenes;
* a scale head trained offline on cached features with the stage's loss (SiLog, lambda 0.5): its
  held-out AbsRel and training SiLog every 100 steps (no augmentation, no data loading: the loss and
  the head alone).

    PYTHONPATH=src python benchmarks/metric_probe.py [--demo runs/demo] [--eval val] [--steps 600]

or with explicit inputs: ``--model CKPT --train DIR --eval-dir DIR [--metric CKPT ...]``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np


def _kind(bench, item) -> str:
    meta = bench.meta(item)
    return str(meta.get("kind") or item.key.split("_")[0])


def cache_set(model, folder: Path, input_size: int, limit: int | None = None):
    """[(kind, rgb, gt, valid, tokens (1 + N, C), disparity at the model's resolution, gt and mask there)]."""
    import cv2
    import torch

    from bridgedepth.data.benchmarks.shard_set import ShardSet
    from bridgedepth.mde.model import forward_with_features
    from bridgedepth.mde.predictor import preprocess

    bench = ShardSet(folder)
    cap = bench.max_depth
    out = []
    for item in bench.items(limit):
        rgb = bench.load_rgb(item)
        gt, valid = bench.read_depth(item)
        valid = valid & (gt <= cap)
        with torch.no_grad():
            disp, feats = forward_with_features(model, preprocess(rgb, input_size))
        h, w = disp.shape[-2:]
        g = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST)
        m = (cv2.resize(valid.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0) & (g > 0)
        out.append((_kind(bench, item), rgb, gt, valid, feats[-1][0], disp[0], torch.from_numpy(g),
                    torch.from_numpy(m)))
    return out, cap


def _absrel(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - gt) / gt))


def _stack(cached):
    """(tokens, disparity, gt, mask) of the cached scenes as batched tensors."""
    import torch

    return tuple(torch.stack([c[i] for c in cached]) for i in (4, 5, 6, 7))


def affine_fits(disp, gt, mask, *, pooled: bool = False):
    """Least-squares ``1 / gt ~ scale * disp + shift`` over the masked pixels: per image, or (``pooled``)
    one fit over the pixels of all images (the scale-head stage's start). Returns (scale, shift)."""
    import torch

    from bridgedepth.evaluation import least_squares_scale_shift

    y = torch.where(mask, 1.0 / gt.double().clamp_min(1e-12), torch.zeros((), dtype=torch.float64))
    x = disp.double()
    if pooled:
        x, y, mask = x[mask][None], y[mask][None], mask[mask][None]
    s, t, _ = least_squares_scale_shift(x, y, mask)
    return s, t


def affine_references(cached, cap: float) -> dict[str, dict[str, float]]:
    """AbsRel per kind (and "all": mean over images) of three affine maps of the relative disparity."""
    kinds = [c[0] for c in cached]
    _, d, g, m = _stack(cached)
    s, t = affine_fits(d, g, m)
    by_kind: dict[str, list] = defaultdict(list)
    for k, a, b in zip(kinds, s.tolist(), t.tolist()):
        by_kind[k].append((a, b))
    kind_med = {k: tuple(np.median(np.array(v), 0)) for k, v in by_kind.items()}
    gs, gt_ = (float(v[0]) for v in affine_fits(d, g, m, pooled=True))
    res = {}
    for name, pick in (("per-image affine (oracle)", lambda i: (float(s[i]), float(t[i]))),
                       ("per-kind median affine", lambda i: kind_med[kinds[i]]),
                       ("one global least-squares affine", lambda i: (gs, gt_))):
        per: dict[str, list] = defaultdict(list)
        for i in range(len(cached)):
            a, b = pick(i)
            x = d[i][m[i]].double().numpy()
            per[kinds[i]].append(_absrel(1.0 / np.maximum(a * x + b, 1.0 / cap), g[i][m[i]].double().numpy()))
        res[name] = {**{k: float(np.mean(v)) for k, v in per.items()},
                     "all": float(np.mean([v for vs in per.values() for v in vs]))}
    res["global"] = {"scale": gs, "shift": gt_}
    return res


def kind_probe(train, held) -> tuple[float, float]:
    """Accuracy of a linear classifier of the scene kind on the scale head's input features."""
    import torch

    kinds = sorted({c[0] for c in train})

    def xy(cached):
        x = torch.stack([torch.cat([c[4][0], c[4][1:].mean(0)]) for c in cached])
        y = torch.tensor([kinds.index(c[0]) if c[0] in kinds else -1 for c in cached])
        return x, y

    (x, y), (xv, yv) = xy(train), xy(held)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = (x - mu) / sd, (xv - mu) / sd
    torch.manual_seed(0)
    clf = torch.nn.Linear(x.shape[1], len(kinds))
    opt = torch.optim.LBFGS(clf.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(clf(x), y) + 1e-4 * clf.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((clf(x).argmax(1) == y).float().mean()), float((clf(xv).argmax(1) == yv).float().mean())


def offline_head(train, held, cap: float, steps: int, lr: float, every: int = 100, seed: int = 0):
    """Train a ScaleHead on cached features with SiLog (lambda 0.5) from the global start; returns
    ([(step, held-out AbsRel, training SiLog)], (factor, held-out AbsRel of the trained head's depth times
    the factor that minimises the training AbsRel))."""
    import torch

    from bridgedepth.mde.losses import silog_loss
    from bridgedepth.mde.model import ScaleHead, apply_scale

    f, d, g, m = _stack(train)
    fv, dv, gv, mv = _stack(held)
    a, b = (float(v[0]) for v in affine_fits(d, g, m, pooled=True))
    torch.manual_seed(seed)
    head = ScaleHead(f.shape[-1], max_depth=cap)
    with torch.no_grad():
        head.mlp[2].bias[0], head.mlp[2].bias[1] = float(np.log(a)), float(b)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)

    def measure(step):
        with torch.no_grad():
            pv = apply_scale(dv, *head(fv), max_depth=cap)
            ab = float(np.mean([_absrel(pv[i][mv[i]].numpy(), gv[i][mv[i]].numpy()) for i in range(len(fv))]))
            sl = float(silog_loss(apply_scale(d, *head(f), max_depth=cap), g, m))
        return step, ab, sl

    def rescaled():
        """Held-out AbsRel after multiplying the head's depth by the one factor that minimises the training
        scenes' AbsRel (log-space losses aim at the geometric median; AbsRel, with uncertain scale, lower)."""
        with torch.no_grad():
            p, pv = apply_scale(d, *head(f), max_depth=cap), apply_scale(dv, *head(fv), max_depth=cap)
        grid = np.exp(np.linspace(np.log(0.25), np.log(2.0), 61))

        def ab(pp, gg, mm, c):
            return float(np.mean([_absrel(c * pp[i][mm[i]].numpy(), gg[i][mm[i]].numpy()) for i in range(len(pp))]))

        c = min(grid, key=lambda c: ab(p, g, m, c))
        return float(c), ab(pv, gv, mv, c)

    curve = [measure(0)]
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(f), (8,), generator=gen)
        loss = silog_loss(apply_scale(d[idx], *head(f[idx]), max_depth=cap), g[idx], m[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            curve.append(measure(step))
    return curve, rescaled()


def checkpoint_errors(ckpt: Path, held, input_size: int) -> dict[str, tuple[float, float]]:
    """{kind: (AbsRel, median of median(pred) / median(gt))} and "all" of a metric checkpoint."""
    from bridgedepth.mde import Predictor

    pred = Predictor.from_pretrained(ckpt, input_size=input_size, metric=True)
    per: dict[str, list] = defaultdict(list)
    for kind, rgb, gt, valid, *_ in held:
        p = pred.predict(rgb).values
        per[kind].append((_absrel(p[valid], gt[valid]), float(np.median(p[valid]) / np.median(gt[valid]))))
    out = {k: (float(np.mean([a for a, _ in v])), float(np.median([r for _, r in v]))) for k, v in per.items()}
    out["all"] = (float(np.mean([a for v in per.values() for a, _ in v])), float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `bridge demo` folder")
    ap.add_argument("--eval", default="val", help="scene set of the demo folder to measure on (default val)")
    ap.add_argument("--model", type=Path, help="relative checkpoint (default: the demo's seed-0 BRIDGE student)")
    ap.add_argument("--train", type=Path, help="training scenes (default: the demo's scenes/train)")
    ap.add_argument("--eval-dir", type=Path, help="held-out scenes (default: the demo's scenes/EVAL)")
    ap.add_argument("--metric", type=Path, nargs="*", help="metric checkpoints (default: the demo's metric "
                    "and scale-head checkpoints)")
    ap.add_argument("--input-size", type=int, default=None, help="default: the demo's model.input_size")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=600, help="offline scale-head steps (0: skip)")
    ap.add_argument("--lr", type=float, default=5e-4, help="offline scale head lr (the stage's: 5e-5 x 10)")
    a = ap.parse_args()
    if a.eval == "test" and a.eval_dir is None:
        ap.error("the test set is not for choosing anything: measure on val (or pass --eval-dir explicitly)")

    import torch

    from bridgedepth.config import load_config
    from bridgedepth.mde import load_model

    size = a.input_size
    if size is None:
        cfg_path = a.demo / "config.yaml"
        size = load_config(str(cfg_path)).model.input_size if cfg_path.exists() else 128
    model_path = a.model or a.demo / "rows/seed0/finetune_hybrid/last"
    train_dir = a.train or a.demo / "scenes/train"
    eval_dir = a.eval_dir or a.demo / "scenes" / a.eval
    metric = a.metric if a.metric is not None else [p for p in (a.demo / "metric/last", a.demo / "scale-head/last")
                                                    if p.exists()]
    torch.manual_seed(0)
    model = load_model(model_path).eval()
    train, cap = cache_set(model, train_dir, size, a.train_limit)
    held, _ = cache_set(model, eval_dir, size)
    counts = {k: sum(c[0] == k for c in held) for k in sorted({c[0] for c in held})}
    print(f"relative model {model_path}; {len(train)} training scenes ({train_dir}); {len(held)} held-out scenes "
          f"({eval_dir}: {counts}); depth cap {cap:g} m; input {size} px")

    for ck in metric:
        errs = checkpoint_errors(ck, held, size)
        kinds = ", ".join(f"{k} {v[0]:.3f} (scale x{v[1]:.2f})" for k, v in errs.items() if k != "all")
        print(f"metric checkpoint {ck}: AbsRel {errs['all'][0]:.3f}; per kind: {kinds}")

    refs = affine_references(held, cap)
    glob = refs.pop("global")
    for name, v in refs.items():
        kinds = ", ".join(f"{k} {x:.3f}" for k, x in v.items() if k != "all")
        print(f"affine reference, {name:34s}: AbsRel {v['all']:.3f} ({kinds})")
    print(f"the global affine on these scenes: metric disparity = {glob['scale']:.4f} x disparity + "
          f"{glob['shift']:.4f} (depth at zero disparity {1 / glob['shift'] if glob['shift'] > 0 else float('inf'):.2f} m)")
    tr_acc, held_acc = kind_probe(train, held)
    print(f"linear probe of the scene kind on the scale head's input features: train accuracy {tr_acc:.3f}, "
          f"held-out {held_acc:.3f}")
    if a.steps > 0:
        curve, (factor, ab_factor) = offline_head(train, held, cap, a.steps, a.lr)
        print("offline scale head (SiLog, AdamW lr %g, batch 8): " % a.lr
              + ", ".join(f"step {s}: held-out AbsRel {ab:.3f} / train SiLog {sl:.3f}" for s, ab, sl in curve))
        print(f"the trained head's depth times {factor:.2f} (the factor with the lowest training AbsRel): "
              f"held-out AbsRel {ab_factor:.3f}")


if __name__ == "__main__":
    main()
