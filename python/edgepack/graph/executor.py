"""Compiling and running a :class:`~edgepack.graph.ir.Graph`.

A :class:`Program` is built once per graph: every node's operator maker is called once (attributes
filled, constant inputs bound), values get integer slots, and the graph is analysed for *shape
subgraphs*: values that depend only on constants and on the shapes of the inputs (Shape -> Gather
-> Unsqueeze -> Concat -> Reshape chains).  A :class:`Plan` is built once per input-shape
signature: the first call with a new signature runs every node, the shape subgraph's small results
are kept as constants of that plan, and what remains is a flat list of
``(run, input slots, output slots, slots to free)`` steps.  A call then checks the signature and
runs that list: no dictionaries of nodes are interpreted per call.

Plans are immutable and each call has its own slot list, so one graph may run in several threads.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
from collections import OrderedDict

import numpy as np

from .registry import fill_attrs, get_op

__all__ = ["Program", "Plan", "NodeError"]

_BAKE_MAX = 1 << 16      # elements: shape-subgraph results up to this size become plan constants
_MAX_PLANS = 32          # plans kept per graph (one per input-shape signature and output set)


class NodeError(ValueError):
    """A node failed while running; the message names it."""


def _decode_dtype(dt):
    return None if dt is None else np.dtype(dt)


@dataclasses.dataclass
class _Step:
    index: int            # node index in the graph
    fn: object
    ins: tuple
    outs: tuple


class Program:
    """A graph's nodes bound to their operator implementations (see the module docstring)."""

    def __init__(self, graph):
        self.graph = graph
        graph.check_ops()
        slot: dict[str, int] = {}

        def sid(name):
            if name not in slot:
                slot[name] = len(slot)
            return slot[name]

        self.input_slots = [sid(i["name"]) for i in graph.inputs]
        self.consts: dict[int, np.ndarray] = {sid(k): v for k, v in graph.params.items()}
        steps = []
        static_shape: dict[int, bool] = {s: True for s in self.input_slots}
        derived: dict[int, bool] = {s: False for s in self.input_slots}
        for s in self.consts:
            static_shape[s] = derived[s] = True
        self.derived_nodes: set[int] = set()
        for idx, n in enumerate(graph.nodes):
            d = get_op(n.op, n.domain, graph.opset)
            attrs, _ = fill_attrs(d, n.attrs)
            node = dataclasses.replace(n, attrs=attrs)
            ins = tuple(sid(v) if v else -1 for v in n.inputs)
            consts = [self.consts.get(s) if s >= 0 else None for s in ins]
            try:
                fn = d.make(node, consts)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, MemoryError) as e:
                # (a hostile attribute value, e.g. a huge axis, must not escape as anything else)
                raise ValueError(f"{n.label()}: {type(e).__name__}: {e}") from None
            outs = tuple(sid(v) if v else -1 for v in n.outputs)
            real_ins = [s for s in ins if s >= 0]
            if d.reads_shape_only:
                der = all(static_shape[s] for s in real_ins)
                st = True
            else:
                der = all(derived[s] for s in real_ins)
                st = all(static_shape[s] for s in real_ins) and all(
                    derived[ins[k]] for k in d.shape_inputs if k < len(ins) and ins[k] >= 0)
            if der and real_ins:
                self.derived_nodes.add(idx)
            for s in outs:
                if s >= 0:
                    static_shape[s] = st
                    derived[s] = der and bool(real_ins)
            steps.append(_Step(idx, fn, ins, outs))
        self.steps = steps
        self.slot = slot
        self.n_slots = len(slot)
        self.output_slots = tuple(slot[o] for o in graph.outputs)
        self._plans: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        spec = graph.inputs
        self._in_dtypes = [_decode_dtype(i["dtype"]) for i in spec]
        self._in_shapes = [i["shape"] for i in spec]

    # -- inputs ---------------------------------------------------------------------------------
    def _arrays(self, feeds: dict) -> list[np.ndarray]:
        names = self.graph.input_names
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing or extra:
            raise ValueError(f"graph inputs are {names}; missing {missing}, unexpected {extra}")
        arrays = []
        for name, dt, shape in zip(names, self._in_dtypes, self._in_shapes):
            a = feeds[name]
            if not isinstance(a, np.ndarray):
                a = np.asarray(a) if dt is None else np.asarray(a, dtype=dt if np.asarray(a).dtype.kind in "fiub"
                                                                else None)
            if dt is not None and a.dtype != dt:
                if a.dtype.kind == dt.kind or (a.dtype.kind in "iu" and dt.kind in "iu") or (
                        a.dtype.kind == "b" and dt.kind in "iu"):
                    a = a.astype(dt)
                elif a.dtype.kind in "iub" and dt.kind == "f":
                    a = a.astype(dt)
                else:
                    raise TypeError(f"graph input {name!r} must be {dt}; got {a.dtype}")
            if shape is not None:
                if a.ndim != len(shape):
                    raise ValueError(f"graph input {name!r} must have {len(shape)} dimensions {tuple(shape)}; "
                                     f"got shape {a.shape}")
                for ax, (want, got) in enumerate(zip(shape, a.shape)):
                    if isinstance(want, int) and want > 0 and want != got:
                        raise ValueError(f"graph input {name!r}: dimension {ax} must be {want}; got shape {a.shape}")
            arrays.append(a)
        return arrays

    # -- plans ----------------------------------------------------------------------------------
    def run(self, feeds: dict, outputs: tuple | None = None) -> dict[str, np.ndarray]:
        arrays = self._arrays(feeds)
        if outputs is None:
            out_names = self.graph.outputs
            out_slots = self.output_slots
        else:
            out_names = list(outputs)
            try:
                out_slots = tuple(self.slot[o] for o in out_names)
            except KeyError as e:
                raise ValueError(f"outputs: no value named {e.args[0]!r} in the graph") from None
        key = (tuple((a.shape, a.dtype.char) for a in arrays), out_slots)
        plan = self._plans.get(key)
        if plan is None:
            vals, plan = self._first_run(arrays, out_slots)
            with self._lock:
                self._plans[key] = plan
                while len(self._plans) > _MAX_PLANS:
                    self._plans.popitem(last=False)
        else:
            vals = plan.execute(arrays)
        return {n: self._own(v, s, plan) for n, v, s in zip(out_names, vals, out_slots)}

    @staticmethod
    def _own(v, s, plan):
        # An output that is a constant of the plan must not be handed out: the caller could write
        # into it and change every later call.
        if s in plan.consts and isinstance(v, np.ndarray):
            return v.copy()
        return v

    def plan_for(self, feeds: dict, outputs: tuple | None = None) -> "Plan":
        """The compiled plan for these inputs (compiling it if needed): for profiling."""
        self.run(feeds, outputs)
        arrays = self._arrays(feeds)
        out_slots = self.output_slots if outputs is None else tuple(self.slot[o] for o in outputs)
        return self._plans[(tuple((a.shape, a.dtype.char) for a in arrays), out_slots)]

    def _first_run(self, arrays, out_slots):
        vals: list = [None] * self.n_slots
        for s, a in self.consts.items():
            vals[s] = a
        for s, a in zip(self.input_slots, arrays):
            vals[s] = a
        needed = self._needed(out_slots, set(self.consts))
        baked: dict[int, np.ndarray] = dict(self.consts)
        keep_steps = []
        run = [st for st in self.steps if st.index in needed]
        # Values are freed after their last use here too: this run sees a new input shape, and a
        # large batch through a large graph must not hold every intermediate at once.
        last: dict[int, int] = {}
        for k, st in enumerate(run):
            for s in st.ins:
                if s >= 0:
                    last[s] = k
        keep = set(self.consts) | set(out_slots) | set(self.input_slots)
        frees: list[list[int]] = [[] for _ in run]
        for s, k in last.items():
            if s not in keep:
                frees[k].append(s)
        for k, st in enumerate(run):
            res = _call(st, vals, self.graph)
            for s in frees[k]:
                if s not in baked:
                    vals[s] = None
            if st.index in self.derived_nodes and all(
                    s < 0 or (isinstance(r, np.ndarray) and r.size <= _BAKE_MAX) for s, r in zip(st.outs, res)):
                for s, r in zip(st.outs, res):
                    if s >= 0:
                        baked[s] = r
            else:
                keep_steps.append(st)
        result = [vals[s] for s in out_slots]
        plan = Plan(self, keep_steps, baked, out_slots)
        return result, plan

    def _needed(self, out_slots, const_slots) -> set[int]:
        producer = {}
        for st in self.steps:
            for s in st.outs:
                if s >= 0:
                    producer[s] = st
        need: set[int] = set()
        stack = [s for s in out_slots]
        seen = set()
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            st = producer.get(s)
            if st is None or st.index in need:
                continue
            need.add(st.index)
            stack.extend(i for i in st.ins if i >= 0)
        return need


