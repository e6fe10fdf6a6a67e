"""Recurrent operators: LSTM, GRU, RNN (opsets 7 and 14; 22 only widened the types).

Supported: direction forward, reverse and bidirectional; optional inputs B, sequence_lens,
initial_h, initial_c and P (peepholes); layout 0 and 1 (opset 14); ``clip``; LSTM
``input_forget``; GRU ``linear_before_reset``; any of the outputs Y, Y_h, Y_c left out.
``activations`` may name Relu, Tanh, Sigmoid, HardSigmoid, Affine, LeakyRelu, ThresholdedRelu,
ScaledTanh, Elu, Softsign and Softplus (case-insensitive).  ``activation_alpha``/``beta`` are
consumed in order by the activations that take them, as ONNX Runtime does; LeakyRelu,
HardSigmoid and Elu fall back to their operators' defaults (0.01; 0.2, 0.5; 1.0), while Affine,
ScaledTanh and ThresholdedRelu must be given theirs (the ONNX text says "the operators'
defaults", ONNX Runtime uses 0: refusing beats guessing).  float32 and float64 run in their own
type; float16 runs in float32 and is cast back.

How it runs: the weights are split and transposed once when the graph is compiled; each call
projects the inputs of every time step and both directions in one matmul (``X @ W^T`` plus the
input-side biases), then runs the recurrence with one batched ``H @ R^T`` per step for both
directions together (two for GRU with ``linear_before_reset=0``, whose candidate gate needs the
reset gate first) and in-place NumPy updates.

``sequence_lens``: for a batch entry of length ``L``, time steps ``t >= L`` give zeros in Y and
leave its state alone, so Y_h/Y_c hold the state after its last valid step; the reverse direction
runs over ``t = L-1 .. 0`` (each sequence reversed within its own length).  A length of 0 gives
zeros in Y, Y_h and Y_c (as ONNX Runtime does; the ONNX text leaves it open).
"""

from __future__ import annotations

import numpy as np

from ..registry import register_op

_F32 = np.dtype(np.float32)

# ---------------------------------------------------------------------------------------------
# activations: each works in place on a float array view
# ---------------------------------------------------------------------------------------------


def _sigmoid(v, a, b):
    # tanh form: no overflow warnings for large |x| (as nn.functional.sigmoid)
    v *= v.dtype.type(0.5)
    np.tanh(v, out=v)
    v *= v.dtype.type(0.5)
    v += v.dtype.type(0.5)


def _tanh(v, a, b):
    np.tanh(v, out=v)


def _relu(v, a, b):
    np.maximum(v, 0, out=v)


def _affine(v, a, b):
    v *= v.dtype.type(a)
    v += v.dtype.type(b)


def _leaky_relu(v, a, b):
    np.copyto(v, v * v.dtype.type(a), where=v < 0)


def _thresholded_relu(v, a, b):
    np.copyto(v, 0, where=v <= a)


def _scaled_tanh(v, a, b):
    v *= v.dtype.type(b)
    np.tanh(v, out=v)
    v *= v.dtype.type(a)


def _hard_sigmoid(v, a, b):
    v *= v.dtype.type(a)
    v += v.dtype.type(b)
    np.clip(v, 0, 1, out=v)


def _elu(v, a, b):
    neg = v < 0
    np.copyto(v, np.expm1(np.minimum(v, 0)) * v.dtype.type(a), where=neg)


def _softsign(v, a, b):
    v /= np.abs(v) + 1


def _softplus(v, a, b):
    np.logaddexp(0, v, out=v)


# lower-case name -> (function, takes alpha, takes beta, default alpha, default beta); a default
# of None means the value must be given (see the module docstring)
_ACTIVATIONS = {
    "sigmoid": (_sigmoid, False, False, 0.0, 0.0),
    "tanh": (_tanh, False, False, 0.0, 0.0),
    "relu": (_relu, False, False, 0.0, 0.0),
    "affine": (_affine, True, True, None, None),
    "leakyrelu": (_leaky_relu, True, False, 0.01, 0.0),
    "thresholdedrelu": (_thresholded_relu, True, False, None, 0.0),
    "scaledtanh": (_scaled_tanh, True, True, None, None),
    "hardsigmoid": (_hard_sigmoid, True, True, 0.2, 0.5),
    "elu": (_elu, True, False, 1.0, 0.0),
    "softsign": (_softsign, False, False, 0.0, 0.0),
    "softplus": (_softplus, False, False, 0.0, 0.0),
}

