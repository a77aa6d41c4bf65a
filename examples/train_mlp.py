"""Train a NumPy MLP on the handwritten digits with fusedopt: the recommended structure.

The model keeps every weight and bias as a view into ONE flat parameter
buffer, and every gradient as a view into ONE flat gradient buffer
(``fusedopt.FlatParams``).  Its backward pass writes into the gradient views
(``np.matmul(..., out=dW)``), so a training step is::

    model.loss_and_backward(x_batch, y_batch)   # fills model.flat.grad
    optimizer.step([model.flat.grad])           # one fused kernel call updates model.flat.param

The model, the data split and the schedules come from the demo next to this
file, ``examples/digits_demo.py`` (read ``MLP.loss_and_backward`` there for the
backward pass).  The full demo, with progress bars, every option, timings and
the same run with a plain NumPy Adam for comparison, is
``python examples/digits_demo.py``.

Run::

    pip install "fusedopt[examples]"     # scikit-learn for the digits data set
    python examples/train_mlp.py
"""
import sys
from pathlib import Path

import fusedopt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # digits_demo.py sits next to this file
from digits_demo import (MLP, MissingExtraError, load_digits_splits,  # noqa: E402
                         make_schedule, shuffled_batches)

EPOCHS = 10
BATCH_SIZE = 32
PEAK_LR = 3e-3
SEED = 0


def main():
    """Train for EPOCHS epochs, print validation metrics per epoch and the test accuracy."""
    try:
        data = load_digits_splits(seed=SEED, dtype="float32")  # train / validation / test
    except MissingExtraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    # Weights and gradients live in model.flat.param and model.flat.grad.
    model = MLP(n_inputs=data.X_train.shape[1], n_classes=data.n_classes,
                hidden=128, layers=2, dtype="float32", seed=SEED)
    steps_per_epoch = -(-len(data.y_train) // BATCH_SIZE)
    # 10% linear warm-up, then cosine annealing to 0; the optimizer evaluates it at each step
    schedule = make_schedule("cosine", PEAK_LR, EPOCHS, steps_per_epoch)
    # The optimizer sees a single "parameter": the whole flat buffer.
    optimizer = fusedopt.Adam([model.flat.param], lr=schedule)

    for epoch, batches in enumerate(shuffled_batches(len(data.y_train), BATCH_SIZE, EPOCHS, SEED)):
        for batch in batches:
            model.loss_and_backward(data.X_train[batch], data.y_train[batch])
            optimizer.step([model.flat.grad])
        val_loss, val_accuracy = model.evaluate(data.X_val, data.y_val)
        print(f"epoch {epoch + 1:2d}/{EPOCHS}: validation loss {val_loss:.4f}, "
              f"accuracy {val_accuracy:.2%}")

    _, test_accuracy = model.evaluate(data.X_test, data.y_test)
    print(f"test accuracy {test_accuracy:.2%} ({model.n_parameters:,} parameters, "
          f"{optimizer.step_count} fused steps)")
    print("timings and a comparison with NumPy Adam: python examples/digits_demo.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
