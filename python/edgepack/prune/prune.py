"""Magnitude pruning: unstructured, 2:4 and structured (neurons / channels), one-shot or gradual."""

from __future__ import annotations

import copy
import warnings

import numpy as np

from ..nn.base import Module
from ..nn.containers import Sequential
from ..nn.layers import (
    GELU, AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Identity, Linear,
    MaxPool2d, ReLU, SiLU, Sigmoid, Tanh,
)
from ..nn.sparse import DENSITY_THRESHOLD, sparsify
from .masks import magnitude_masks, nm_mask, unit_scores
from .schedule import cubic_schedule

__all__ = ["prune", "sensitivity", "SensitivityResult"]

STRUCTURES = ("unstructured", "2:4", "neurons", "channels")
# Layers a unit's output passes through unchanged per channel: removing the unit removes its
# channel here too (BatchNorm's per-channel parameters are sliced).
_PASS = (ReLU, GELU, SiLU, Tanh, Sigmoid, Dropout, Identity, BatchNorm, MaxPool2d, AvgPool2d,
         GlobalAvgPool2d)


# -- target selection -----------------------------------------------------------------------------

def _skipper(skip, modules: dict):
    if isinstance(skip, (str, type)):
        skip = (skip,)
    names = [s for s in skip if isinstance(s, str)]
    classes = tuple(s for s in skip if isinstance(s, type))
    bad = [s for s in skip if not isinstance(s, (str, type))]
    if bad:
        raise TypeError(f"skip must hold layer names (str) or classes; got {bad!r}")
    unknown = [s for s in names if s not in modules]
    if unknown:
        raise ValueError(f"skip names unknown layers {unknown}; layers are {[n for n in modules if n][:20]}")

    def skipped(name: str) -> bool:
        if any(name == s or name.startswith(s + ".") for s in names):
            return True
        if classes:
            parts = name.split(".") if name else []
            return any(isinstance(modules[".".join(parts[:k])], classes) for k in range(len(parts) + 1))
        return False

    return skipped


def _targets(model: Module, kinds: tuple, skip) -> dict[str, Module]:
    modules = dict(model.named_modules())
    skipped = _skipper(skip, modules)
    return {n: m for n, m in modules.items() if type(m) in kinds and not skipped(n)}


# -- fine-tuning ----------------------------------------------------------------------------------

def _set_masks(layers: dict[str, Module], masks: dict[str, np.ndarray]) -> None:
    for n, m in layers.items():
        mk = masks[n].astype(np.float32)
        m.weight = np.ascontiguousarray(m.weight * mk, dtype=np.float32)
        m.weight_mask = mk


def _reapply_masks(model: Module) -> None:
    for _, m in model.named_modules():
        mk = m.__dict__.get("weight_mask")
        if mk is not None:
            m.weight = np.ascontiguousarray(m.weight * mk, dtype=np.float32)


def _drop_masks(model: Module) -> None:
    for _, m in model.named_modules():
        m.__dict__.pop("weight_mask", None)


def _fine_tune(model: Module, data, epochs: int, train_kw: dict) -> None:
    if data is None or epochs <= 0:
        return
    if callable(data):
        data(model, epochs)
        _reapply_masks(model)
        model.eval()
        return
    import edgepack

    # Through the package's lazy attribute (not `from ..train import train`), which would leave
    # edgepack.train bound to the module instead of the function on first import.
    train = edgepack.train
    if not callable(train) and hasattr(train, "train"):
        train = train.train

    x, y = data
    train(model, x, y, epochs=epochs, **train_kw)
    # train() keeps masked weights at zero (weight_mask); re-applying is free and guards against
    # a custom loss/optimizer path that does not.
    _reapply_masks(model)
    model.eval()


# -- structured removal ---------------------------------------------------------------------------

