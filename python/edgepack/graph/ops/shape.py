"""Shape and tensor-manipulation operators (see edgepack.graph.registry for the maker contract).

Registered (ai.onnx, first opset of each range):

* Reshape 5, 14 (``allowzero``); Flatten 1; Transpose 1; Squeeze 1, 13 (axes as input);
  Unsqueeze 1, 13 (axes as input); Shape 1, 15 (``start``/``end``); Size 1.
* Concat 4; Split 2, 13 (split sizes as input), 18 (``num_outputs``); Slice 1, 10 (inputs).
* Gather 1; GatherElements 11; GatherND 11, 12 (``batch_dims``); ScatterND 11, 16, 18 and
  ScatterElements 11, 16, 18 (``reduction`` none/add/mul, plus max/min from 18); the deprecated
  Scatter 9 (ScatterElements without reduction).
* Expand 8; Tile 6; Pad 2, 11 (pads as input), 18 (axes input): modes constant, reflect, edge
  and wrap (wrap is an opset-19 mode, accepted at every version), negative pads crop;
  ConstantOfShape 9; Range 11, 27 (``stash_type``); OneHot 9; NonZero 9.
* TopK 1, 10 (K as input), 11 (``largest``, ``sorted``); DepthToSpace 1, 11 (``mode``);
  SpaceToDepth 1, 28 (``mode``); Trilu 14; CumSum 11.

Constant inputs that set a shape (Reshape's shape, Slice's starts/ends/axes/steps, Split's sizes,
axes, pads, ...) are parsed once in the maker; otherwise they are read on each call.  Every size
read from a tensor goes through :func:`check_alloc` before anything is allocated, so a hostile
ConstantOfShape/Expand/Tile/Range/Pad/OneHot raises ValueError instead of exhausting memory;
Gather (with many indices) and GatherND check their output size the same way.

Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Split and Slice with positive steps return views
of their input (never written to); every other op returns a new array.  TopK always returns its
results sorted (a valid answer for ``sorted=0``), ties in index order.  Scatter with reduction
none and repeated indices keeps the last update (ONNX leaves the order undefined).
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import REQUIRED, register_op
from ._util import MAX_ELEMENTS, as_int_list, check_alloc, norm_axis

__all__: list = []


# -- helpers ------------------------------------------------------------------------------------
def _const(consts, i):
    return consts[i] if i < len(consts) else None


def _given(node, i) -> bool:
    return i < len(node.inputs) and bool(node.inputs[i])


def _mode(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _scalar_int(v, what: str) -> int:
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a single integer; got {a.dtype} of shape {a.shape}")
    return int(a.reshape(-1)[0])


def _axis_index(axis: int, sl) -> tuple:
    """An index putting ``sl`` on ``axis`` (negative axes count from the end) without knowing the
    rank: ``(:, :, sl)`` or ``(..., sl, :)``."""
    if not -64 <= axis < 64:      # NumPy arrays have at most 64 dimensions
        raise ValueError(f"axis {axis} is out of range for any tensor (NumPy allows 64 dimensions)")
    if axis >= 0:
        return (slice(None),) * axis + (sl,)
    return (Ellipsis, sl) + (slice(None),) * (-axis - 1)


def _grid(shape, skip: int) -> list:
    """Broadcastable ``arange``s over ``shape`` (entry ``skip`` left as None) for element-wise
    fancy indexing (GatherElements, ScatterElements)."""
    nd = len(shape)
    return [None if d == skip else np.arange(s).reshape((s,) + (1,) * (nd - 1 - d))
            for d, s in enumerate(shape)]


def _check_count(n: int, what: str) -> None:
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what} would have {n} elements, more than the {MAX_ELEMENTS} edgepack allows")


def _ints(v, what: str) -> list:
    """A 0-D/1-D integer tensor read at run time as a list of ints (the common case without
    as_int_list's conversions: this runs per call for shape inputs that are not constants)."""
    if v.__class__ is np.ndarray and v.ndim == 1 and v.dtype.kind in "iu":
        return v.tolist()
    return as_int_list(v, what)


# -- Reshape / Flatten / Transpose / Squeeze / Unsqueeze -----------------------------------------
def _reshape_target(spec: list, in_shape: tuple, allowzero: bool) -> tuple:
    if spec.count(-1) > 1:
        raise ValueError(f"shape {spec} has more than one -1")
    if any(d < -1 for d in spec):
        raise ValueError(f"shape {spec} has a negative dimension other than -1")
    if allowzero:
        if -1 in spec and 0 in spec:
            raise ValueError(f"shape {spec} has both 0 and -1 while allowzero=1")
        return tuple(spec)
    out = list(spec)
    for i, d in enumerate(spec):
        if d == 0:
            if i >= len(in_shape):
                raise ValueError(f"shape {spec}: 0 at position {i} copies a dimension the input "
                                 f"(shape {in_shape}) does not have")
            out[i] = in_shape[i]
    return tuple(out)


@register_op("Reshape", 5, shape_inputs=(1,))
@register_op("Reshape", 14, attrs={"allowzero": 0}, shape_inputs=(1,))
def _reshape(node, consts):
    allowzero = bool(node.attrs.get("allowzero", 0))
    c = _const(consts, 1)
    if c is None:
        def run(x, shape):
            return x.reshape(_reshape_target(_ints(shape, "shape"), x.shape, allowzero))
        return run
    spec = as_int_list(c, "shape")
    _reshape_target(spec, tuple(1 for _ in spec), allowzero)   # validate once
    if allowzero or 0 not in spec:
        t = tuple(spec)
        return lambda x, shape=None: x.reshape(t)
    zeros = [i for i, d in enumerate(spec) if d == 0]
    last = zeros[-1]

    def run(x, shape=None):
        s = x.shape
        if last >= len(s):
            raise ValueError(f"shape {spec}: 0 at position {last} copies a dimension the input "
                             f"(shape {s}) does not have")
        t = list(spec)
        for i in zeros:
            t[i] = s[i]
        return x.reshape(t)
    return run


@register_op("Flatten", 1, attrs={"axis": 1})
def _flatten(node, consts):
    axis = int(node.attrs["axis"])

    def run(x):
        r = x.ndim
        a = axis + r if axis < 0 else axis
        if not 0 <= a <= r:
            raise ValueError(f"axis {axis} is out of range for a tensor of rank {r}")
        s = x.shape
        return x.reshape(math.prod(s[:a]), math.prod(s[a:]))
    return run


def _check_transpose(node):
    perm = node.attrs["perm"]
    if perm is not None and sorted(int(p) for p in perm) != list(range(len(perm))):
        return [f"perm {list(perm)} is not a permutation of 0..{len(perm) - 1}"]
    return []


@register_op("Transpose", 1, attrs={"perm": None}, check=_check_transpose)
def _transpose(node, consts):
    perm = node.attrs["perm"]
    if perm is None:
        return lambda x: x.transpose()
    perm = tuple(int(p) for p in perm)

    def run(x):
        if x.ndim != len(perm):
            raise ValueError(f"perm {list(perm)} has {len(perm)} entries for an input of rank {x.ndim}")
        return x.transpose(perm)
    return run


def _squeeze_fn(axes):
    # No axes (or an empty list, as onnxruntime reads it) removes every dimension of size 1.
    if not axes:
        return np.squeeze
    ax = tuple(axes)
    return lambda x: np.squeeze(x, axis=ax)


@register_op("Squeeze", 1, attrs={"axes": None})
def _squeeze_1(node, consts):
    f = _squeeze_fn(None if node.attrs["axes"] is None else [int(a) for a in node.attrs["axes"]])
    return lambda x: f(x)


@register_op("Squeeze", 13, shape_inputs=(1,))
def _squeeze_13(node, consts):
    if not _given(node, 1):
        return lambda x, axes=None: np.squeeze(x)
    c = _const(consts, 1)
    if c is not None:
        f = _squeeze_fn(as_int_list(c, "axes"))
        return lambda x, axes=None: f(x)
    return lambda x, axes: _squeeze_fn(_ints(axes, "axes"))(x)


def _unsqueeze_fn(axes: list):
    n = len(axes)
    if not n:
        return lambda x: x
    if len(set(axes)) != n:
        raise ValueError(f"axes {axes} has repeated axes")
    if min(axes) >= 0:
        ax = sorted(axes)
        top = ax[-1]

        def run(x):
            if top >= x.ndim + n:
                raise ValueError(f"axes {axes} is out of range for an output of rank {x.ndim + n}")
            s = list(x.shape)
            for a in ax:
                s.insert(a, 1)
            return x.reshape(s)
        return run

    def run(x):
        r = x.ndim + n
        ax = sorted(norm_axis(a, r, "axes") for a in axes)
        if len(set(ax)) != n:
            raise ValueError(f"axes {axes} has repeated axes for an output of rank {r}")
        s = list(x.shape)
        for a in ax:
            s.insert(a, 1)
        return x.reshape(s)
    return run


def _check_unsqueeze(node):
    axes = [int(a) for a in node.attrs["axes"]]
    return [f"axes {axes} has repeated axes"] if len(set(axes)) != len(axes) else []


@register_op("Unsqueeze", 1, attrs={"axes": REQUIRED}, check=_check_unsqueeze)
def _unsqueeze_1(node, consts):
    f = _unsqueeze_fn([int(a) for a in node.attrs["axes"]])
    return lambda x: f(x)


@register_op("Unsqueeze", 13, shape_inputs=(1,))
def _unsqueeze_13(node, consts):
    c = _const(consts, 1)
    if c is not None:
        f = _unsqueeze_fn(as_int_list(c, "axes"))
        return lambda x, axes=None: f(x)
    return lambda x, axes: _unsqueeze_fn(_ints(axes, "axes"))(x)


@register_op("Shape", 1, reads_shape_only=True)
@register_op("Shape", 15, attrs={"start": 0, "end": None}, reads_shape_only=True)
def _shape(node, consts):
    start = int(node.attrs.get("start", 0) or 0)
    end = node.attrs.get("end")
    if start == 0 and end is None:
        return lambda x: np.array(x.shape, np.int64)
    # Python slicing clamps exactly as ONNX does (negatives count from the end, then [0, rank]).
    sl = slice(start, None if end is None else int(end))
    return lambda x: np.array(x.shape[sl], np.int64)


@register_op("Size", 1, reads_shape_only=True)
def _size(node, consts):
    return lambda x: np.array(x.size, np.int64)


# -- Concat / Split / Slice ---------------------------------------------------------------------
@register_op("Concat", 4, attrs={"axis": REQUIRED})
def _concat(node, consts):
    axis = int(node.attrs["axis"])

    def run(*xs):
        if xs and xs[0].ndim == 0:
            raise ValueError("Concat inputs must have at least one dimension; got a scalar")
        return np.concatenate(xs, axis=axis)
    return run


def _split_sizes(dim: int, n: int) -> list:
    # Equal parts; when the dimension does not divide, the last part is smaller (opset 18 rule,
    # applied at every version).
    c = -(-dim // n) if n else 0
    out, left = [], dim
    for _ in range(n):
        out.append(min(c, left))
        left -= out[-1]
    return out


def _split_run(axis: int, sizes: list | None, n: int):
    def slices(sz):
        idx, pos = [], 0
        for s in sz:
            idx.append(_axis_index(axis, slice(pos, pos + s)))
            pos += s
        return idx

    if sizes is not None:
        if any(s < 0 for s in sizes):
            raise ValueError(f"split sizes {sizes} must be non-negative")
        if len(sizes) != n:
            raise ValueError(f"split has {len(sizes)} sizes for {n} outputs")
        total = sum(sizes)
        idx = slices(sizes)

        def run(x, *_):
            if x.shape[axis] != total:
                raise ValueError(f"split sizes {sizes} add up to {total}, but axis {axis} of the input "
                                 f"(shape {x.shape}) is {x.shape[axis]}")
            return tuple(x[i] for i in idx)
        return run

    def run(x, *_):
        return tuple(x[i] for i in slices(_split_sizes(x.shape[axis], n)))
    return run


def _split_axis(node):
    return int(node.attrs["axis"])


@register_op("Split", 2, attrs={"axis": 0, "split": None})
def _split_2(node, consts):
    sp = node.attrs["split"]
    sizes = None if sp is None or len(sp) == 0 else [int(s) for s in sp]
    return _split_run(_split_axis(node), sizes, len(node.outputs))


def _split_input_run(node, consts, n):
    axis = _split_axis(node)
    if not _given(node, 1):
        return _split_run(axis, None, n)
    c = _const(consts, 1)
    if c is not None:
        return _split_run(axis, as_int_list(c, "split"), n)

    def run(x, split):
        return _split_run(axis, _ints(split, "split"), n)(x)
    return run


@register_op("Split", 13, attrs={"axis": 0}, shape_inputs=(1,))
def _split_13(node, consts):
    return _split_input_run(node, consts, len(node.outputs))


def _check_split_18(node):
    k = node.attrs["num_outputs"]
    if k is None:
        return []
    out = []
    if _given(node, 1):
        out.append("give either the split input or num_outputs, not both")
    if int(k) < 1 or int(k) != len(node.outputs):
        out.append(f"num_outputs={k} does not match the node's {len(node.outputs)} outputs")
    return out


@register_op("Split", 18, attrs={"axis": 0, "num_outputs": None}, check=_check_split_18, shape_inputs=(1,))
def _split_18(node, consts):
    return _split_input_run(node, consts, len(node.outputs))


_ALL = slice(None)


def _slice_index(starts, ends, axes, steps) -> tuple[tuple, bool]:
    """The index tuple for ONNX Slice and whether it steps backwards.

    Python slices clamp starts/ends exactly as ONNX specifies (negatives from the end, then into
    [0, dim] forwards and [-1, dim-1] backwards), so one index tuple serves every input shape.
    Negative axes go after an Ellipsis; a positive and a negative axis naming the same dimension
    then fail in NumPy as "too many indices"."""
    n = len(starts)
    if axes is None:
        axes = range(n)
    if steps is None:
        steps = (1,) * n
    if len(ends) != n or len(axes) != n or len(steps) != n:
        raise ValueError(f"starts, ends, axes and steps must have the same length; got {n}, {len(ends)}, "
                         f"{len(axes)}, {len(steps)}")
    head: list = []
    tail: list = []
    back = False
    for st, e, a, d in zip(starts, ends, axes, steps):
        if d <= 0:
            if d == 0:
                raise ValueError(f"steps {list(steps)} has a zero step")
            back = True
        side, k = (head, a) if a >= 0 else (tail, -1 - a)
        if k >= len(side):
            side.extend([_ALL] * (k + 1 - len(side)))
        elif side[k] is not _ALL:
            raise ValueError(f"axes {list(axes)} has repeated axes")
        side[k] = slice(st, e, d)
    if tail:
        head.append(Ellipsis)
        head.extend(reversed(tail))
    return tuple(head), back


def _slice_apply(x, idx, copy):
    if not idx:
        return x
    y = x[idx]
    # A backwards slice is a negative-stride view; kernels downstream expect forward strides.
    return y.copy() if copy else y


@register_op("Slice", 1, attrs={"starts": REQUIRED, "ends": REQUIRED, "axes": None})
def _slice_1(node, consts):
    a = node.attrs
    axes = None if a["axes"] is None or len(a["axes"]) == 0 else [int(v) for v in a["axes"]]
    idx, copy = _slice_index([int(v) for v in a["starts"]], [int(v) for v in a["ends"]], axes, None)
    return lambda x: _slice_apply(x, idx, copy)


@register_op("Slice", 10, shape_inputs=(1, 2, 3, 4))
def _slice_10(node, consts):
    names = ("starts", "ends", "axes", "steps")
    given = [_given(node, i) for i in range(1, 5)]
    cs = [_const(consts, i) for i in range(1, 5)]
    if all(c is not None or not g for c, g in zip(cs, given)):
        lists = [as_int_list(c, nm) if c is not None else None for c, nm in zip(cs, names)]
        idx, copy = _slice_index(*lists)
        return lambda x, *_: _slice_apply(x, idx, copy)

    def run(x, starts, ends, axes=None, steps=None):
        idx, copy = _slice_index(_ints(starts, "starts"), _ints(ends, "ends"),
                                 None if axes is None else _ints(axes, "axes"),
                                 None if steps is None else _ints(steps, "steps"))
        return _slice_apply(x, idx, copy)
    return run


# -- Gather / Scatter ---------------------------------------------------------------------------
@register_op("Gather", 1, attrs={"axis": 0})
def _gather(node, consts):
    axis = int(node.attrs["axis"])
    c = _const(consts, 1)
    if c is not None and c.ndim == 0 and c.dtype.kind in "iu":
        # One constant index: basic indexing (no fancy-indexing setup), copied like np.take would.
        key = _axis_index(axis, int(c))

        def run(x, indices=None):
            r = x[key]
            return r.copy() if r.__class__ is np.ndarray else np.asarray(r)
        return run

    def run(x, indices):
        if indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be an integer tensor; got {indices.dtype}")
        if indices.size > 1 << 16:
            # Many indices into a large table can ask for more than the allocation guard allows.
            d = x.shape[axis] if x.ndim else 1
            _check_count(indices.size * (x.size // d if d else 0), "output")
        return np.asarray(np.take(x, indices, axis=axis))
    return run


def _elements_index(x, indices, axis):
    if indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be an integer tensor; got {indices.dtype}")
    if indices.ndim != x.ndim:
        raise ValueError(f"indices (shape {indices.shape}) must have the rank of data (shape {x.shape})")
    ax = norm_axis(axis, x.ndim)
    g = _grid(indices.shape, ax)
    g[ax] = indices
    return tuple(g)


@register_op("GatherElements", 11, attrs={"axis": 0})
def _gather_elements(node, consts):
    axis = int(node.attrs["axis"])
    return lambda x, indices: x[_elements_index(x, indices, axis)]


def _check_batch_dims(node):
    b = int(node.attrs.get("batch_dims", 0))
    return [f"batch_dims={b} must be non-negative"] if b < 0 else []


@register_op("GatherND", 11)
@register_op("GatherND", 12, attrs={"batch_dims": 0}, check=_check_batch_dims)
def _gather_nd(node, consts):
    b = int(node.attrs.get("batch_dims", 0))

    def run(x, indices):
        if indices.dtype.kind not in "iu" or indices.ndim < 1:
            raise ValueError(f"indices must be an integer tensor of rank >= 1; got {indices.dtype} of "
                             f"shape {indices.shape}")
        k = indices.shape[-1]
        if b >= min(x.ndim, indices.ndim) or x.shape[:b] != indices.shape[:b]:
            raise ValueError(f"batch_dims={b}: the leading dimensions of data (shape {x.shape}) and indices "
                             f"(shape {indices.shape}) must match")
        if k > x.ndim - b:
            raise ValueError(f"indices' last dimension {k} is larger than the rank of data (shape {x.shape}) "
                             f"minus batch_dims={b}")
        nb = math.prod(x.shape[:b])
        m = math.prod(indices.shape[b:-1])
        _check_count(nb * m * math.prod(x.shape[b + k:]), "output")
        xd = x.reshape((nb,) + x.shape[b:])
        ii = indices.reshape(nb, m, k)
        if k == 0:
            res = np.broadcast_to(xd[:, None], (nb, m) + xd.shape[1:]).copy()
        else:
            res = xd[(np.arange(nb)[:, None],) + tuple(ii[..., j] for j in range(k))]
        return res.reshape(indices.shape[:-1] + x.shape[b + k:])
    return run


_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction_check(allowed):
    def check(node):
        r = _mode(node.attrs.get("reduction", "none"))
        return [] if r in allowed else [f"reduction {r!r} is not one of {sorted(allowed)}"]
    return check


_RED_16 = ("none", "add", "mul")
_RED_18 = ("none", "add", "mul", "max", "min")


def _scatter_into(out, idx, updates, red):
    if red == "none":
        out[idx] = updates
    else:
        _UFUNC[red].at(out, idx, updates)
    return out


@register_op("ScatterND", 11)
@register_op("ScatterND", 16, attrs={"reduction": "none"}, check=_reduction_check(_RED_16))
@register_op("ScatterND", 18, attrs={"reduction": "none"}, check=_reduction_check(_RED_18))
def _scatter_nd(node, consts):
    red = _mode(node.attrs.get("reduction", "none"))

    def run(x, indices, updates):
        if indices.dtype.kind not in "iu" or indices.ndim < 1:
            raise ValueError(f"indices must be an integer tensor of rank >= 1; got {indices.dtype} of "
                             f"shape {indices.shape}")
        k = indices.shape[-1]
        if k > x.ndim:
            raise ValueError(f"indices' last dimension {k} is larger than the rank of data (shape {x.shape})")
        want = indices.shape[:-1] + x.shape[k:]
        if updates.shape != want:
            raise ValueError(f"updates must have shape {want}; got {updates.shape}")
        idx = tuple(indices[..., j] for j in range(k))
        return _scatter_into(x.copy(), idx, updates, red)
    return run


@register_op("Scatter", 9, attrs={"axis": 0})
@register_op("ScatterElements", 11, attrs={"axis": 0})
@register_op("ScatterElements", 16, attrs={"axis": 0, "reduction": "none"}, check=_reduction_check(_RED_16))
@register_op("ScatterElements", 18, attrs={"axis": 0, "reduction": "none"}, check=_reduction_check(_RED_18))
def _scatter_elements(node, consts):
    axis = int(node.attrs["axis"])
    red = _mode(node.attrs.get("reduction", "none"))

    def run(x, indices, updates):
        if updates.shape != indices.shape:
            raise ValueError(f"updates (shape {updates.shape}) must have the shape of indices "
                             f"(shape {indices.shape})")
        return _scatter_into(x.copy(), _elements_index(x, indices, axis), updates, red)
    return run


# -- Expand / Tile / Pad / ConstantOfShape / Range / OneHot / NonZero ---------------------------
def _broadcast(a: tuple, b: list) -> list:
    # NumPy's rule, without np.broadcast_shapes' array machinery (several microseconds a call).
    if any(d < 0 for d in b):
        raise ValueError(f"shape {b} has a negative dimension")
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = [1] * (n - len(b)) + list(b)
    out = []
    for p, q in zip(a, b):
        if p != q and p != 1 and q != 1:
            raise ValueError(f"input shape {a} cannot be expanded to {b}")
        out.append(q if p == 1 else p)
    return out


@register_op("Expand", 8, shape_inputs=(1,))
def _expand(node, consts):
    def run(x, shape):
        s = _ints(shape, "shape")
        out = check_alloc(_broadcast(x.shape, s), "output")
        if out == x.shape:
            return x    # a no-op Expand: the input itself, as Identity would
        y = np.empty(out, x.dtype)
        y[...] = x
        return y
    return run


@register_op("Tile", 6, shape_inputs=(1,))
def _tile(node, consts):
    def run(x, repeats):
        r = _ints(repeats, "repeats")
        if len(r) != x.ndim:
            raise ValueError(f"repeats has {len(r)} entries for an input of rank {x.ndim}")
        if any(k < 0 for k in r):
            raise ValueError(f"repeats {r} has a negative entry")
        check_alloc([d * k for d, k in zip(x.shape, r)], "output")
        return np.tile(x, r)
    return run


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _check_pad(node):
    m = _mode(node.attrs["mode"])
    return [] if m in _PAD_MODES else [f"mode {m!r} is not one of {list(_PAD_MODES)}"]


def _pad_plan(shape, pads, axes):
    r = len(shape)
    if axes is None:
        axes = list(range(r))
    else:
        axes = [norm_axis(a, r, "axes") for a in axes]
        if len(set(axes)) != len(axes):
            raise ValueError(f"axes {axes} has repeated axes")
    n = len(axes)
    if len(pads) != 2 * n:
        raise ValueError(f"pads has {len(pads)} entries; expected {2 * n} (begin and end for each of "
                         f"{n} axes of an input of shape {tuple(shape)})")
    begin, end = [0] * r, [0] * r
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[n + i]
    out = [s + b + e for s, b, e in zip(shape, begin, end)]
    if any(d < 0 for d in out):
        raise ValueError(f"pads {pads} crop more than the input (shape {tuple(shape)}) holds")
    out = check_alloc(out, "output")
    # Negative pads crop first; the positive ones then pad what is left.
    crop = tuple(slice(max(-b, 0), s - max(-e, 0)) for s, b, e in zip(shape, begin, end))
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    dst = tuple(slice(w0, d - w1) for (w0, w1), d in zip(widths, out))
    return out, crop, widths, dst


def _pad_run(mode):
    def run(x, pads, value, axes):
        out, crop, widths, dst = _pad_plan(x.shape, pads, axes)
        if mode == "constant":
            y = np.full(out, value, x.dtype)
            y[dst] = x[crop]
            return y
        xc = x[crop]
        for d, (w, s) in enumerate(zip(widths, xc.shape)):
            if s == 0 and w != (0, 0):
                raise ValueError(f"mode {mode!r} cannot pad axis {d}, which is empty")
        return np.pad(xc, widths, mode=mode)
    return run


def _pad_value(v):
    if v is None:
        return 0
    a = np.asarray(v)
    if a.size > 1:
        raise ValueError(f"constant_value must be a scalar; got shape {a.shape}")
    return a.reshape(-1)[0] if a.size else 0


@register_op("Pad", 2, attrs={"pads": REQUIRED, "mode": "constant", "value": 0.0}, check=_check_pad)
def _pad_2(node, consts):
    f = _pad_run(_mode(node.attrs["mode"]))
    pads = [int(p) for p in node.attrs["pads"]]
    value = float(node.attrs["value"])
    return lambda x: f(x, pads, value, None)


def _pad_inputs(node, consts):
    f = _pad_run(_mode(node.attrs["mode"]))
    cp, ca = _const(consts, 1), _const(consts, 3)
    pads_c = None if cp is None else as_int_list(cp, "pads")
    axes_given = _given(node, 3)
    axes_c = None if ca is None else as_int_list(ca, "axes")

    def run(x, pads, constant_value=None, axes=None):
        p = pads_c if pads_c is not None else _ints(pads, "pads")
        a = axes_c if (axes_c is not None or not axes_given) else _ints(axes, "axes")
        return f(x, p, _pad_value(constant_value), a)
    return run


@register_op("Pad", 11, attrs={"mode": "constant"}, check=_check_pad, shape_inputs=(1,))
def _pad_11(node, consts):
    return _pad_inputs(node, consts)


@register_op("Pad", 18, attrs={"mode": "constant"}, check=_check_pad, shape_inputs=(1, 3))
def _pad_18(node, consts):
    return _pad_inputs(node, consts)


def _const_of_shape_value(node):
    v = node.attrs["value"]
    if v is None:
        return np.zeros((), np.float32)
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"value must hold exactly one element; got shape {a.shape}")
    if a.dtype.kind not in "fiub":
        raise ValueError(f"value of dtype {a.dtype} is not supported")
    return a.reshape(())


def _check_const_of_shape(node):
    try:
        _const_of_shape_value(node)
    except ValueError as e:
        return [str(e)]
    return []


@register_op("ConstantOfShape", 9, attrs={"value": None}, check=_check_const_of_shape, shape_inputs=(0,))
def _constant_of_shape(node, consts):
    v = _const_of_shape_value(node)

    def run(shape):
        s = check_alloc(_ints(shape, "input"), "output")
        return np.full(s, v, v.dtype)
    return run


def _scalar(v, what):
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar; got shape {a.shape}")
    return a.reshape(-1)[0]


def _check_range(node):
    st = int(node.attrs.get("stash_type", 1))
    return [] if st in (1, 11) else [f"stash_type={st} is not FLOAT (1) or DOUBLE (11)"]


@register_op("Range", 11, shape_inputs=(0, 1, 2))
@register_op("Range", 27, attrs={"stash_type": 1}, check=_check_range, shape_inputs=(0, 1, 2))
def _range(node, consts):
    # stash_type sets the precision float16 ranges are computed in; wider floats use float64.
    half_acc = np.float32 if int(node.attrs.get("stash_type", 1)) == 1 else np.float64

    def run(start, limit, delta):
        dt = np.asarray(start).dtype
        s, lim, d = (_scalar(v, w).item() for v, w in ((start, "start"), (limit, "limit"), (delta, "delta")))
        if d == 0:
            raise ValueError("delta must not be 0")
        if dt.kind in "iu":
            s, lim, d = int(s), int(lim), int(d)
            n = max(-((s - lim) // d), 0)
            check_alloc((n,), "output")
            return np.arange(s, lim, d, dtype=np.int64).astype(dt, copy=False)
        if not all(math.isfinite(float(t)) for t in (s, lim, d)):
            raise ValueError(f"start, limit and delta must be finite; got {s}, {lim}, {d}")
        n = max(math.ceil((float(lim) - float(s)) / float(d)), 0)
        check_alloc((n,), "output")
        acc = half_acc if dt.itemsize < 4 else np.float64
        return (np.arange(n, dtype=acc) * acc(d) + acc(s)).astype(dt)
    return run


@register_op("OneHot", 9, attrs={"axis": -1}, shape_inputs=(1,))
def _one_hot(node, consts):
    axis = int(node.attrs["axis"])

    def run(indices, depth, values):
        dv = _scalar(depth, "depth")
        if not np.isfinite(dv):
            raise ValueError(f"depth must be finite; got {dv}")
        dep = int(dv)
        if dep < 1:
            raise ValueError(f"depth must be at least 1; got {dep}")
        vals = np.asarray(values).reshape(-1)
        if vals.size != 2:
            raise ValueError(f"values must hold [off_value, on_value]; got {vals.size} elements")
        ind = np.asarray(indices)
        if ind.dtype.kind == "f":
            ind = ind.astype(np.int64)
        elif ind.dtype.kind not in "iu":
            raise ValueError(f"indices must be numeric; got {ind.dtype}")
        r = ind.ndim
        ax = axis + r + 1 if axis < 0 else axis
        if not 0 <= ax <= r:
            raise ValueError(f"axis {axis} is out of range for an output of rank {r + 1}")
        check_alloc(ind.shape[:ax] + (dep,) + ind.shape[ax:], "output")
        if ind.dtype.kind == "i":
            ind = np.where(ind < 0, ind + dep, ind)
        hot = np.expand_dims(ind, ax) == np.arange(dep).reshape((dep,) + (1,) * (r - ax))
        return np.where(hot, vals[1], vals[0]).astype(vals.dtype, copy=False)
    return run


@register_op("NonZero", 9, shape_inputs=(0,))
def _non_zero(node, consts):
    def run(x):
        if x.ndim == 0:
            # No coordinates per element: shape (0, count).
            return np.zeros((0, int(x != 0)), np.int64)
        return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)
    return run


# -- TopK / DepthToSpace / SpaceToDepth / Trilu / CumSum ----------------------------------------
def _topk(x, k, axis, largest):
    ax = norm_axis(axis, x.ndim)
    n = x.shape[ax]
    if not 0 <= k <= n:
        raise ValueError(f"k={k} is out of range for axis {axis} of size {n}")
    if largest:
        # Descending with ties in index order: a stable ascending sort of the reversed axis,
        # read backwards.
        o = np.argsort(np.flip(x, ax), axis=ax, kind="stable")
        o = (n - 1) - o[_axis_index(ax, slice(n - 1, n - 1 - k if k < n else None, -1))]
    else:
        o = np.argsort(x, axis=ax, kind="stable")[_axis_index(ax, slice(0, k))]
    o = np.ascontiguousarray(o, dtype=np.int64)
    return np.take_along_axis(x, o, axis=ax), o


def _check_topk_1(node):
    k = int(node.attrs["k"])
    return [f"k={k} must be non-negative"] if k < 0 else []


@register_op("TopK", 1, attrs={"axis": -1, "k": REQUIRED}, check=_check_topk_1)
def _topk_1(node, consts):
    axis, k = int(node.attrs["axis"]), int(node.attrs["k"])
    return lambda x: _topk(x, k, axis, True)


@register_op("TopK", 10, attrs={"axis": -1}, shape_inputs=(1,))
@register_op("TopK", 11, attrs={"axis": -1, "largest": 1, "sorted": 1}, shape_inputs=(1,))
def _topk_10(node, consts):
    axis = int(node.attrs["axis"])
    largest = bool(node.attrs.get("largest", 1))
    c = _const(consts, 1)
    kc = None if c is None else _scalar_int(c, "K")
    if kc is not None:
        return lambda x, K=None: _topk(x, kc, axis, largest)
    return lambda x, K: _topk(x, _scalar_int(K, "K"), axis, largest)


def _check_blocks(node):
    out = []
    b = int(node.attrs["blocksize"])
    if b < 1:
        out.append(f"blocksize={b} must be at least 1")
    if _mode(node.attrs.get("mode", "DCR")) not in ("DCR", "CRD"):
        out.append(f"mode {node.attrs['mode']!r} is not 'DCR' or 'CRD'")
    return out


@register_op("DepthToSpace", 1, attrs={"blocksize": REQUIRED}, check=_check_blocks)
@register_op("DepthToSpace", 11, attrs={"blocksize": REQUIRED, "mode": "DCR"}, check=_check_blocks)
def _depth_to_space(node, consts):
    b = int(node.attrs["blocksize"])
    crd = _mode(node.attrs.get("mode", "DCR")) == "CRD"

    def run(x):
        if x.ndim != 4:
            raise ValueError(f"input must be 4-D (N, C, H, W); got shape {x.shape}")
        n, c, h, w = x.shape
        if c % (b * b):
            raise ValueError(f"channels ({c}) must be a multiple of blocksize**2 ({b * b})")
        co = c // (b * b)
        if crd:
            y = x.reshape(n, co, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        else:
            y = x.reshape(n, b, b, co, h, w).transpose(0, 3, 4, 1, 5, 2)
        return y.reshape(n, co, h * b, w * b)
    return run


@register_op("SpaceToDepth", 1, attrs={"blocksize": REQUIRED}, check=_check_blocks)
@register_op("SpaceToDepth", 28, attrs={"blocksize": REQUIRED, "mode": "DCR"}, check=_check_blocks)
def _space_to_depth(node, consts):
    b = int(node.attrs["blocksize"])
    crd = _mode(node.attrs.get("mode", "DCR")) == "CRD"

    def run(x):
        if x.ndim != 4:
            raise ValueError(f"input must be 4-D (N, C, H, W); got shape {x.shape}")
        n, c, h, w = x.shape
        if h % b or w % b:
            raise ValueError(f"height and width ({h}, {w}) must be multiples of blocksize {b}")
        y = x.reshape(n, c, h // b, b, w // b, b).transpose((0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
        return y.reshape(n, c * b * b, h // b, w // b)
    return run


@register_op("Trilu", 14, attrs={"upper": 1})
def _trilu(node, consts):
    f = np.triu if int(node.attrs["upper"]) else np.tril
    c = _const(consts, 1)
    kc = 0 if c is None else _scalar_int(c, "k")
    dynamic = c is None and _given(node, 1)

    def run(x, k=None):
        if x.ndim < 2:
            raise ValueError(f"input must have rank >= 2; got shape {x.shape}")
        kk = _scalar_int(k, "k") if dynamic else kc
        # Clamp so that np.tri's arange cannot overflow on an int64 extreme.
        kk = max(-x.shape[-2] - 1, min(kk, x.shape[-1] + 1))
        return f(x, kk)
    return run


@register_op("CumSum", 11, attrs={"exclusive": 0, "reverse": 0})
def _cumsum(node, consts):
    exclusive = bool(node.attrs["exclusive"])
    reverse = bool(node.attrs["reverse"])
    c = _const(consts, 1)
    ac = None if c is None else _scalar_int(c, "axis")

    def run(x, axis):
        a = norm_axis(ac if ac is not None else _scalar_int(axis, "axis"), x.ndim)
        if reverse:
            x = np.flip(x, a)
        if exclusive:
            y = np.zeros(x.shape, x.dtype)
            n = x.shape[a]
            if n > 1:
                np.cumsum(x[_axis_index(a, slice(0, n - 1))], axis=a, dtype=x.dtype,
                          out=y[_axis_index(a, slice(1, n))])
        else:
            y = np.cumsum(x, axis=a, dtype=x.dtype)
        return np.ascontiguousarray(np.flip(y, a)) if reverse else y
    return run
