"""``edgepack bench graph``: the graph runtime's own overhead per node at batch 1.

A chain of ``--nodes`` tiny operators (Relu, Add of a constant, Mul of a constant on a (1, 16)
float32 tensor) runs through an imported :class:`edgepack.nn.Graph`; the same NumPy calls made
directly in a Python loop are the baseline.  ``(graph - loop) / nodes`` is what the compiled plan
adds per node (argument gathering, freeing, dispatch), the figure the README reports; onnxruntime
on the same graph is printed beside it for scale.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import best_time

__all__ = ["main", "chain_model"]


def chain_model(nodes: int):
    """An ONNX ModelProto: ``nodes`` Relu / Add / Mul steps on a (1, 16) input."""
    from onnx import TensorProto, helper, numpy_helper

    ns, inits = [], [numpy_helper.from_array(np.full(16, 0.5, np.float32), "c")]
    cur = "x"
    for i in range(nodes):
        op = ("Relu", "Add", "Mul")[i % 3]
        ins = [cur] if op == "Relu" else [cur, "c"]
        ns.append(helper.make_node(op, ins, [f"v{i}"], name=f"n{i}"))
        cur = f"v{i}"
    g = helper.make_graph(ns, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 16])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="edgepack bench graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.2)
    args = p.parse_args(argv)
    import edgepack
    from ..cli.bench_graph import cpu_model

    m = chain_model(args.nodes)
    g = edgepack.from_onnx(m)
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    c = np.full(16, 0.5, np.float32)
    zero = np.float32(0)
    fns = [(np.maximum, zero), (np.add, c), (np.multiply, c)]

    def loop():
        v = x
        for i in range(args.nodes):
            f, k = fns[i % 3]
            v = f(v, k)
        return v

    np.testing.assert_allclose(g(x), loop(), rtol=1e-6)
    feeds = {"x": x}
    t_graph = best_time(lambda: g.run(feeds), args.min_time, args.repeats)
    t_loop = best_time(loop, args.min_time, args.repeats)
    print(f"cpu: {cpu_model()}; {args.nodes} nodes of (1, 16) float32")
    print(f"  edgepack graph.run      {t_graph * 1e3:8.3f} ms  ({t_graph / args.nodes * 1e6:.2f} us/node)")
    print(f"  NumPy calls in a loop   {t_loop * 1e3:8.3f} ms  ({t_loop / args.nodes * 1e6:.2f} us/node)")
    print(f"  runtime overhead        {(t_graph - t_loop) * 1e3:8.3f} ms  "
          f"({(t_graph - t_loop) / args.nodes * 1e6:.2f} us/node)")
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        t_ort = best_time(lambda: s.run(None, feeds), args.min_time, args.repeats)
        print(f"  onnxruntime (1 thread)  {t_ort * 1e3:8.3f} ms  ({t_ort / args.nodes * 1e6:.2f} us/node)")
    except ImportError:
        pass
    return 0