class _Group:
    """A prunable producer (Linear/Conv2d) with everything that consumes its output units."""

    def __init__(self, name, seq, idx, producer, passthrough, flatten, consumer):
        self.name, self.seq, self.idx = name, seq, idx
        self.producer, self.passthrough, self.flatten, self.consumer = producer, passthrough, flatten, consumer
        self.orig_units = producer.weight.shape[0]

    @property
    def units(self) -> int:
        return self.producer.weight.shape[0]

    def scores(self) -> np.ndarray:
        return unit_scores(self.producer.weight)

    def keep(self, keep: np.ndarray, spatial: int) -> None:
        keep = np.sort(np.asarray(keep, np.int64))
        p = self.producer
        p.weight = np.ascontiguousarray(p.weight[keep])
        if p.bias is not None:
            p.bias = np.ascontiguousarray(p.bias[keep])
        if isinstance(p, Linear):
            p.out_features = int(keep.size)
        else:
            p.out_channels = int(keep.size)
        for bn in self.passthrough:
            if isinstance(bn, BatchNorm):
                for t in ("weight", "bias", "running_mean", "running_var"):
                    setattr(bn, t, np.ascontiguousarray(getattr(bn, t)[keep]))
                bn.num_features = int(keep.size)
        c = self.consumer
        if isinstance(c, Conv2d):
            c.weight = np.ascontiguousarray(c.weight[:, keep])
            c.in_channels = int(keep.size)
        else:
            cols = keep
            if self.flatten:
                cols = (keep[:, None] * spatial + np.arange(spatial)[None, :]).ravel()
            c.weight = np.ascontiguousarray(c.weight[:, cols])
            c.in_features = int(cols.size)


def _groups(model: Module, kind, skip) -> list[_Group]:
    """Producers of type ``kind`` whose output units can be removed: inside a Sequential, followed
    (through per-channel layers) by a Linear or ungrouped Conv2d that reads only them."""
    targets = _targets(model, (kind,), skip)
    out = []
    for sname, seq in model.named_modules():
        if type(seq) is not Sequential:  # a Residual's body output is added to its input
            continue
        for i, p in enumerate(seq.layers):
            name = f"{sname}.{i}" if sname else str(i)
            if name not in targets:
                continue
            if isinstance(p, Conv2d) and p.groups != 1:
                continue
            passthrough, flatten, consumer = [], False, None
            for j in range(i + 1, len(seq.layers)):
                q = seq.layers[j]
                if type(q) in (Linear, Conv2d):
                    consumer = q
                    break
                if isinstance(q, _PASS):
                    passthrough.append(q)
                elif type(q) is Flatten and isinstance(p, Conv2d) and q.start_dim == 1 and not flatten:
                    flatten = True
                else:
                    break
            if consumer is None:
                continue
            if isinstance(consumer, Conv2d) and (isinstance(p, Linear) or consumer.groups != 1
                                                 or any(isinstance(t, GlobalAvgPool2d) for t in passthrough)):
                continue
            if isinstance(p, Conv2d) and isinstance(consumer, Linear):
                gap = any(isinstance(t, GlobalAvgPool2d) and not t.keepdims for t in passthrough)
                if not (gap or flatten):
                    continue
                if flatten and consumer.weight.shape[1] % p.weight.shape[0]:
                    continue
            out.append(_Group(name, seq, i, p, passthrough, flatten, consumer))
    return out


def _remove_units(groups: list[_Group], fraction: float, scope: str) -> None:
    """Remove units so each group (scope "layer") or all groups together (scope "global") have
    lost ``fraction`` of their original units; every layer keeps at least one."""
    plans: dict[int, np.ndarray] = {}
    if scope == "layer":
        for gi, g in enumerate(groups):
            drop = min(int(round(fraction * g.orig_units)) - (g.orig_units - g.units), g.units - 1)
            if drop > 0:
                plans[gi] = np.argsort(g.scores(), kind="stable")[drop:]
    else:
        total = sum(g.orig_units for g in groups)
        drop = int(round(fraction * total)) - sum(g.orig_units - g.units for g in groups)
        # Scores relative to each layer's mean: unit norms scale with a layer's init and fan-in.
        cand = []
        for gi, g in enumerate(groups):
            sc = g.scores()
            sc = sc / max(float(sc.mean()), 1e-30)
            cand += [(s, gi, u) for u, s in enumerate(sc)]
        cand.sort(key=lambda t: t[0])
        left = {gi: g.units for gi, g in enumerate(groups)}
        removed: dict[int, set] = {}
        for s, gi, u in cand:
            if drop <= 0:
                break
            if left[gi] <= 1:
                continue
            removed.setdefault(gi, set()).add(u)
            left[gi] -= 1
            drop -= 1
        for gi, r in removed.items():
            plans[gi] = np.array([u for u in range(groups[gi].units) if u not in r], np.int64)
    for gi, keep in plans.items():
        g = groups[gi]
        spatial = g.consumer.weight.shape[1] // g.units if g.flatten else 1
        g.keep(keep, spatial)


