"""Command line: ``python -m fusedopt info | bench | demo``.

``demo`` is not part of the package: the training demo is the example script
``examples/digits_demo.py`` of a source checkout.  From the root of a checkout
``python -m fusedopt demo [options]`` runs that script; elsewhere it says
where the demo is and exits with status 2.
"""
import argparse
import runpy
import sys
from pathlib import Path

#: Where the demo lives, relative to the root of a source checkout.
DEMO_SCRIPT = Path("examples") / "digits_demo.py"


def _info(args):
    import fusedopt

    for key, value in fusedopt.info().items():
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        print(f"{key:>22}: {value}")
    return 0


def _bench(args):
    from fusedopt._quickbench import main as bench_main

    return bench_main(args)


def _demo(args, rest):
    script = Path.cwd() / DEMO_SCRIPT
    if not script.is_file():
        print(f"the training demo is not part of the installed package: it is "
              f"`python {DEMO_SCRIPT.as_posix()}` in a source checkout of fusedopt "
              f'(with pip install "fusedopt[examples]")', file=sys.stderr)
        return 2
    saved_argv = sys.argv
    sys.argv = [str(script), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = saved_argv
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fusedopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, OpenMP, threads, compiler, SIMD path")
    bench = sub.add_parser("bench", help="a short step-time comparison against NumPy Adam")
    bench.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e5, 1e6, 1.6e7],
                       help="parameter sizes (elements)")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--repeats", type=int, default=15)
    sub.add_parser("demo", add_help=False,
                   help="run examples/digits_demo.py (a source checkout's training demo) "
                        "with the remaining arguments")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        return _demo(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"info": _info, "bench": _bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
