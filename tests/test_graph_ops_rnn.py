"""LSTM / GRU / RNN (edgepack.graph.ops.rnn) against ONNX Runtime on random graphs.

Tolerance (float32): ``atol=2e-5, rtol=1e-4``.  Both sides compute the same float32 formulas but
ONNX Runtime evaluates sigmoid and tanh with MLAS polynomial approximations (a few ulp) and sums
the gate matmuls in another order; the hidden state stays in [-1, 1] and the recurrences here are
short, so the differences measured on these graphs stay at or below 2e-6 (up to T=50, H=32): the
bound is ten times that.  float64 graphs are held to 1e-12.

ONNX Runtime runs layout 0 only: layout 1 graphs are compared with the same node at layout 0 on
transposed inputs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgepack.io.onnx import from_onnx  # noqa: E402

ATOL, RTOL = 2e-5, 1e-4
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _build(op, T=5, N=3, I=4, H=5, direction="forward", layout=0, B=True, seq=None, init=True, P=False,
           outs=("Y", "Y_h", "Y_c"), seed=0, dtype=np.float32, weights_as_inputs=False, **attrs):
    """A one-node model and its feeds (ONNX layout ``layout``)."""
    rng = np.random.default_rng(seed)
    G, D = _GATES[op], 2 if direction == "bidirectional" else 1
    et = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    consts = {"W": rng.normal(0, 0.5, (D, G * H, I)), "R": rng.normal(0, 0.5, (D, G * H, H))}
    if B:
        consts["B"] = rng.normal(0, 0.5, (D, 2 * G * H))
    if P:
        consts["P"] = rng.normal(0, 0.5, (D, 3 * H))
    consts = {k: v.astype(dtype) for k, v in consts.items()}
    feeds = {"X": rng.normal(0, 1, (T, N, I) if layout == 0 else (N, T, I)).astype(dtype)}
    if seq is not None:
        feeds["seq"] = np.asarray(seq, np.int32)
    if init:
        sh = (D, N, H) if layout == 0 else (N, D, H)
        feeds["h0"] = rng.normal(0, 1, sh).astype(dtype)
        if op == "LSTM":
            feeds["c0"] = rng.normal(0, 1, sh).astype(dtype)
    names = ["X", "W", "R", "B" if B else "", "seq" if seq is not None else "", "h0" if init else ""]
    if op == "LSTM":
        names += ["c0" if init else "", "P" if P else ""]
    while names[-1] == "":
        names.pop()
    if weights_as_inputs:
        feeds.update(consts)
        consts = {}
    gin = [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "seq" else et, v.shape) for k, v in feeds.items()]
    outs = [o if (o != "Y_c" or op == "LSTM") else "" for o in outs]
    while outs and not outs[-1]:
        outs.pop()
    node = helper.make_node(op, names, outs, hidden_size=H, direction=direction,
                            **({"layout": layout} if layout else {}), **attrs)
    g = helper.make_graph([node], "g", gin, [helper.make_tensor_value_info(o, et, None) for o in outs if o],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m, feeds


def _ort_run(m, feeds):
    """ONNX Runtime's outputs; a layout-1 node runs at layout 0 on transposed inputs."""
    node = m.graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if layout:
        m0 = onnx.ModelProto()
        m0.CopyFrom(m)
        n0 = m0.graph.node[0]
        for a in list(n0.attribute):
            if a.name == "layout":
                n0.attribute.remove(a)
        for vi in m0.graph.input:
            if vi.name in ("X", "h0", "c0"):
                d = vi.type.tensor_type.shape.dim
                d[0].dim_value, d[1].dim_value = d[1].dim_value, d[0].dim_value
        feeds = {k: (v.transpose(1, 0, 2).copy() if k in ("X", "h0", "c0") else v) for k, v in feeds.items()}
        m = m0
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in m.graph.output]
    res = dict(zip(names, s.run(names, feeds)))
    if layout:
        res = {k: (v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2)) for k, v in res.items()}
    return res


def _check(m, feeds, atol=ATOL, rtol=RTOL):
    want = _ort_run(m, feeds)
    g = from_onnx(m)
    before = {k: v.copy() for k, v in feeds.items()}
    got = g.run(feeds)
    for k, v in feeds.items():   # inputs are never written
        np.testing.assert_array_equal(v, before[k])
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, (name, got[name].shape, w.shape)
        np.testing.assert_allclose(got[name], w, atol=atol, rtol=rtol, err_msg=name)


_SEQS = {"none": None, "full": [5, 5, 5], "ragged": [5, 2, 0]}


@pytest.mark.parametrize("seq", list(_SEQS))
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_matches_onnxruntime(op, direction, layout, seq):
    _check(*_build(op, direction=direction, layout=layout, seq=_SEQS[seq]))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_no_bias_no_initial_state_and_partial_outputs(op):
    _check(*_build(op, B=False, init=False, direction="bidirectional"))
    _check(*_build(op, outs=("", "Y_h"), seq=[5, 3, 1], direction="reverse"))
    _check(*_build(op, outs=("Y",)))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes_clip_input_forget(direction):
    seq = [5, 4, 1]
    _check(*_build("LSTM", direction=direction, P=True, seq=seq))
    _check(*_build("LSTM", direction=direction, P=True, clip=0.6, seq=seq))
    _check(*_build("LSTM", direction=direction, clip=0.6))
    _check(*_build("LSTM", direction=direction, P=True, input_forget=1, seq=seq))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_gru_linear_before_reset(direction):
    _check(*_build("GRU", direction=direction, linear_before_reset=1, seq=[5, 3, 0]))
    _check(*_build("GRU", direction=direction, linear_before_reset=1, clip=0.5))


