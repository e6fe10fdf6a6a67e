"""Sources and sinks: where shards come from and where their outputs are committed.

A source lists its shard files and reads one shard as ``(ids, rows, bad)``; a sink names, writes
and reads back one output file per shard.  Both are small frozen dataclasses of strings and
numbers: they cross to the workers inside a task (a few hundred bytes), never the data.

Commit protocol (what makes the output exactly-once): a shard's files are written under
``.tmp-*`` names in the output directory, flushed with fsync and renamed into place with
``os.replace`` (atomic on POSIX within a directory); the output file is renamed last, so its
existence is the shard's commit.  The kernels give the same bits at any thread count and batch
split, so a retried or duplicated shard writes the same bytes under the same name.
"""

from __future__ import annotations

import glob as _glob
import json
import os
import re
import uuid
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ParquetSource", "NpySource", "ParquetSink", "NpySink", "Rows", "require"]

TMP_PREFIX = ".tmp-"
# part-000003-1a2b3c4d.parquet, part-000003-1a2b3c4d.npy, .ids.npy, .errors.jsonl
PART_RE = re.compile(r"^part-(\d{6,})-([0-9a-f]{8})(\.parquet|\.npy|\.ids\.npy|\.errors\.jsonl)$")


def require(module: str, extra: str, what: str):
    """Import an optional dependency or raise ModuleNotFoundError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(f"{what} needs the '{module.split('.')[0]}' package, which is not "
                                  f"installed: pip install 'edgepack[{extra}]'") from None


def _pq():
    require("pyarrow", "batch", "Parquet shards")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


@dataclass
class Rows:
    """One shard as read by a source.

    ``ids``: ndarray [n] (int64 or str); ``data``: list of n str (text) or ndarray [n, ...]
    (numbers); ``bad``: {row: reason} for rows that cannot be model input (null, wrong length,
    undecodable text); their ``data`` entry is a placeholder.
    """

    ids: np.ndarray
    data: object
    bad: dict = field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        return isinstance(self.data, list)


def _expand(pattern, what: str) -> list[str]:
    pats = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    if not pats:
        raise ValueError(f"{what}: path must be a glob pattern or a list of files; got an empty list")
    files = []
    for p in pats:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{what}: path must be a str glob pattern or a list of paths; got {type(p).__name__}")
        p = os.fspath(p)
        hits = sorted(_glob.glob(p)) if _glob.has_magic(p) else ([p] if os.path.exists(p) else [])
        if not hits:
            raise FileNotFoundError(f"{what}: no file matches {p!r}")
        files += hits
    out = []
    for f in files:
        if not os.path.isfile(f):
            raise ValueError(f"{what}: {f!r} is not a file")
        out.append(os.path.abspath(f))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: a file is listed twice (shards must be distinct files)")
    return out


# ------------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class ParquetSource:
    """Parquet shards: one file = one shard.

    Parameters
    ----------
    path : str glob pattern or list of paths
        e.g. ``"data/*.parquet"``; files are taken in sorted order.
    column : str
        The model input: a string column (text, for a SentenceEncoder) or a list / fixed-size-list
        column of numbers (each row one sample, float32 or int64 after reading).
    id_column : str or None
        Row identifiers (int or string), copied to the output.  None: the global row number
        (int64, shards in order), which changes if files are added.
    shape : tuple of int, optional
        Per-row sample shape for list columns (e.g. ``(1, 8, 8)``); default ``(list_length,)``.
    """

    path: object
    column: str = "text"
    id_column: str | None = "id"
    shape: tuple | None = None

    kind = "parquet"

    def files(self) -> list[str]:
        return _expand(self.path, "ParquetSource")

    def count_rows(self, path: str) -> int:
        _, pq = _pq()
        return pq.ParquetFile(path).metadata.num_rows

    def spec(self) -> dict:
        return {"kind": "parquet", "column": self.column, "id_column": self.id_column,
                "shape": list(self.shape) if self.shape else None}

    def read_ids(self, path: str, first_row: int, rows: int) -> np.ndarray:
        if self.id_column is None:
            return np.arange(first_row, first_row + rows, dtype=np.int64)
        _, pq = _pq()
        t = pq.read_table(path, columns=[self.id_column])
        return _ids_array(t.column(self.id_column), path, self.id_column)

    def read(self, path: str, first_row: int, rows: int) -> Rows:
        return read_parquet_rows(path, self.spec(), first_row)


def _ids_array(col, path, name) -> np.ndarray:
    import pyarrow as pa

    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if col.null_count:
        raise ValueError(f"{path}: id column {name!r} has {col.null_count} null ids; ids must all be set")
    t = col.type
    if pa.types.is_integer(t):
        return col.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.asarray(col.to_pylist(), dtype=str)
    raise TypeError(f"{path}: id column {name!r} must hold integers or strings; got {t}")


def read_parquet_rows(path: str, spec: dict, first_row: int) -> Rows:
    """Read one Parquet shard per a ParquetSource spec (runs in the worker)."""
    pa, pq = _pq()
    column, id_column = spec["column"], spec["id_column"]
    names = pq.ParquetFile(path).schema_arrow.names
    want = [column] + ([id_column] if id_column is not None else [])
    for c in want:
        if c not in names:
            raise ValueError(f"{path}: column {c!r} not found; the file has columns {names}")
    table = pq.read_table(path, columns=want)
    n = table.num_rows
    ids = (np.arange(first_row, first_row + n, dtype=np.int64) if id_column is None
           else _ids_array(table.column(id_column), path, id_column))
    col = table.column(column).combine_chunks()
    t = col.type
    bad: dict = {}
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            data = col.to_pylist()
        except UnicodeDecodeError:
            # invalid UTF-8 in some rows: find them one by one (only on this error path)
            data = []
            for i in range(n):
                try:
                    data.append(col[i].as_py())
                except UnicodeDecodeError as e:
                    data.append("")
                    bad[i] = f"text is not valid UTF-8 ({e})"
        for i, v in enumerate(data):
            if v is None:
                data[i] = ""
                bad[i] = "null text (expected a string)"
        return Rows(ids, data, bad)
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        vt = t.value_type
        if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
            raise TypeError(f"{path}: column {column!r} must hold text or lists of numbers; got {t}")
        dt = np.float32 if pa.types.is_floating(vt) else np.int64
        shape = spec.get("shape")
        if pa.types.is_fixed_size_list(t):
            width = t.list_size
            lengths = np.full(n, width, np.int64)
        else:
            lengths = col.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            width = int(np.prod(shape)) if shape else (int(np.bincount(lengths[lengths >= 0]).argmax())
                                                         if (lengths >= 0).any() else 0)
        if shape and int(np.prod(shape)) != width:
            raise ValueError(f"{path}: shape {tuple(shape)} holds {int(np.prod(shape))} values but column "
                             f"{column!r} rows have {width}")
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        x = np.zeros((n, width), dt)
        for i in np.flatnonzero(~valid):
            bad[int(i)] = "null row (expected a list of numbers)"
        for i in np.flatnonzero(valid & (lengths != width)):
            bad[int(i)] = f"row has {int(lengths[i])} values; expected {width}"
        ok = valid & (lengths == width)
        if ok.all() and pa.types.is_fixed_size_list(t) and col.values.null_count == 0:
            # one copy into a contiguous array (the flat child buffer, offset-adjusted)
            x = col.flatten().to_numpy(zero_copy_only=False).astype(dt, copy=False).reshape(n, width)
        else:
            for i in np.flatnonzero(ok):
                x[i] = col[int(i)].values.to_numpy(zero_copy_only=False)
        return Rows(ids, x.reshape((n, *shape)) if shape else x, bad)
    raise TypeError(f"{path}: column {column!r} must be a string column or a list of numbers; got {t}")


@dataclass(frozen=True)
class NpySource:
    """``.npy`` shards: one file = one shard, rows along axis 0.

    A ``<U`` (unicode) array is text; a numeric array is samples ``[n, ...]`` (float32 or int64
    after reading).  Object arrays are refused: reading them would unpickle.

    Parameters
    ----------
    path : str glob pattern or list of paths
        Files ending in ``id_suffix`` are the id files, not shards.
    id_suffix : str or None
        With e.g. ``".ids.npy"``, shard ``a.npy``'s row ids are in ``a.ids.npy`` (int or str,
        shape [n]).  None: the global row number (int64).
    """

    path: object
    id_suffix: str | None = None

    kind = "npy"

    def files(self) -> list[str]:
        files = _expand(self.path, "NpySource")
        if self.id_suffix:
            files = [f for f in files if not f.endswith(self.id_suffix)]
        if not files:
            raise FileNotFoundError(f"NpySource: only id files match {self.path!r}")
        return files

    def count_rows(self, path: str) -> int:
        shape, _ = _npy_header(path)
        return shape[0] if shape else 0

    def spec(self) -> dict:
        return {"kind": "npy", "id_suffix": self.id_suffix}

    def read_ids(self, path: str, first_row: int, rows: int) -> np.ndarray:
        return _npy_ids(path, self.spec(), first_row, rows)

    def read(self, path: str, first_row: int, rows: int) -> Rows:
        return read_npy_rows(path, self.spec(), first_row)


def _npy_header(path: str):
    """(shape, dtype) of a .npy file from its header (public API: read_magic + read_array_header)."""
    from numpy.lib import format as npf

    with open(path, "rb") as f:
        version = npf.read_magic(f)
        read = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _npy_ids(path: str, spec: dict, first_row: int, rows: int) -> np.ndarray:
    suffix = spec.get("id_suffix")
    if not suffix:
        return np.arange(first_row, first_row + rows, dtype=np.int64)
    ipath = path[:-4] + suffix if path.endswith(".npy") else path + suffix
    if not os.path.isfile(ipath):
        raise FileNotFoundError(f"{path}: its id file {ipath} does not exist (id_suffix={suffix!r})")
    ids = np.load(ipath, allow_pickle=False)
    if ids.shape != (rows,) or ids.dtype.kind not in "iuU":
        raise ValueError(f"{ipath}: ids must be int or str of shape ({rows},); got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids


def read_npy_rows(path: str, spec: dict, first_row: int) -> Rows:
    """Read one .npy shard per an NpySource spec (runs in the worker)."""
    try:
        a = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as e:
        raise ValueError(f"{path}: not a readable .npy shard without pickle (object arrays are refused): {e}") from None
    if a.ndim == 0:
        raise ValueError(f"{path}: a shard needs rows along axis 0; got a scalar")
    ids = _npy_ids(path, spec, first_row, a.shape[0])
    if a.dtype.kind == "U":
        if a.ndim != 1:
            raise ValueError(f"{path}: text shards must be 1-D; got shape {a.shape}")
        return Rows(ids, a.tolist())
    if a.dtype.kind == "f":
        return Rows(ids, np.ascontiguousarray(a, np.float32))
    if a.dtype.kind in "iub":
        return Rows(ids, np.ascontiguousarray(a, np.int64))
    raise TypeError(f"{path}: shard dtype must be text (<U), float or int; got {a.dtype}")


def source_from_spec(spec: dict):
    """The reader functions for a source spec (the worker side of a source)."""
    if spec["kind"] == "parquet":
        return read_parquet_rows
    if spec["kind"] == "npy":
        return read_npy_rows
    raise ValueError(f"unknown source kind {spec['kind']!r}")


# ------------------------------------------------------------------------------------------------
# sinks


def tmp_name(directory: str, final: str) -> str:
    """A unique temporary name beside ``final`` (same directory, so the rename is atomic)."""
    return os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{os.path.basename(final)}")


def commit(tmp: str, final: str) -> None:
    """fsync ``tmp`` and rename it to ``final`` (readers see the old state or the whole file)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def fsync_dir(directory: str) -> None:
    """Make the renames in ``directory`` durable (the directory entry is what a crash could lose)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _SinkBase:
    path: str

    ext = ""

    @property
    def directory(self) -> str:
        return os.path.abspath(os.fspath(self.path))

    def output_name(self, index: int, shard_id: str) -> str:
        return os.path.join(self.directory, f"part-{index:06d}-{shard_id[:8]}{self.ext}")

    @staticmethod
    def errors_name(output: str) -> str:
        base = output[: -len(".parquet")] if output.endswith(".parquet") else output[:-len(".npy")]
        return base + ".errors.jsonl"


@dataclass(frozen=True)
class ParquetSink(_SinkBase):
    """One Parquet file per shard: ``id_column`` (the input ids) and ``column`` (the model output
    per row as a fixed-size list of float32; its per-row shape is in the file's metadata).

    Parameters
    ----------
    path : str
        Output directory (created).  It holds ``part-NNNNNN-<shard id>.parquet``,
        ``part-*.errors.jsonl`` for skipped rows, ``_MANIFEST.json`` and ``_SUCCESS``.
    column, id_column : str
        Output column names.
    """

    column: str = "embedding"
    id_column: str = "id"

    kind = "parquet"
    ext = ".parquet"

    def spec(self) -> dict:
        return {"kind": "parquet", "dir": self.directory, "column": self.column, "id_column": self.id_column}

    def count_rows(self, output: str) -> int:
        return sink_count_rows(self.spec(), output)

    def read_ids(self, output: str) -> np.ndarray:
        _, pq = _pq()
        return _ids_array(pq.read_table(output, columns=[self.id_column]).column(self.id_column),
                          output, self.id_column)

    def read_values(self, output: str) -> np.ndarray:
        """float32 [n, ...] from one output file."""
        _, pq = _pq()
        pf = pq.ParquetFile(output)
        meta = pf.schema_arrow.metadata or {}
        shape = json.loads(meta.get(b"edgepack.row_shape", b"null"))
        col = pq.read_table(output, columns=[self.column]).column(self.column).combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False)
        n = len(col)
        return flat.reshape((n, *shape)) if shape is not None else flat.reshape(n, -1)


@dataclass(frozen=True)
class NpySink(_SinkBase):
    """One ``.npy`` file per shard holding the outputs [n, ...] float32, rows in input order, and a
    ``.ids.npy`` beside it with their ids (written first: the values file is the commit).

    Parameters
    ----------
    path : str
        Output directory (created).
    """

    kind = "npy"
    ext = ".npy"

    def spec(self) -> dict:
        return {"kind": "npy", "dir": self.directory}

    def count_rows(self, output: str) -> int:
        return sink_count_rows(self.spec(), output)

    def read_ids(self, output: str) -> np.ndarray:
        ids = np.load(output[:-4] + ".ids.npy", allow_pickle=False)
        return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids

    def read_values(self, output: str) -> np.ndarray:
        return np.load(output, allow_pickle=False)


def sink_count_rows(spec: dict, output: str) -> int:
    """Rows in a committed output file (from its footer or header), or -1 if it is unreadable."""
    try:
        if spec["kind"] == "parquet":
            _, pq = _pq()
            return pq.ParquetFile(output).metadata.num_rows
        shape, _ = _npy_header(output)
        ids_shape, _ = _npy_header(output[:-4] + ".ids.npy")
        return shape[0] if shape and ids_shape[:1] == shape[:1] else -1
    except (OSError, ValueError):
        return -1


def write_output(spec: dict, output: str, ids: np.ndarray, values: np.ndarray, info: dict, fault=None) -> None:
    """Write one shard's output under a temporary name and commit it (runs in the worker).

    ``values``: [n, ...] model outputs; ``info``: JSON-able shard facts kept in the file
    (Parquet metadata).  ``fault``: the test hook (see ``_shard.fault_point``).
    """
    d = spec["dir"]
    values = np.ascontiguousarray(values, np.float32)
    if spec["kind"] == "parquet":
        pa, pq = _pq()
        width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
        col = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)
        idcol = pa.array(ids.tolist() if ids.dtype.kind == "U" else ids)
        table = pa.table({spec["id_column"]: idcol, spec["column"]: col})
        table = table.replace_schema_metadata({
            "edgepack.shard": json.dumps(info, sort_keys=True),
            "edgepack.row_shape": json.dumps(list(values.shape[1:]))})
        tmp = tmp_name(d, output)
        pq.write_table(table, tmp)
        if fault:
            fault("write")
        commit(tmp, output)
    else:
        ids_final = output[:-4] + ".ids.npy"
        tmp = tmp_name(d, ids_final)
        with open(tmp, "wb") as f:
            np.save(f, ids)
        commit(tmp, ids_final)
        tmp = tmp_name(d, output)
        with open(tmp, "wb") as f:
            np.save(f, values)
        if fault:
            fault("write")
        commit(tmp, output)


def write_errors(output: str, errors: list[dict]) -> None:
    """Commit the skipped rows of one shard as JSON lines (before its output file)."""
    final = _SinkBase.errors_name(output)
    tmp = tmp_name(os.path.dirname(final), final)
    with open(tmp, "w", encoding="utf-8") as f:
        for e in errors:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    commit(tmp, final)


def read_errors(output: str) -> list[dict]:
    """The skipped rows of one shard ([] when it had none)."""
    final = _SinkBase.errors_name(output)
    if not os.path.exists(final):
        return []
    with open(final, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def make_sink(sink) -> "ParquetSink | NpySink":
    if isinstance(sink, (ParquetSink, NpySink)):
        return sink
    if isinstance(sink, (str, os.PathLike)):
        return ParquetSink(os.fspath(sink))
    raise TypeError(f"sink must be a ParquetSink, an NpySink or an output directory path; got {type(sink).__name__}")


def make_source(source):
    if isinstance(source, (ParquetSource, NpySource)):
        return source
    raise TypeError(f"source must be a ParquetSource or an NpySource; got {type(source).__name__} "
                    "(e.g. edgepack.batch.ParquetSource('data/*.parquet', column='text'))")