# op -> (gates, activation defaults per direction)
_OPS = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")), "RNN": (1, ("Tanh",))}


def _num_directions(direction) -> int:
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"direction must be 'forward', 'reverse' or 'bidirectional'; got {direction!r}")
    return 2 if direction == "bidirectional" else 1


def _activations(node):
    """[[(fn, alpha, beta), ...] per direction] (one entry per role: f, g, h)."""
    a = node.attrs
    d = _num_directions(a.get("direction", "forward"))
    defaults = _OPS[node.op][1]
    n = len(defaults)
    names = a.get("activations")
    if names is None:
        names = list(defaults) * d
    names = [str(s) for s in names]
    if len(names) == n and d == 2:
        names = names * 2           # one set given for both directions
    elif node.op == "RNN" and d == 1 and len(names) == 2 and names == ["Tanh", "Tanh"]:
        names = names[:1]           # RNN's schema default lists two
    if len(names) != n * d:
        raise ValueError(f"activations must name {n * d} functions ({n} per direction); got {names}")
    alphas = [float(v) for v in (a.get("activation_alpha") or [])]
    betas = [float(v) for v in (a.get("activation_beta") or [])]
    out = []
    for name in names:
        spec = _ACTIVATIONS.get(name.lower())
        if spec is None:
            raise ValueError(f"activation {name!r} is not supported (supported: Relu, Tanh, Sigmoid, HardSigmoid, "
                             "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, Elu, Softsign, Softplus)")
        fn, ta, tb, da, db = spec
        al, be = 0.0, 0.0
        if ta:
            al = alphas.pop(0) if alphas else da
        if tb:
            be = betas.pop(0) if betas else db
        if al is None or be is None:
            raise ValueError(f"activation {name} needs its activation_alpha/activation_beta given (ONNX and ONNX "
                             "Runtime disagree on their defaults)")
        out.append((fn, al, be))
    return [out[i * n:(i + 1) * n] for i in range(d)]


def _check(node):
    a = node.attrs
    bad = []
    try:
        _activations(node)
    except ValueError as e:
        bad.append(str(e))
    if a.get("layout", 0) not in (0, 1):
        bad.append(f"layout must be 0 or 1; got {a['layout']}")
    hs = a.get("hidden_size")
    if hs is not None and int(hs) < 1:
        bad.append(f"hidden_size must be positive; got {hs}")
    c = a.get("clip")
    if c is not None and not float(c) > 0:
        bad.append(f"clip must be positive; got {c}")
    if a.get("input_forget", 0) not in (0, 1):
        bad.append(f"input_forget must be 0 or 1; got {a['input_forget']}")
    if a.get("linear_before_reset", 0) not in (0, 1):
        bad.append(f"linear_before_reset must be 0 or 1; got {a['linear_before_reset']}")
    return bad


class _Acts:
    """The activation of one role (f, g or h) for every direction; applied once on the stacked
    [D, ...] array when the directions agree, else direction by direction."""

    def __init__(self, per_dir):
        self.per_dir = per_dir
        self.shared = all(p == per_dir[0] for p in per_dir)

    def __call__(self, v):
        if self.shared:
            fn, a, b = self.per_dir[0]
            fn(v, a, b)
        else:
            for d, (fn, a, b) in enumerate(self.per_dir):
                fn(v[d], a, b)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------


