"""Write the headers the C sources need that a C macro cannot make: every algorithm
header once (fusedopt_algorithms.h), one instantiation block per kernels.def row
(fusedopt_instances.h, included by each ISA file), and the 8-bit quantization
tables (fusedopt_qmaps.h) from their one definition, src/fusedopt/_qmap.py.

setup.py calls this at build time; standalone: ``python csrc/generate.py OUTDIR``.
"""
import re
import runpy
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent.resolve()
KERNEL_ROW = re.compile(r"^\s*KERNEL\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)",
                        re.MULTILINE)
QMAP = HERE.parent / "src" / "fusedopt" / "_qmap.py"


def kernel_rows():
    """(algorithm, param storage, grad storage, state storage) of every row of kernels.def."""
    rows = KERNEL_ROW.findall((HERE / "kernels.def").read_text())
    if not rows:
        raise RuntimeError("csrc/kernels.def lists no KERNEL(...) rows")
    return rows


def write_kernel_instances(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = kernel_rows()
    algorithms = list(dict.fromkeys(row[0] for row in rows))
    header = "/* written by csrc/generate.py from csrc/kernels.def */\n"
    (out_dir / "fusedopt_algorithms.h").write_text(
        header + "".join(f'#include "algorithms/{a}.h"\n' for a in algorithms))
    blocks = [
        f"#define FO_ALGORITHM {algorithm}\n#define FO_PARAM_STORAGE {param_storage}\n"
        f"#define FO_GRAD_STORAGE {grad_storage}\n#define FO_STATE_STORAGE {state_storage}\n"
        f'#include "runtime/instance.h"\n#include "algorithms/{algorithm}.h"\n'
        f'#include "runtime/instance_end.h"\n'
        "#undef FO_ALGORITHM\n#undef FO_PARAM_STORAGE\n#undef FO_GRAD_STORAGE\n#undef FO_STATE_STORAGE\n"
        for algorithm, param_storage, grad_storage, state_storage in rows
    ]
    (out_dir / "fusedopt_instances.h").write_text(header + "\n".join(blocks))
    write_quantization_tables(out_dir)


def _c_array(ctype, name, values, fmt):
    body = ",".join(("\n    " if k % 8 == 0 else " ") + fmt(v) for k, v in enumerate(values))
    return f"static const {ctype} {name}[{len(values)}] = {{{body}\n}};\n"


def _simd_tables(c, signed, decades):
    """The lookup tables the SIMD coders permute registers with (storage/q8.h,
    fo_q8_map): the same values as the scalar arithmetic, laid out by index."""
    f32 = np.float32
    # decode: u = |code - 127| (signed) or code + 1 (unsigned) is 2^e + j with j < 2^e,
    # and float32(u)'s exponent field is 127 + e: its low 4 bits pick the row
    decode_first, decode_step = np.zeros(16, f32), np.zeros(16, f32)
    for d in range(decades):
        e = d if signed else d + 1
        decode_first[(127 + e) % 16], decode_step[(127 + e) % 16] = c["first"][d], c["step"][d]
    decode_first[(127 + decades + (0 if signed else 1)) % 16] = 1.0      # the code of 1.0
    # AVX2 permutes 8 registers, by the row mod 8: the signed map's e = 0 row (15)
    # is repeated at 7, unused otherwise; in the unsigned map codes 0 and 255 share
    # row 7 (1.0), and the AVX2 decoder zeroes code 0
    if signed:
        decode_first[7], decode_step[7] = decode_first[15], decode_step[15]
    # encode: the decade of a value in [bound[0], 1) is that of its binade's lowest
    # value, or one more from the next bound on (a decade spans more than a binade);
    # rows by the exponent field mod 32 (the binades below and from 1 are coded
    # without the decade: 0 / 255; a NaN's row, 31, says decade 0, as the compare chain)
    binade_decade, binade_next_bound = np.zeros(32, np.int32), np.full(32, np.inf, f32)
    lowest = int(c["bound"][0].view(np.uint32) >> 23)
    assert 127 - lowest < 31
    for e in range(lowest, 127):
        low = np.uint32(e << 23).view(f32)
        d = int(np.sum(low >= c["bound"][1:decades]))
        binade_decade[e % 32] = d
        binade_next_bound[e % 32] = c["bound"][d + 1] if d + 1 < decades else np.inf
    assert binade_decade[255 % 32] == 0 and binade_next_bound[255 % 32] == np.inf
    padded = lambda a, dtype: np.concatenate([a, np.zeros(16 - a.size)]).astype(dtype)
    return [("decode_first", decode_first), ("decode_step", decode_step),
            ("binade_decade", binade_decade), ("binade_next_bound", binade_next_bound),
            ("decade_first", padded(c["first"], f32)), ("decade_inverse", padded(c["inverse"], f32)),
            ("decade_last", padded((c["count"] - 1).astype(f32), f32)),
            ("decade_base", padded(c["base"], np.int32))]


def write_quantization_tables(out_dir):
    """fusedopt_qmaps.h: each map's constants (storage/q8.h runs the arithmetic)."""
    qmap = runpy.run_path(str(QMAP))
    as_float = lambda v: float(v).hex() + "f"
    text = ["/* written by csrc/generate.py from src/fusedopt/_qmap.py */\n",
            f"#define FO_Q8_BLOCK {qmap['BLOCK']}\n#define FO_Q8_DECADES {qmap['DECADES']}\n"]
    for kind, signed in (("signed", True), ("unsigned", False)):
        c = qmap["constants"](signed)
        text.append(f"static const fo_q8_map fo_q8_{kind} = {{\n    {int(signed)}, {qmap['ZERO'][signed]},\n")
        for name, fmt in (("count", str), ("base", str), ("first", as_float), ("step", as_float),
                          ("inverse", as_float), ("bound", as_float)):
            text.append("    {" + ", ".join(fmt(v) for v in c[name]) + f"}},  /* {name} */\n")
        text.append("    {" + ", ".join(as_float(v) for v in qmap["dynamic_map"](signed)) + "},  /* value */\n")
        for name, values in _simd_tables(c, signed, qmap["DECADES"]):
            fmt = (lambda v: "INFINITY" if np.isinf(v) else as_float(v)) if values.dtype.kind == "f" else str
            text.append("    {" + ", ".join(fmt(v) for v in values) + f"}},  /* {name} */\n")
        text.append("};\n")
    (Path(out_dir) / "fusedopt_qmaps.h").write_text("".join(text))


if __name__ == "__main__":
    write_kernel_instances(sys.argv[1])