def _first_of(fn):
    def first(*args):
        r = fn(*args)
        return r[0] if isinstance(r, (tuple, list)) else r
    return first


def _call(st: _Step, vals: list, graph):
    try:
        r = st.fn(*[vals[i] if i >= 0 else None for i in st.ins])
    except NodeError:
        raise
    except MemoryError:
        raise NodeError(f"{graph.nodes[st.index].label()}: out of memory") from None
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError, AttributeError) as e:
        # AttributeError: an operator handed a value of a kind a malformed graph feeds it
        raise NodeError(f"{graph.nodes[st.index].label()}: {type(e).__name__}: {e}") from None
    if len(st.outs) == 1 and isinstance(r, (tuple, list)):
        # a multi-output operator (TopK, Split, ...) whose node names only its first output
        st.fn = _first_of(st.fn)
        r = r[0] if r else None
    res = (r,) if len(st.outs) == 1 else tuple(r)
    if len(res) < len(st.outs):
        res = res + (None,) * (len(st.outs) - len(res))
    for s, v in zip(st.outs, res):
        if s >= 0:
            vals[s] = v
    return res


class Plan:
    """The steps that run for one input-shape signature (constants of the shape subgraph baked)."""

    def __init__(self, program: Program, steps: list, consts: dict, out_slots: tuple):
        self.program = program
        self.consts = consts
        self.out_slots = out_slots
        # Steps still needed once the baked values are constants.
        producer = {s: st for st in steps for s in st.outs if s >= 0}
        need, stack = set(), list(out_slots)
        seen = set()
        while stack:
            s = stack.pop()
            if s in seen or s in consts:
                continue
            seen.add(s)
            st = producer.get(s)
            if st is None or id(st) in need:
                continue
            need.add(id(st))
            stack.extend(i for i in st.ins if i >= 0)
        steps = [st for st in steps if id(st) in need]
        # Free each value after its last use (never constants, graph inputs or outputs).
        last: dict[int, int] = {}
        for k, st in enumerate(steps):
            for s in st.ins:
                if s >= 0:
                    last[s] = k
        keep = set(consts) | set(out_slots) | set(program.input_slots)
        frees: list[list[int]] = [[] for _ in steps]
        for s, k in last.items():
            if s not in keep:
                frees[k].append(s)
        for k, st in enumerate(steps):
            for s in st.outs:   # outputs nobody reads
                if s >= 0 and s not in last and s not in keep:
                    frees[k].append(s)
        self.steps = steps
        # Absent optional inputs read a slot that always holds None, so every step's arguments come
        # from one C-level itemgetter call (the per-node cost at batch 1 is mostly this loop).
        none_slot = program.n_slots
        compiled = []
        for st, f in zip(steps, frees):
            ins = tuple(i if i >= 0 else none_slot for i in st.ins)
            get = operator.itemgetter(*ins) if ins else (lambda v: ())
            compiled.append((st.fn, get, len(ins) == 1, st.outs[0] if len(st.outs) == 1 else st.outs, tuple(f)))
        self._compiled = compiled
        base = [None] * (program.n_slots + 1)
        for s, a in consts.items():
            base[s] = a
        self._base = base

    def execute(self, arrays: list) -> list:
        vals = self._base.copy()
        for s, a in zip(self.program.input_slots, arrays):
            vals[s] = a
        try:
            for fn, get, one, outs, free in self._compiled:
                r = fn(get(vals)) if one else fn(*get(vals))
                if outs.__class__ is int:
                    vals[outs] = r
                else:
                    for s, v in zip(outs, r):
                        if s >= 0:
                            vals[s] = v
                for s in free:
                    vals[s] = None
        except NodeError:
            raise
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError, MemoryError,
                AttributeError):
            # Re-run step by step to name the node that failed (the fast loop has no bookkeeping).
            return self._execute_named(arrays)
        return [vals[s] for s in self.out_slots]

    def _execute_named(self, arrays):
        vals = self._base.copy()
        for s, a in zip(self.program.input_slots, arrays):
            vals[s] = a
        for st in self.steps:
            _call(st, vals, self.program.graph)
        return [vals[s] for s in self.out_slots]

    def profile(self, arrays: list, repeats: int = 10) -> list[tuple[int, float]]:
        """``[(node index, best seconds)]`` per step over ``repeats`` runs."""
        import time

        best = [float("inf")] * len(self.steps)
        for _ in range(repeats):
            vals = self._base.copy()
            for s, a in zip(self.program.input_slots, arrays):
                vals[s] = a
            for k, st in enumerate(self.steps):
                t = time.perf_counter()
                _call(st, vals, self.program.graph)
                best[k] = min(best[k], time.perf_counter() - t)
        return [(st.index, b) for st, b in zip(self.steps, best)]
