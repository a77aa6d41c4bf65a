"""The workloads of the benchmark: parameter shapes, and the arrays built from them.

A workload is a list of parameter shapes.  Single-buffer workloads hold one
1-D parameter of N elements; model-shaped workloads hold the parameter
tensors of a real network, stepped one array per tensor (the list API), as
one ``FlatParams`` buffer, and as one plain buffer of the same total size.
"""
import math
from dataclasses import dataclass

import numpy as np

# The 62 parameter tensors of torchvision's resnet18 (named_parameters() order):
# conv weights (out, in, kh, kw), batchnorm weight and bias (C,), fc weight (1000, 512)
# and bias.  Written out by hand so the benchmark does not need torchvision.
RESNET18_SHAPES = [
    (64, 3, 7, 7), (64,), (64,),                                                     # conv1, bn1
    (64, 64, 3, 3), (64,), (64,), (64, 64, 3, 3), (64,), (64,),                      # layer1.0
    (64, 64, 3, 3), (64,), (64,), (64, 64, 3, 3), (64,), (64,),                      # layer1.1
    (128, 64, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,),               # layer2.0
    (128, 64, 1, 1), (128,), (128,),                                                 # layer2.0.downsample
    (128, 128, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,),              # layer2.1
    (256, 128, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,),              # layer3.0
    (256, 128, 1, 1), (256,), (256,),                                                # layer3.0.downsample
    (256, 256, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,),              # layer3.1
    (512, 256, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,),              # layer4.0
    (512, 256, 1, 1), (512,), (512,),                                                # layer4.0.downsample
    (512, 512, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,),              # layer4.1
    (1000, 512), (1000,),                                                            # fc
]

# 200 Linear(256, 256) layers: a weight and a bias each, 400 tensors.
MLP200_SHAPES = [(256, 256), (256,)] * 200

SINGLE_SIZES = {"1e3": 1_000, "1e4": 10_000, "1e5": 100_000, "1e6": 1_000_000,
                "1.6e7": 16_000_000, "3.2e7": 32_000_000}
MODELS = {"resnet18": RESNET18_SHAPES, "mlp200": MLP200_SHAPES}


@dataclass(frozen=True)
class Workload:
    """A named list of parameter shapes.

    Attributes
    ----------
    name : str
        Label in tables and on the command line ("1e6", "resnet18", ...).
    shapes : tuple of tuple of int
        One shape per parameter tensor.
    is_model : bool
        Model-shaped (many tensors): also stepped through FlatParams and as
        one buffer of the same total size.
    """

    name: str
    shapes: tuple
    is_model: bool = False

    @property
    def n_elements(self):
        """Total number of parameter elements (without FlatParams' alignment padding)."""
        return sum(math.prod(shape) for shape in self.shapes)

    def describe(self):
        """One-line description for logs and JSON."""
        return f"{self.name}: {len(self.shapes)} tensor(s), {self.n_elements:,} elements"


def parse_workload(name):
    """The Workload called `name`: a key of SINGLE_SIZES or MODELS, any element count ("2e6"),
    or one matrix ("1000x1000").

    Raises
    ------
    ValueError
        If `name` is neither a known workload nor a positive number.
    """
    if name in MODELS:
        return Workload(name, tuple(MODELS[name]), is_model=True)
    if "x" in name:   # one matrix, "1000x1000": for optimizers with factored state
        try:
            shape = tuple(int(float(n)) for n in name.split("x"))
        except ValueError:
            raise ValueError(f"unknown workload {name!r}: a matrix is written RxC, e.g. 1000x1000") from None
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"a matrix workload needs two positive sizes, got {name!r}")
        return Workload(name, (shape,))
    size = SINGLE_SIZES.get(name)
    if size is None:
        try:
            size = int(float(name))
        except ValueError:
            raise ValueError(f"unknown workload {name!r}: use one of "
                             f"{', '.join([*SINGLE_SIZES, *MODELS])} or an element count") from None
        if size <= 0:
            raise ValueError(f"workload size must be positive, got {name!r}")
    return Workload(name, ((size,),))


DEFAULT_WORKLOADS = [*SINGLE_SIZES, *MODELS]


def random_tensors(shapes, dtype, seed, scale=1.0):
    """Arrays of the given shapes, uniform in [-scale, scale).

    One draw is split over all tensors, so building a model costs one RNG
    call rather than hundreds (uniform: 3x faster than normal at 3.2e7 elements).
    """
    rng = np.random.default_rng(seed)
    sizes = [math.prod(shape) for shape in shapes]
    flat = rng.random(sum(sizes), dtype=np.dtype(dtype))
    flat -= 0.5
    flat *= 2 * scale
    if len(shapes) == 1:
        return [flat.reshape(shapes[0])]  # no copy: a 3.2e7 float64 buffer is 256 MB
    arrays, start = [], 0
    for shape, size in zip(shapes, sizes):
        arrays.append(flat[start:start + size].reshape(shape).copy())
        start += size
    return arrays


# sanity checks on the hand-written lists, cheap enough to run at import
assert len(RESNET18_SHAPES) == 62 and sum(map(math.prod, RESNET18_SHAPES)) == 11_689_512
assert len(MLP200_SHAPES) == 400 and sum(map(math.prod, MLP200_SHAPES)) == 13_158_400
