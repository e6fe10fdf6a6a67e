"""The ``edgepack`` command line (also ``python -m edgepack``).

Each command lives in the module that owns its area; this file only routes and turns expected
errors (missing or corrupt files, bad options) into a one-line message and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from ..benchsuite import SUITES

USAGE = """\
usage: edgepack <command> [options]

commands:
  demo                          train, distill, prune and quantize on digits; print the table
  info MODEL                    describe a saved model
  quantize MODEL -o OUT         post-training int8 quantization
  eval MODEL --data X.npy --labels y.npy
  bench SUITE|MODEL             SUITE is one of: {suites}; MODEL benchmarks a saved model
                                or an .onnx file against onnxruntime (float and int8)
  report MODEL... --plot out.png
  batch MODEL --input GLOB --output DIR   run a model over sharded data (local, Dask or Ray)
  cpu                           detected CPU features, kernel paths and threads

'edgepack <command> --help' shows a command's options.
""".format(suites=", ".join(SUITES))

# command -> (module, function); each function takes argv (list[str]) and returns an exit code.
COMMANDS = {
    "info": ("edgepack.cli.model", "info_main"),
    "quantize": ("edgepack.cli.ptq", "quantize_main"),
    "eval": ("edgepack.cli.model", "eval_main"),
    "demo": ("edgepack.cli.demo", "demo_main"),
    "report": ("edgepack.cli.demo", "report_main"),
    "batch": ("edgepack.cli.batch", "batch_main"),
}


class CliError(Exception):
    """An expected failure: printed as one line, exit status 2."""


def _cpu_main(argv: list[str]) -> int:
    from .. import cpu_info

    info = cpu_info()
    feats = ", ".join(k for k, v in info["features"].items() if v) or "(none)"
    print(f"features:  {feats}")
    print(f"paths:     {', '.join(info['available'])} (built: {', '.join(info['built'])})")
    print(f"active:    {info['isa']}  (set EDGEPACK_ISA to force a path)")
    if "avx2" in info["features"]:  # x86: say why the AMX path is (not) there
        amx = "available" if info["amx_reason"] is None else f"not available: {info['amx_reason']}"
        if info["amx_emulated"]:
            amx += " (test build: scalar model of the tiles)"
        print(f"amx:       {amx}")
    print(f"threads:   {info['num_threads']} (default {info['default_num_threads']})")
    return 0


def _resolve(cmd: str, rest: list[str]):
    if cmd == "cpu":
        return _cpu_main, rest
    if cmd == "bench":
        if rest and rest[0] in SUITES:
            mod = importlib.import_module(f"edgepack.benchsuite.{rest[0]}")
            return mod.main, rest[1:]
        if rest and str(rest[0]).lower().endswith(".onnx"):
            mod = importlib.import_module("edgepack.cli.bench_graph")
            return mod.bench_onnx_main, rest
        mod = importlib.import_module("edgepack.cli.ptq")
        return mod.bench_main, rest
    if cmd not in COMMANDS:
        raise CliError(f"unknown command {cmd!r}; expected one of: cpu, bench, {', '.join(COMMANDS)}")
    module, func = COMMANDS[cmd]
    return getattr(importlib.import_module(module), func), rest


def main(argv: list[str] | None = None) -> int:
    """Entry point. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("--version", "version"):
        from .. import __version__

        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        fn, args = _resolve(cmd, rest)
        return int(fn(args) or 0)
    except (CliError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError, TypeError,
            KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"edgepack {cmd}: error: {msg}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"edgepack {cmd}: error: {e} (install the optional extra that provides it)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