@pytest.mark.parametrize("op,acts,alpha,beta,direction", [
    ("LSTM", ["HardSigmoid", "LeakyRelu", "Softsign"], [0.3, 0.05], [0.4], "forward"),
    ("LSTM", ["HardSigmoid", "Elu", "Softplus", "Sigmoid", "Tanh", "Relu"], [0.3, 0.7], [0.4], "bidirectional"),
    ("LSTM", ["Sigmoid", "ScaledTanh", "Affine"], [0.9, 0.5], [1.5, 0.1], "forward"),
    ("LSTM", ["sigmoid", "tanh", "tanh"], None, None, "bidirectional"),          # case-insensitive, one set for both
    ("GRU", ["HardSigmoid", "ThresholdedRelu"], [0.25, 0.1], [0.5], "forward"),
    ("GRU", ["Sigmoid", "Relu"], None, None, "reverse"),
    ("RNN", ["Relu"], None, None, "forward"),
    ("RNN", ["LeakyRelu"], None, None, "forward"),                               # default alpha 0.01
    ("RNN", ["HardSigmoid"], None, None, "forward"),                             # defaults 0.2, 0.5
    ("RNN", ["Tanh", "Relu"], None, None, "bidirectional"),
])
def test_activations(op, acts, alpha, beta, direction):
    attrs = {"activations": acts}
    if alpha is not None:
        attrs["activation_alpha"] = alpha
    if beta is not None:
        attrs["activation_beta"] = beta
    if op == "LSTM" and len(acts) == 3 and direction == "bidirectional":
        # ONNX Runtime wants one set per direction; edgepack also takes one set for both
        m, f = _build(op, direction=direction, seq=[5, 2, 3], **attrs)
        m2, _ = _build(op, direction=direction, seq=[5, 2, 3], **{**attrs, "activations": acts * 2})
        got = from_onnx(m).run(f)
        want = _ort_run(m2, f)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, atol=ATOL, rtol=RTOL)
        return
    _check(*_build(op, direction=direction, seq=[5, 2, 3], **attrs))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_float64(op):
    # ONNX Runtime runs float32 only: float64 against the ONNX reference (which ignores
    # sequence_lens, so none here)
    from onnx.reference import ReferenceEvaluator

    m, f = _build(op, direction="bidirectional", dtype=np.float64)
    got = from_onnx(m).run(f)
    names = [o.name for o in m.graph.output]
    for k, w in zip(names, ReferenceEvaluator(m).run(None, f)):
        assert got[k].dtype == np.float64
        np.testing.assert_allclose(got[k], w, atol=1e-12, rtol=1e-12, err_msg=k)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_weights_fed_at_run_time(op):
    _check(*_build(op, direction="bidirectional", seq=[5, 3, 2], weights_as_inputs=True))


def test_longer_sequences():
    _check(*_build("LSTM", T=50, N=4, I=16, H=32, direction="bidirectional", seq=[50, 3, 5, 49], P=True))
    _check(*_build("GRU", T=50, N=4, I=16, H=32, direction="bidirectional", seq=[50, 3, 5, 49],
                   linear_before_reset=1))


@pytest.mark.parametrize("attrs,match", [
    ({"activations": ["Gelu", "Tanh", "Tanh"]}, "activation 'Gelu' is not supported"),
    ({"activations": ["Sigmoid", "Affine", "Tanh"]}, "Affine needs its activation_alpha"),
    ({"activations": ["Sigmoid", "Tanh"]}, "activations must name 3 functions"),
    ({"clip": -1.0}, "clip must be positive"),
])
def test_rejected_at_import(attrs, match):
    m, _ = _build("LSTM", **attrs)
    with pytest.raises(ValueError, match=match):
        from_onnx(m)


def test_bad_inputs_name_the_argument():
    m, f = _build("LSTM", seq=[5, 2, 9])
    with pytest.raises(ValueError, match="sequence_lens must be in"):
        from_onnx(m).run(f)
    m, f = _build("GRU")
    m.graph.input[1].type.tensor_type.ClearField("shape")   # h0 of any shape reaches the operator
    g = from_onnx(m)
    f["h0"] = f["h0"][:, :2]
    with pytest.raises(ValueError, match="initial_h must have shape"):
        g.run(f)


_SILERO = "/work/models/x_silero_vad/silero_vad/data/"


@pytest.mark.parametrize("name,feeds", [
    # convolutions, then an LSTM (hidden 128) over 20 frames, its state fed in and out
    ("silero_vad_16k_sequence.onnx", lambda r, st: {"input": r.normal(0, 0.1, (20, 576)).astype(np.float32),
                                                     "h": st[0], "c": st[1]}),
    # one frame per call, h and c stacked in one "state" input (Slice/Concat around the LSTM)
    ("silero_vad_openvino_16k.onnx", lambda r, st: {"input": r.normal(0, 0.1, (1, 576)).astype(np.float32),
                                                     "state": np.concatenate(st, axis=0)}),
])
def test_silero_vad_matches_onnxruntime(name, feeds):
    path = _SILERO + name
    if not os.path.exists(path):
        pytest.skip(f"{name} not present")
    g = from_onnx(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    rng = np.random.default_rng(0)
    state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))
    for _ in range(3):   # carry the state across calls, as streaming VAD does
        f = feeds(rng, state)
        want = dict(zip(names, s.run(names, f)))
        got = g.run(f)
        for k in names:
            # whole model: convolutions summed in another order feed the LSTM; measured <= 3e-6
            np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=1e-4, err_msg=k)
        st = want[names[1]] if len(names) == 2 else np.concatenate([want[names[1]], want[names[2]]])
        state = (st[:1], st[1:])
