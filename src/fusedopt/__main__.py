"""Command line: ``python -m fusedopt info | bench | demo``."""
import argparse
import sys


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
    from fusedopt.demo import main as demo_main

    return demo_main(rest)


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
                   help="train a NumPy MLP on the digits data set (--help for its options)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        return _demo(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"info": _info, "bench": _bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