class _Weights:
    """W, R, B (and P) split and transposed for one compute dtype."""

    def __init__(self, op, W, R, B, P, d, hidden, lbr, ct):
        g = _OPS[op][0]
        W = np.asarray(W)
        R = np.asarray(R)
        if W.ndim != 3 or W.shape[0] != d or W.shape[1] != g * hidden:
            raise ValueError(f"W must have shape [{d}, {g * hidden}, input_size]; got {W.shape}")
        if R.shape != (d, g * hidden, hidden):
            raise ValueError(f"R must have shape [{d}, {g * hidden}, {hidden}]; got {R.shape}")
        self.input_size = W.shape[2]
        gh = g * hidden
        # all directions' input projections in one matrix: [I, D*G*H]
        self.wt = np.ascontiguousarray(W.astype(ct).transpose(2, 0, 1).reshape(W.shape[2], d * gh))
        rt = np.ascontiguousarray(R.astype(ct).transpose(0, 2, 1))        # [D, H, G*H]
        if B is None:
            wb = np.zeros((d, gh), ct)
            rb = np.zeros((d, gh), ct)
        else:
            B = np.asarray(B)
            if B.shape != (d, 2 * gh):
                raise ValueError(f"B must have shape [{d}, {2 * gh}]; got {B.shape}")
            wb, rb = B[:, :gh].astype(ct), B[:, gh:].astype(ct)
        self.rb_h = None
        if op == "GRU":
            bias = wb.copy()
            bias[:, :2 * hidden] += rb[:, :2 * hidden]
            if lbr:
                self.rb_h = rb[:, None, 2 * hidden:].copy()               # [D, 1, H]
                self.rt = rt
            else:
                bias[:, 2 * hidden:] += rb[:, 2 * hidden:]
                self.rt_zr = np.ascontiguousarray(rt[:, :, :2 * hidden])
                self.rt_h = np.ascontiguousarray(rt[:, :, 2 * hidden:])
        else:
            bias = wb + rb
            self.rt = rt
        self.bias = bias.reshape(-1)
        self.p = None
        if P is not None:
            P = np.asarray(P)
            if P.shape != (d, 3 * hidden):
                raise ValueError(f"P must have shape [{d}, {3 * hidden}]; got {P.shape}")
            p = P.astype(ct)
            if p.any():
                # [D, 1, H] each, broadcasting over the batch
                self.p = tuple(np.ascontiguousarray(p[:, None, k * hidden:(k + 1) * hidden]) for k in range(3))


# ---------------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------------

_COMMON = {"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
           "direction": "forward", "hidden_size": None}


