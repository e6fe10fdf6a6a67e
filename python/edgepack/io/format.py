"""The edgepack model file: one safetensors-layout file, written and read with NumPy only.

Layout (the safetensors layout, so ``safetensors.numpy.load_file`` can read the tensors too)::

    u64 little-endian  N = header length
    N bytes            JSON header, space-padded to a multiple of 8
    rest               tensor data, little-endian, C order, packed back to back

The header maps each tensor name ("0.weight", "encoder.3.self_attn.q_proj.weight", ...) to
``{"dtype", "shape", "data_offsets"}``; its ``__metadata__`` (strings only) holds
``format = "edgepack"``, ``format_version``, ``architecture`` (JSON: the module tree of registry
class names, ``get_config()`` and tensor names), ``data_crc32`` (CRC-32 of the data section) and an
optional user ``metadata`` JSON.

Loading never unpickles or evaluates anything: class names are looked up in
``edgepack.nn.LAYER_REGISTRY`` only, and every size, offset, dtype and checksum is checked first, so
a truncated or corrupt file raises ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from typing import Any

import numpy as np

__all__ = ["save", "load", "read_header", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024
_MAX_DEPTH = 200

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _code(dt: np.dtype) -> str:
    dt = np.dtype(dt)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    for code, d in _DTYPES.items():
        if d == dt:
            return code
    raise TypeError(f"dtype {dt} cannot be saved (supported: {', '.join(_DTYPES)})")


# -- writing ------------------------------------------------------------------------------------

def _node(module, path: str, tensors: dict[str, np.ndarray], depth: int = 0) -> dict:
    from ..nn.base import LAYER_REGISTRY, Module

    if not isinstance(module, Module):
        raise TypeError(f"model{'.' + path if path else ''} must be an edgepack Module; got {type(module).__name__}")
    cls = type(module)
    name = getattr(cls, "_layer_name", "") or cls.__name__
    if LAYER_REGISTRY.get(name) is not cls:
        raise TypeError(f"layer {path or '(root)'}: class {cls.__qualname__} is not registered; "
                        "decorate it with @edgepack.nn.register_layer so it can be loaded")
    config = module.get_config()
    try:
        json.dumps(config)
    except (TypeError, ValueError) as e:
        raise TypeError(f"layer {path or '(root)'} ({name}): get_config() is not JSON-able: {e}") from None
    local = {}
    for tname, arr in module.get_tensors().items():
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"layer {path or '(root)'} ({name}): tensor {tname!r} is {type(arr).__name__}, not ndarray")
        _code(arr.dtype)
        key = f"{path}.{tname}" if path else tname
        tensors[key] = arr
        local[tname] = key
    kids = [[cname, _node(child, f"{path}.{cname}" if path else cname, tensors, depth + 1)]
            for cname, child in module.children()]
    return {"class": name, "config": config, "tensors": local, "children": kids}


def save(model, path, *, metadata: dict | None = None) -> None:
    """Write ``model`` to one file (safetensors layout with the architecture in the header).

    Parameters
    ----------
    model : edgepack.nn.Module
        Any tree of registered layers (float, int8 or sparse).
    path : str or os.PathLike
        Destination; written to a temporary file first and renamed, so a crash never leaves a
        half-written model under ``path``.
    metadata : dict, optional
        JSON-able extra information (e.g. ``{"input_shape": [1, 64]}``), returned by
        :func:`read_header`.
    """
    tensors: dict[str, np.ndarray] = {}
    arch = _node(model, "", tensors)
    entries: dict[str, Any] = {}
    offset = 0
    blobs = []
    for key, arr in tensors.items():
        code = _code(arr.dtype)
        data = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
        entries[key] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    crc = 0
    for b in blobs:
        crc = zlib.crc32(b, crc)
    meta = {"format": "edgepack", "format_version": str(FORMAT_VERSION),
            "architecture": json.dumps(arch, separators=(",", ":")), "data_crc32": str(crc)}
    if metadata is not None:
        try:
            meta["metadata"] = json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-able: {e}") from None
    header = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".edgepack-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- reading ------------------------------------------------------------------------------------

def _bad(path, what: str) -> ValueError:
    return ValueError(f"{os.fspath(path)}: {what}")


def _read(path):
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    size = len(raw)
    if size < 8:
        raise _bad(path, f"not an edgepack model file: truncated ({size} bytes, fewer than the 8-byte header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > size:
        if raw[:2] == b"PK" or raw[:6] == b"\x93NUMPY" or raw[:1] == b"\x80":
            raise _bad(path, "not an edgepack model file (looks like an npz/npy/pickle file)")
        raise _bad(path, f"truncated or corrupt: header length {n} does not fit in a {size}-byte file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"corrupt header (not valid JSON): {e}") from None
    if not isinstance(header, dict):
        raise _bad(path, "corrupt header: not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != "edgepack":
        raise _bad(path, "not an edgepack model file (no edgepack metadata; a plain safetensors file?)")
    ver = meta.get("format_version")
    if ver != str(FORMAT_VERSION):
        raise _bad(path, f"format version {ver!r} is not supported (this edgepack reads version {FORMAT_VERSION}); "
                   "upgrade edgepack or re-save the model")
    return path, raw, 8 + n, header, meta


def read_header(path) -> dict:
    """Header information without building the model.

    Returns
    -------
    dict with ``format_version`` (int), ``architecture`` (dict tree), ``tensors``
    (name -> (dtype code, shape)), ``metadata`` (the user dict or None), ``file_bytes``.
    """
    path, raw, start, header, meta = _read(path)
    return {
        "format_version": int(meta["format_version"]),
        "architecture": _arch(path, meta),
        "tensors": {k: (v.get("dtype"), tuple(v.get("shape", ()))) for k, v in header.items()
                    if isinstance(v, dict)},
        "metadata": _user_meta(path, meta),
        "file_bytes": len(raw),
    }


def _arch(path, meta):
    try:
        arch = json.loads(meta.get("architecture", ""))
    except (ValueError, TypeError, RecursionError) as e:
        raise _bad(path, f"corrupt architecture JSON: {e}") from None
    if not isinstance(arch, dict):
        raise _bad(path, "corrupt architecture: not a JSON object")
    return arch


def _user_meta(path, meta):
    if "metadata" not in meta:
        return None
    try:
        return json.loads(meta["metadata"])
    except (ValueError, TypeError) as e:
        raise _bad(path, f"corrupt user metadata: {e}") from None


def _tensors(path, raw: bytes, start: int, header: dict, meta: dict) -> dict[str, np.ndarray]:
    data_len = len(raw) - start
    spans = []
    for key, info in header.items():
        if not isinstance(info, dict):
            raise _bad(path, f"corrupt header: entry for tensor {key!r} is not an object")
        code = info.get("dtype")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if not isinstance(code, str) or code not in _DTYPES:
            raise _bad(path, f"tensor {key!r} has unsupported dtype {code!r}")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in shape)):
            raise _bad(path, f"corrupt header: tensor {key!r} has invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise _bad(path, f"corrupt header: tensor {key!r} has invalid data_offsets {offs!r}")
        # Python ints: np.prod in int64 overflows (OverflowError) or wraps to a small product
        # that a forged data_offsets span could match.
        nbytes = _DTYPES[code].itemsize
        for d in shape:
            nbytes *= d
        if offs[1] - offs[0] != nbytes:
            raise _bad(path, f"corrupt header: tensor {key!r} {code}{tuple(shape)} needs {nbytes} bytes "
                       f"but data_offsets span {offs[1] - offs[0]}")
        if offs[1] > data_len:
            raise _bad(path, f"truncated: tensor {key!r} ends at byte {offs[1]} of the data section, "
                       f"which has only {data_len} bytes")
        spans.append((offs[0], offs[1], key, code, shape))
    spans.sort()
    pos = 0
    for s, e, key, _, _ in spans:
        if s != pos:
            raise _bad(path, f"corrupt header: tensor {key!r} overlaps or leaves a gap in the data section")
        pos = e
    if pos != data_len:
        raise _bad(path, f"corrupt: {data_len - pos} unexpected bytes after the last tensor")
    crc = meta.get("data_crc32")
    if crc is not None and str(zlib.crc32(memoryview(raw)[start:])) != str(crc):
        raise _bad(path, "corrupt: tensor data checksum (CRC-32) does not match the header")
    out = {}
    for s, e, key, code, shape in spans:
        arr = np.frombuffer(raw, dtype=_DTYPES[code], count=(e - s) // _DTYPES[code].itemsize,
                            offset=start + s).reshape(shape)
        out[key] = arr.astype(_DTYPES[code].newbyteorder("="), copy=True)
    return out


_EXTRA_LAYER_MODULES = (
    # edgepack modules that define more registered layers (int8, sparse, text); imported only when
    # a file names a class not registered yet.  Fixed names: nothing in the file chooses them.
    "edgepack.nn.quantized", "edgepack.nn.sparse", "edgepack.nn.qlayers", "edgepack.prune",
    "edgepack.ptq", "edgepack.text", "edgepack.text.quant", "edgepack.graph",
)


def _lookup(name: str):
    import importlib

    from ..nn.base import LAYER_REGISTRY

    if name not in LAYER_REGISTRY:
        for mod in _EXTRA_LAYER_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
            if name in LAYER_REGISTRY:
                break
    return LAYER_REGISTRY.get(name)


def _build(path, node, tensors: dict, used: set, where: str, depth: int):
    from ..nn.base import LAYER_REGISTRY, Module

    label = where or "(root)"
    if depth > _MAX_DEPTH:
        raise _bad(path, f"corrupt architecture: nesting deeper than {_MAX_DEPTH} at {label}")
    if not isinstance(node, dict):
        raise _bad(path, f"corrupt architecture at {label}: node is not an object")
    name = node.get("class")
    config = node.get("config", {})
    local = node.get("tensors", {})
    kids = node.get("children", [])
    if not isinstance(name, str) or not isinstance(config, dict) or not isinstance(local, dict) \
            or not isinstance(kids, list):
        raise _bad(path, f"corrupt architecture at {label}: bad class/config/tensors/children fields")
    cls = _lookup(name)
    if cls is None:
        raise _bad(path, f"unknown layer class {name!r} at {label}; registered classes: "
                   f"{', '.join(sorted(LAYER_REGISTRY))} (import the module that defines it first)")
    own = {}
    for tname, key in local.items():
        if not isinstance(key, str) or key not in tensors:
            raise _bad(path, f"corrupt: layer {label} ({name}) refers to missing tensor {key!r}")
        own[tname] = tensors[key]
        used.add(key)
    try:
        module = cls.from_config(config, own)
    except MemoryError:
        # Constructors allocate what the config asks for before the file's tensors replace it;
        # a valid file never asks for more than it holds, so this is a corrupt (hostile) config.
        raise _bad(path, f"layer {label} ({name}): its config asks for more memory than is "
                   "available (corrupt file?)") from None
    except Exception as e:  # noqa: BLE001 - any layer's reaction to a hostile config is "corrupt file"
        raise _bad(path, f"layer {label} ({name}) could not be rebuilt from its config/tensors: {e}") from None
    if not isinstance(module, Module):
        raise _bad(path, f"layer {label} ({name}): from_config returned {type(module).__name__}")
    for item in kids:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise _bad(path, f"corrupt architecture at {label}: bad children entry")
        cname, cnode = item
        child = _build(path, cnode, tensors, used, f"{where}.{cname}" if where else cname, depth + 1)
        try:
            module.set_child(cname, child)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _bad(path, f"layer {label} ({name}) does not accept child {cname!r}: {e}") from None
    return module


def load(path):
    """Load a model saved by :func:`save`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not an edgepack model, is truncated or corrupt (header, offsets, checksum), has
        an unsupported format version, or names a layer class that is not registered; the message
        says which.
    """
    path, raw, start, header, meta = _read(path)
    arch = _arch(path, meta)
    tensors = _tensors(path, raw, start, header, meta)
    used: set = set()
    model = _build(path, arch, tensors, used, "", 0)
    unused = sorted(set(tensors) - used)
    if unused:
        raise _bad(path, f"corrupt: tensors not used by any layer: {unused[:5]}")
    return model