# -- the public function --------------------------------------------------------------------------

def prune(model: Module, sparsity=None, *, structure: str | None = None, scope: str = "global",
          skip=(), schedule: str | None = None, steps: int = 5, fine_tune=None, epochs: int = 2,
          final_epochs: int | None = None, lr: float = 1e-3, batch_size: int = 64,
          optimizer: str = "adam", seed: int | None = 0, progress: bool = False,
          criterion: str = "magnitude", sparse_kernels: str = "auto", train_kwargs: dict | None = None,
          amount=None, importance: str = "l1", round_to: int | None = None, example=None,
          target: str = "channels", labels=None) -> Module:
    """Prune a model by weight magnitude; returns a new model (``model`` is left untouched).

    Graphs (:class:`edgepack.nn.Graph`, e.g. from :func:`edgepack.from_onnx`) are pruned by
    :func:`edgepack.prune.graph.prune_graph`: ``structure="channels"`` (their default) removes
    output channels for real across residual Adds, Concats, depthwise convs, SE gates and
    Flatten -> Gemm, found by dependency analysis; the result has ``.report`` (groups, parameters,
    FLOPs and file size before and after).  The graph-only arguments are described at the end.

    Parameters
    ----------
    model : edgepack.nn.Module or edgepack.nn.Graph
        Float model; its Linear and Conv2d layers (a graph's Conv/Gemm/MatMul nodes) are pruned.
    sparsity : float in [0, 1)
        Fraction of weights (unstructured), or of output units (neurons/channels) to remove.
        For ``"2:4"`` it must be 0.5 (or None).  ``amount`` is the same argument under the
        graph API's name.
    structure : {"unstructured", "2:4", "neurons", "channels"}
        ``"unstructured"``: smallest |w|.  ``"2:4"``: the 2 largest of every 4 consecutive inputs
        (input size a multiple of 4; other layers are left dense with a warning).  ``"neurons"``
        (Linear) / ``"channels"`` (Conv2d): units with the smallest mean |w| (L1 norm / fan-in)
        are removed for real, with the matching inputs of the next layer, so the model gets
        smaller and stays dense.  Only units whose output feeds one Linear/Conv2d in the same
        Sequential (through activations, Dropout, BatchNorm, pooling, Flatten) can be removed;
        the classifier's outputs never are.
    scope : {"global", "layer"}
        One ranking over all pruned layers, or the same fraction in every layer.  Structures
        are ranked globally by their score relative to their layer's mean score.
    criterion : {"magnitude", "lamp"}
        Unstructured global ranking: plain |w| (layers with small weights lose more, possibly
        everything), or LAMP scores (|w| order within a layer, comparable across layers).
    skip : sequence of str or Module classes
        Layers to leave alone (dotted names; a container's name covers its contents).
    schedule : None or "gradual"
        ``"gradual"``: ``steps`` pruning steps following Zhu & Gupta's cubic schedule
        (:func:`~edgepack.prune.schedule.cubic_schedule`), fine-tuning ``epochs`` epochs on
        ``fine_tune`` after each, with the masks held fixed.  None: one shot (then fine-tuned
        ``final_epochs`` epochs if ``fine_tune`` is given).
    fine_tune : (X, y) or callable, optional
        Training data for :func:`edgepack.train`; during fine-tuning each pruned layer carries
        ``weight_mask`` (float32, 1 = kept) so the optimizer keeps pruned weights at zero.  A
        callable ``fine_tune(model, epochs)`` trains in place instead (e.g. with
        :func:`edgepack.distill` from a teacher); masks are re-applied after it returns.
    epochs, final_epochs : int
        Fine-tuning epochs after each gradual step, and after the last step (default ``epochs``).
    lr, batch_size, optimizer, seed, progress, train_kwargs
        Passed to :func:`edgepack.train` (``train_kwargs`` for anything else, e.g. ``loss``).
    sparse_kernels : {"auto", "measure", "always", "never"}
        Which pruned Linear layers become :class:`~edgepack.nn.sparse.SparseLinear` (running
        :func:`edgepack.kernels.spmm` and saved packed): by density rule (``"auto"``: density
        <= 0.4, or 2:4; 0.4-0.7 timed both ways; denser stays dense), by timing both
        (``"measure"``), all, or none.  ``summary()`` shows each
        layer's kernel.

    Graph-only arguments
    --------------------
    structure : {"channels", "unstructured", "2:4"}
        Default ``"channels"`` for a graph.  ``"unstructured"``/``"2:4"`` mask the Conv/Gemm/MatMul
        weights and put the layers the density rule picks on the sparse kernels (``edgepack.Layer``
        nodes running SparseLinear/SparseConv2d; ``sparse_kernels`` as above).
    amount : float in [0, 1) or dict {group name: float}
        Channels: the fraction of prunable channels (or of the weight layers' multiply-adds with
        ``target="flops"``) to remove; a dict prunes each named group by its own fraction.
    importance : {"l1", "l2", "bn_scale", "taylor"}
        How channels are ranked (:func:`edgepack.graph.passes.channels.prune_channels`):
        ``"bn_scale"`` needs the BatchNorm nodes (``from_onnx(path, fold_batchnorm=False)``);
        ``"taylor"`` computes gradients on ``example`` (or the ``fine_tune`` inputs) against
        ``labels`` or the graph's own predictions.
    round_to : int, optional
        Keep multiples of this many channels per group (8 or 16: SIMD-friendly widths).
    example : ndarray or dict, optional
        An input batch to trace shapes (needed when the graph's input sizes are not fixed).
    fine_tune : ndarray, (X, y) or callable
        For a graph, inputs ``X`` alone mean distillation from the original graph's outputs (no
        labels), the default recovery; ``(X, y)`` trains on labels.

    Returns
    -------
    edgepack.nn.Module
        The pruned model in eval mode (no ``weight_mask`` attributes left).
    """
    from ..graph.ir import Graph

    if amount is not None:
        if sparsity is not None:
            raise TypeError("give sparsity or amount (the same argument), not both")
        sparsity = amount
    if isinstance(model, Graph):
        from .graph import prune_graph

        return prune_graph(model, sparsity, structure=structure or "channels", importance=importance,
                           scope=scope, skip=skip, round_to=round_to, example=example, target=target,
                           schedule=schedule, steps=steps, fine_tune=fine_tune, epochs=epochs,
                           final_epochs=final_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                           seed=seed, progress=progress, criterion=criterion, sparse_kernels=sparse_kernels,
                           train_kwargs=train_kwargs, labels=labels)
    if structure is None:
        structure = "unstructured"
    if not isinstance(model, Module):
        raise TypeError(f"model must be an edgepack.nn Module; got {type(model).__name__}")
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(map(repr, STRUCTURES))}; got {structure!r}")
    if structure == "2:4":
        if sparsity is None:
            sparsity = 0.5
        if not isinstance(sparsity, (int, float)) or abs(float(sparsity) - 0.5) > 1e-9:
            raise ValueError(f"sparsity must be 0.5 for structure '2:4'; got {sparsity!r}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
            or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1); got {sparsity!r}")
    sparsity = float(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer'; got {scope!r}")
    if schedule not in (None, "gradual"):
        raise ValueError(f"schedule must be None or 'gradual'; got {schedule!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if schedule == "gradual" and fine_tune is None:
        raise ValueError("schedule='gradual' needs fine_tune=(X, y): it fine-tunes between steps")
    if fine_tune is not None and not callable(fine_tune) and (
            not isinstance(fine_tune, (tuple, list)) or len(fine_tune) != 2):
        raise TypeError("fine_tune must be a pair (X, y) or a callable fine_tune(model, epochs)")
    final_epochs = epochs if final_epochs is None else final_epochs
    train_kw = {"lr": lr, "batch_size": batch_size, "optimizer": optimizer, "seed": seed,
                "progress": progress, **(train_kwargs or {})}

    pruned = copy.deepcopy(model)
    pruned.eval()
    fractions = cubic_schedule(sparsity, steps) if schedule == "gradual" and structure != "2:4" else [sparsity]

    if structure in ("unstructured", "2:4"):
        layers = _targets(pruned, (Linear, Conv2d), skip)
        if not layers:
            raise ValueError("no Linear or Conv2d layer to prune (all skipped?)")
        if structure == "2:4":
            ok = {}
            for n, m in layers.items():
                if m.weight.reshape(m.weight.shape[0], -1).shape[1] % 4:
                    warnings.warn(f"prune: layer {n} has {m.weight[0].size} inputs, not a multiple of 4; "
                                  "left dense", stacklevel=2)
                else:
                    ok[n] = m
            layers = ok
        for step, s in enumerate(fractions):
            if structure == "2:4":
                masks = {n: nm_mask(m.weight) for n, m in layers.items()}
            else:
                masks = magnitude_masks({n: m.weight for n, m in layers.items()}, s, scope, criterion)
            _set_masks(layers, masks)
            last = step == len(fractions) - 1
            if last and structure == "unstructured" and scope == "global" and len(layers) > 1:
                gone = [n for n, mk in masks.items() if mk.mean() < 0.01]
                if gone:
                    warnings.warn(f"prune: global magnitude pruning kept under 1% of the weights of layer(s) "
                                  f"{gone}; criterion='lamp' or scope='layer' spreads the pruning", stacklevel=2)
            _fine_tune(pruned, fine_tune, final_epochs if last else epochs, train_kw)
        _drop_masks(pruned)
        pruned = sparsify(pruned, mode=sparse_kernels, threshold=DENSITY_THRESHOLD)
    else:
        kind = Linear if structure == "neurons" else Conv2d
        groups = _groups(pruned, kind, skip)
        if not groups:
            raise ValueError(f"no {kind.__name__} layer whose {structure} can be removed (a layer "
                             f"needs a following Linear/Conv2d in the same Sequential)")
        for step, s in enumerate(fractions):
            _remove_units(groups, s, scope)
            last = step == len(fractions) - 1
            _fine_tune(pruned, fine_tune, final_epochs if last else epochs, train_kw)
    pruned.eval()
    return pruned


# -- sensitivity ----------------------------------------------------------------------------------

def _accuracy(model, x, y, batch_size=256) -> float:
    pred = np.asarray(model.predict(x, batch_size=batch_size))
    return float(np.mean(pred.argmax(axis=-1) == np.asarray(y)))


class SensitivityResult:
    """Accuracy drop (in percentage points) per layer per sparsity.

    Attributes
    ----------
    baseline : float
        Accuracy of the unpruned model, in [0, 1].
    sparsities : list of float
    drops : dict of layer name -> list of float
        ``baseline - accuracy`` in points (100 * fraction) when only that layer is pruned.
    """

    def __init__(self, baseline, sparsities, drops, structure):
        self.baseline, self.sparsities, self.drops, self.structure = baseline, list(sparsities), drops, structure

    def __str__(self) -> str:
        head = ["layer"] + [f"{s:.0%}" for s in self.sparsities]
        rows = [[n] + [f"{d:+.2f}" for d in ds] for n, ds in self.drops.items()]
        w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
        lines = [f"accuracy drop in points when one layer is pruned ({self.structure}); "
                 f"baseline {100 * self.baseline:.2f}%", fmt(head), "-" * (sum(w) + 2 * len(w))]
        lines += [fmt(r) for r in rows]
        return "\n".join(lines)

    __repr__ = __str__

    def plot(self, path=None, ax=None):
        """Drop against sparsity, one line per layer.  Needs matplotlib; writes ``path`` when
        given; returns the Axes."""
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            raise ModuleNotFoundError("SensitivityResult.plot needs matplotlib (pip install 'edgepack[plot]')") from None
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        xs = [100 * s for s in self.sparsities]
        for n, ds in self.drops.items():
            ax.plot(xs, ds, marker="o", label=n)
        ax.set_xlabel("sparsity of the layer (%)")
        ax.set_ylabel("accuracy drop (points)")
        ax.set_title(f"pruning sensitivity ({self.structure})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        if path is not None:
            (fig or ax.figure).savefig(path, dpi=120, bbox_inches="tight")
            if fig is not None:
                plt.close(fig)
        return ax


def sensitivity(model: Module, X, y=None, sparsities=(0.25, 0.5, 0.75, 0.9), *, structure: str | None = None,
                skip=(), batch_size: int = 256, plot: str | None = None, importance: str = "l1", metric=None,
                example=None) -> SensitivityResult:
    """Accuracy drop when each prunable layer alone is pruned, at each sparsity (no fine-tuning).

    For a graph (:class:`edgepack.nn.Graph`) the rows are channel groups and the score is the
    accuracy against ``y``, ``metric(outputs, y)``, or without labels the agreement with the
    original graph's argmax (see :func:`edgepack.prune.graph.sensitivity_graph`); ``importance``
    and ``example`` are as in :func:`prune`.

    Parameters
    ----------
    model : edgepack.nn.Module
    X : ndarray (N, ...) float32 ; y : ndarray (N,) integer class labels
        Evaluation data; accuracy is ``argmax(model(X)) == y``.
    sparsities : sequence of float in [0, 1)
    structure : {"unstructured", "neurons", "channels"}
        Unstructured magnitude per layer, or zeroing the fraction of output units with the
        smallest L1 norm (rows and bias; what removing them costs for ReLU-like activations).
    skip : layers to leave out of the table
    plot : str, optional
        Also write the plot there (needs matplotlib).

    Returns
    -------
    SensitivityResult
        ``str()`` is the table; ``.plot(path)`` draws it.
    """
    from ..graph.ir import Graph

    if isinstance(model, Graph):
        from .graph import sensitivity_graph

        return sensitivity_graph(model, X, y, sparsities, structure=structure or "channels", importance=importance,
                                 skip=skip, batch_size=min(batch_size, 64), metric=metric, example=example,
                                 plot=plot)
    if y is None:
        raise TypeError("sensitivity needs labels y for a layer model")
    if structure is None:
        structure = "unstructured"
    if structure not in ("unstructured", "neurons", "channels"):
        raise ValueError(f"structure must be 'unstructured', 'neurons' or 'channels'; got {structure!r}")
    sps = [float(s) for s in sparsities]
    if not sps or any(not 0.0 <= s < 1.0 for s in sps):
        raise ValueError(f"sparsities must be numbers in [0, 1); got {sparsities!r}")
    work = copy.deepcopy(model)
    work.eval()
    if structure == "unstructured":
        layers = _targets(work, (Linear, Conv2d), skip)
    else:  # only units prune() can remove (not the classifier's outputs)
        layers = {g.name: g.producer for g in _groups(work, Linear if structure == "neurons" else Conv2d, skip)}
    if not layers:
        raise ValueError("no layer to analyse")
    base = _accuracy(work, X, y, batch_size)
    drops = {}
    for n, m in layers.items():
        w0, b0 = m.weight, m.bias
        row = []
        for s in sps:
            if structure == "unstructured":
                mask = magnitude_masks({n: w0}, s)[n]
                m.weight = np.ascontiguousarray(w0 * mask, dtype=np.float32)
            else:
                k = int(round(s * w0.shape[0]))
                gone = np.argsort(unit_scores(w0), kind="stable")[:k]
                w = w0.copy()
                w[gone] = 0
                m.weight = w
                if b0 is not None:
                    b = b0.copy()
                    b[gone] = 0
                    m.bias = b
            row.append(100.0 * (base - _accuracy(work, X, y, batch_size)))
        m.weight, m.bias = w0, b0
        drops[n] = row
    res = SensitivityResult(base, sps, drops, structure)
    if plot is not None:
        res.plot(plot)
    return res