def _make(node, consts):
    op = node.op
    a = node.attrs
    d = _num_directions(a.get("direction", "forward"))
    reverse_only = a.get("direction") == "reverse"
    acts = _activations(node)
    roles = [_Acts([acts[k][r] for k in range(d)]) for r in range(len(acts[0]))]
    layout = int(a.get("layout", 0))
    clip = a.get("clip")
    clip = None if clip is None else float(clip)
    input_forget = bool(a.get("input_forget", 0))
    lbr = bool(a.get("linear_before_reset", 0))
    gates = _OPS[op][0]
    hs_attr = a.get("hidden_size")
    outs = list(node.outputs)
    want = [bool(outs[k]) if k < len(outs) else False for k in range(3)]
    n_out = len(outs)
    # input positions: X W R B sequence_lens initial_h [initial_c P]
    consts = list(consts) + [None] * (8 - len(consts))
    present = [k < len(node.inputs) and bool(node.inputs[k]) for k in range(8)]
    const_w = consts[1] is not None and consts[2] is not None and (not present[3] or consts[3] is not None) and (
        op != "LSTM" or not present[7] or consts[7] is not None)
    cache: dict = {}

    def hidden_of(R):
        hs = int(np.asarray(R).shape[-1])
        if hs_attr is not None and int(hs_attr) != hs:
            raise ValueError(f"hidden_size is {hs_attr} but R has shape {np.shape(R)}")
        return hs

    def weights(ct, W, R, B, P):
        if const_w:
            w = cache.get(ct)
            if w is None:
                w = cache[ct] = _Weights(op, consts[1], consts[2], consts[3], consts[7] if op == "LSTM" else None,
                                         d, hidden_of(consts[2]), lbr, ct)
            return w
        return _Weights(op, W, R, B, P, d, hidden_of(R), lbr, ct)

    if const_w:
        weights(_F32, None, None, None, None)   # validate shapes at import, prepare float32

    def run(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None):
        if X.dtype.kind != "f":
            raise ValueError(f"X must be a float tensor; got {X.dtype}")
        if X.ndim != 3:
            raise ValueError(f"X must be 3-D ([seq, batch, input] for layout 0, [batch, seq, input] for layout 1); "
                             f"got shape {X.shape}")
        ct = np.dtype(np.float64) if X.dtype == np.float64 else _F32
        w = weights(ct, W, R, B, P)
        hidden = hidden_of(consts[2] if const_w else R)
        x = X if layout == 0 else X.transpose(1, 0, 2)
        T, N, I = x.shape
        if I != w.input_size:
            raise ValueError(f"X has {I} input features; W expects {w.input_size}")
        gh = gates * hidden

        def state(v, what):
            if v is None:
                return np.zeros((d, N, hidden), ct)
            v = np.asarray(v)
            if layout:
                v = v.transpose(1, 0, 2)
            if v.shape != (d, N, hidden):
                want_shape = (N, d, hidden) if layout else (d, N, hidden)
                raise ValueError(f"{what} must have shape {want_shape} (layout {layout}); got "
                                 f"{np.shape(initial_h if what == 'initial_h' else initial_c)}")
            return v.astype(ct)   # a copy: the recurrence never writes into an input

        h = state(initial_h, "initial_h")
        c = state(initial_c, "initial_c") if op == "LSTM" else None

        # masks for sequence_lens: valid[s, d, n] says whether step s of direction d updates n
        masks = None
        empty = None
        if sequence_lens is not None:
            lens = np.asarray(sequence_lens)
            if lens.dtype.kind not in "iu" or lens.shape != (N,):
                raise ValueError(f"sequence_lens must be an integer tensor of shape ({N},); got {lens.dtype} "
                                 f"{lens.shape}")
            if lens.size and (lens.min() < 0 or lens.max() > T):
                raise ValueError(f"sequence_lens must be in [0, {T}] (the sequence length); got "
                                 f"{lens.min()}..{lens.max()}")
            if (lens != T).any():
                steps = np.arange(T)[:, None]
                fwd = steps < lens[None, :]                      # [T, N]
                rev = fwd[::-1]                                  # step s runs t = T-1-s
                per_dir = [rev if (reverse_only or k == 1) else fwd for k in range(d)]
                masks = np.stack(per_dir, axis=1)[..., None]     # [T, D, N, 1]
                full = masks.all(axis=(1, 2, 3))
                if (lens == 0).any():
                    empty = lens == 0

        # input projections of all steps and directions: [T, N, D, G*H]
        xw = x.reshape(T * N, I).astype(ct, copy=False) @ w.wt
        xw += w.bias
        xw = xw.reshape(T, N, d, gh)
        if d == 1:
            xs = xw.reshape(T, 1, N, gh) if not reverse_only else xw.reshape(T, 1, N, gh)[::-1]
        else:
            xs = np.empty((T, 2, N, gh), ct)
            xs[:, 0] = xw[:, :, 0]
            xs[:, 1] = xw[::-1, :, 1]
        del xw

        # where step s writes its hidden state: Y[t] directly for one direction, else a
        # per-step buffer whose reverse half is put in time order at the end
        y = np.empty((T, d, N, hidden), ct) if want[0] else None
        ping = None if want[0] else [np.empty((d, N, hidden), ct), np.empty((d, N, hidden), ct)]
        gbuf = np.empty((d, N, gh if not (op == "GRU" and not lbr) else 2 * hidden), ct)
        for s in range(T):
            if y is not None:
                dst = y[T - 1 - s] if reverse_only else y[s]
            else:
                dst = ping[s & 1]
            xt = xs[s]
            if op == "LSTM":
                c_new = _lstm_step(h, c, xt, w, gbuf, dst, roles, clip, input_forget, hidden)
            elif op == "GRU":
                _gru_step(h, xt, w, gbuf, dst, roles, clip, lbr, hidden)
            else:
                np.matmul(h, w.rt, out=dst)
                dst += xt
                if clip is not None:
                    np.clip(dst, -clip, clip, out=dst)
                roles[0](dst)
            if masks is not None and not full[s]:
                m = masks[s]
                h = np.where(m, dst, h)
                np.copyto(dst, 0, where=~m)
                if op == "LSTM":
                    c = np.where(m, c_new, c)
            else:
                h = dst
                if op == "LSTM":
                    c = c_new
        results = [None, None, None]
        for k, v in ((1, h), (2, c)):
            if want[k] and v is not None:
                v = np.array(v, dtype=X.dtype)   # a copy: h may be a view of y
                if empty is not None:
                    v[:, empty] = 0
                results[k] = np.ascontiguousarray(v if layout == 0 else v.transpose(1, 0, 2))
        if want[0]:
            if d == 2:
                y[:, 1] = y[::-1, 1].copy()   # the reverse direction's steps in time order
            yy = y if layout == 0 else y.transpose(2, 0, 1, 3)
            results[0] = np.ascontiguousarray(yy, dtype=X.dtype)
        return results[0] if n_out == 1 else tuple(results[:n_out])

    return run


def _lstm_step(h, c, xt, w, g, dst, roles, clip, input_forget, H):
    """One LSTM step for all directions ([D, N, *]); writes the new hidden state into ``dst`` and
    returns the new cell state.  Gate order i, o, f, c."""
    np.matmul(h, w.rt, out=g)
    g += xt
    f_act, g_act, h_act = roles
    i_g, o_g, f_g, c_g = g[..., :H], g[..., H:2 * H], g[..., 2 * H:3 * H], g[..., 3 * H:]
    if w.p is None:
        if clip is not None:
            np.clip(g, -clip, clip, out=g)
        f_act(g[..., :3 * H])        # i, o, f are adjacent: one pass
    else:
        pi, po, pf = w.p
        i_g += pi * c
        f_g += pf * c
        if clip is not None:
            np.clip(i_g, -clip, clip, out=i_g)
            np.clip(g[..., 2 * H:], -clip, clip, out=g[..., 2 * H:])
        f_act(i_g)
        f_act(f_g)
    g_act(c_g)
    if input_forget:
        np.subtract(1, i_g, out=f_g)   # coupled gates: f = 1 - i
    c_new = f_g * c
    c_g *= i_g
    c_new += c_g
    if w.p is not None:
        o_g += w.p[1] * c_new
        if clip is not None:
            np.clip(o_g, -clip, clip, out=o_g)
        f_act(o_g)
    np.copyto(dst, c_new)   # h = o * h_act(c), built in place in dst
    h_act(dst)
    dst *= o_g
    return c_new


def _gru_step(h, xt, w, g, dst, roles, clip, lbr, H):
    """One GRU step for all directions; writes the new hidden state into ``dst``.  Gate order
    z, r, h."""
    f_act, g_act = roles
    if lbr:
        np.matmul(h, w.rt, out=g)                 # [D, N, 3H]: z, r and the candidate's R h
        zr = g[..., :2 * H]
        zr += xt[..., :2 * H]
        hh = g[..., 2 * H:]
        hh += w.rb_h
    else:
        np.matmul(h, w.rt_zr, out=g)              # [D, N, 2H]
        zr = g
        zr += xt[..., :2 * H]
    if clip is not None:
        np.clip(zr, -clip, clip, out=zr)
    f_act(zr)
    z, r = zr[..., :H], zr[..., H:]
    if lbr:
        hh *= r
        hh += xt[..., 2 * H:]
    else:
        hh = np.matmul(r * h, w.rt_h)
        hh += xt[..., 2 * H:]
    if clip is not None:
        np.clip(hh, -clip, clip, out=hh)
    g_act(hh)
    # h' = (1 - z) * hh + z * h  ==  hh + z * (h - hh)
    t = h - hh
    t *= z
    np.add(hh, t, out=dst)


register_op("LSTM", 7, attrs={**_COMMON, "input_forget": 0}, check=_check)(_make)
register_op("LSTM", 14, attrs={**_COMMON, "input_forget": 0, "layout": 0}, check=_check)(_make)
register_op("GRU", 7, attrs={**_COMMON, "linear_before_reset": 0}, check=_check)(_make)
register_op("GRU", 14, attrs={**_COMMON, "linear_before_reset": 0, "layout": 0}, check=_check)(_make)
register_op("RNN", 7, attrs={**_COMMON, "activations": ["Tanh", "Tanh"]}, check=_check)(_make)
register_op("RNN", 14, attrs={**_COMMON, "activations": ["Tanh", "Tanh"], "layout": 0}, check=_check)(_make)
