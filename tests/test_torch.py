"""fusedopt.torch: fusedopt's optimizers as torch.optim.Optimizer subclasses.

References: torch.optim's single-tensor path (``foreach=False``) on a twin model
from the same initial weights, for the optimizers torch has; fusedopt's NumPy
optimizer on copies of the arrays, bitwise, for those it lacks.  Tolerance:
conftest.trajectory_tolerance (float64: 1e-12 relative; float32: 2 ulps of the
scale per step).  In float32 both models are stepped with the same gradients (the
fusedopt model's), so that the comparison measures the optimizers and not how a
network amplifies a rounding difference; in float64 each model computes its own.
"""
import collections
import contextlib
import copy
import io
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedopt  # noqa: E402
import fusedopt.torch as ft  # noqa: E402
from conftest import trajectory_tolerance  # noqa: E402

DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["float32", "float64"]
N_STEPS = 12

#: (fusedopt.torch class name, constructor arguments): the optimizers torch has, with
#: their less common options on
TORCH_CONFIGS = {
    "adam": ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    "adam-amsgrad-maximize": ("Adam", dict(lr=1e-2, amsgrad=True, maximize=True)),
    "adam-decoupled": ("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    "adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    "sgd-nesterov": ("SGD", dict(lr=5e-2, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "sgd-dampening": ("SGD", dict(lr=5e-2, momentum=0.8, dampening=0.3)),
    "sgd-plain": ("SGD", dict(lr=5e-2)),
    "adagrad": ("Adagrad", dict(lr=5e-2, lr_decay=1e-2, initial_accumulator_value=0.1, weight_decay=1e-3)),
    "rmsprop-centered": ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
    "adamax": ("Adamax", dict(lr=1e-2, weight_decay=1e-3)),
    "nadam-decoupled": ("NAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
    "radam": ("RAdam", dict(lr=1e-2, weight_decay=1e-3)),
    "adadelta": ("Adadelta", dict(lr=1.0, weight_decay=1e-3)),
    "adafactor": ("Adafactor", dict(lr=1e-2, weight_decay=1e-3)),
}
#: the optimizers torch lacks: compared with fusedopt's NumPy class
FUSEDOPT_ONLY = {
    "lion": ("Lion", dict(lr=1e-3, weight_decay=0.1)),
    "lamb": ("LAMB", dict(lr=1e-2, weight_decay=1e-2)),
    "adamw-schedulefree": ("AdamWScheduleFree", dict(lr=1e-2, warmup_steps=3)),
    "sgd-schedulefree": ("SGDScheduleFree", dict(lr=0.1)),
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # the same torch arithmetic (forward, backward) whatever the machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def scalars_like(dtype):
    """torch keeps "step" (and NAdam's mu_product) in the default dtype: float64 for a
    float64 run, as the kernels keep them."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == torch.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)).to(dtype)


def cnn(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 5)).to(dtype)


MODELS = {"mlp": (mlp, (12,)), "cnn": (cnn, (1, 8, 8))}


def batch(model_name, dtype, step, n=16):
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn((n,) + MODELS[model_name][1], generator=generator, dtype=dtype)
    y = torch.randint(0, 5, (n,), generator=generator)
    return x, y


def loss_of(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


def twins(model_name, dtype):
    make = MODELS[model_name][0]
    ours, theirs = make(dtype), make(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def backward(model, model_name, dtype, step):
    for p in model.parameters():
        p.grad = None
    loss = loss_of(model, *batch(model_name, dtype, step))
    loss.backward()
    return loss


def assert_params_close(ours, theirs, dtype, step, what=""):
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    for i, (a, b) in enumerate(zip(ours.parameters(), theirs.parameters())):
        a, b = a.detach().numpy(), b.detach().numpy()
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        tol = trajectory_tolerance(np_dtype, step, scale)
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
        assert err <= tol, f"{what} step {step} tensor {i}: {err:.3g} > {tol:.3g}"


def train_side_by_side(ours, theirs, opt, topt, model_name, dtype, n_steps=N_STEPS, start=0, check=True):
    """Step both models; float32: theirs gets our gradients (see the module's docstring)."""
    for step in range(start, start + n_steps):
        backward(ours, model_name, dtype, step)
        if dtype == torch.float32:
            for p, q in zip(ours.parameters(), theirs.parameters()):
                q.grad = p.grad.clone()
        else:
            backward(theirs, model_name, dtype, step)
        opt.step()
        topt.step()
        if check:
            assert_params_close(ours, theirs, dtype, step + 1)


# -- import and signatures --------------------------------------------------------------

def test_import_fusedopt_does_not_import_torch():
    code = "import sys, fusedopt; fusedopt.Adam; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_without_torch_names_the_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import fusedopt.torch\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fusedopt.torch needs PyTorch: pip install torch" in out.stdout


@pytest.mark.parametrize("name", sorted({n for n, _ in TORCH_CONFIGS.values()} | {"SparseAdam", "Muon"}))
def test_signature_is_torchs_plus_fusedopt_options(name):
    import inspect

    ours = inspect.signature(getattr(ft, name)).parameters
    theirs = list(inspect.signature(getattr(torch.optim, name)).parameters.values())
    assert list(ours)[:len(theirs)] == [p.name for p in theirs]
    for p in theirs:
        assert ours[p.name].default == p.default and ours[p.name].kind == p.kind, p.name
    fused = inspect.signature(getattr(fusedopt, name)).parameters
    for option in ft.FUSEDOPT_OPTIONS:
        if option in fused:
            assert ours[option].kind == inspect.Parameter.KEYWORD_ONLY
            assert ours[option].default == fused[option].default
    assert issubclass(getattr(ft, name), torch.optim.Optimizer)


def test_torchs_own_checks_and_groups():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="Invalid learning rate"):
        ft.Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        ft.SGD([p], lr=0.1, nesterov=True)
    opt, topt = ft.AdamW([p], lr=1e-3), torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert opt.param_groups[0].keys() == topt.param_groups[0].keys()
    assert {k: v for k, v in opt.defaults.items()} == topt.defaults


# -- trajectories ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("config", sorted(TORCH_CONFIGS))
def test_trains_like_torch_optim(config, model_name, dtype):
    name, kwargs = TORCH_CONFIGS[config]
    ours, theirs = twins(model_name, dtype)
    opt = getattr(ft, name)(ours.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kwargs)
    with scalars_like(dtype):
        train_side_by_side(ours, theirs, opt, topt, model_name, dtype)
    assert not all(torch.equal(a, b) for a, b in zip(ours.parameters(), mlp(dtype).parameters()))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", sorted(FUSEDOPT_ONLY))
def test_optimizers_torch_lacks_step_as_fusedopts(config, dtype):
    """Bitwise: the same kernels on the same arrays, whoever holds them."""
    name, kwargs = FUSEDOPT_ONLY[config]
    model = mlp(dtype)
    arrays = [p.detach().numpy().copy() for p in model.parameters()]
    opt = getattr(ft, name)(model.parameters(), **kwargs)
    reference = getattr(fusedopt, name)(arrays, **kwargs)
    if hasattr(reference, "train"):   # schedule-free: steps in train mode
        opt.train()
        reference.train()
    for step in range(N_STEPS):
        backward(model, "mlp", dtype, step)
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        opt.step()
        reference.step(grads)
        for p, a in zip(model.parameters(), arrays):
            np.testing.assert_array_equal(p.detach().numpy(), a)


def test_muon_steps_like_fusedopts_muon():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(16, 8)), torch.nn.Parameter(torch.randn(8, 4))]
    arrays = [w.detach().numpy().copy() for w in weights]
    opt, reference = ft.Muon(weights, lr=1e-2), fusedopt.Muon(arrays, lr=1e-2)
    for step in range(5):
        grads = [torch.randn(w.shape, generator=torch.Generator().manual_seed(step)) for w in weights]
        for w, g in zip(weights, grads):
            w.grad = g
        opt.step()
        reference.step([g.numpy() for g in grads])
        for w, a in zip(weights, arrays):
            np.testing.assert_array_equal(w.detach().numpy(), a)
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "momentum_buffer"}
    again = ft.Muon([torch.nn.Parameter(w.detach().clone()) for w in weights], lr=1e-2)
    again.load_state_dict(sd)
    np.testing.assert_array_equal(again.state_dict()["state"][1]["momentum_buffer"],
                                  sd["state"][1]["momentum_buffer"])


def test_closure_is_called_once_with_grad_enabled():
    model = mlp(torch.float64)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = loss_of(model, *batch("mlp", torch.float64, 0))
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor)


# -- gradients absent, zeroed, sparse -------------------------------------------------------

@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_and_parameters_without_gradients(set_to_none):
    """A parameter whose .grad is None sits a step out (its step count too), as in
    torch; zero_grad(set_to_none=False) leaves zeros, which do step."""
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = ft.Adam(ours.parameters(), lr=1e-2)
    topt = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False)
    for step in range(9):
        for model, o in ((ours, opt), (theirs, topt)):
            o.zero_grad(set_to_none=set_to_none)
            loss_of(model, *batch("mlp", dtype, step)).backward()
            if step % 3 == 1:        # the first layer frozen at some steps
                for p in model[0].parameters():
                    p.grad = None
            o.step()
        assert_params_close(ours, theirs, dtype, step + 1)
    ours_sd, theirs_sd = opt.state_dict(), topt.state_dict()
    for i in theirs_sd["state"]:
        assert float(ours_sd["state"][i]["step"]) == float(theirs_sd["state"][i]["step"])
    assert float(ours_sd["state"][0]["step"]) == 6.0
    opt.zero_grad(set_to_none=set_to_none)
    before = [p.detach().clone() for p in ours.parameters()]
    opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, ours.parameters())]
    assert moved == [not set_to_none] * 4


@pytest.mark.parametrize("name, kwargs", [("SparseAdam", dict(lr=1e-2)), ("Adagrad", dict(lr=0.1)),
                                          ("SGD", dict(lr=0.5))])
def test_sparse_embedding_gradients(name, kwargs):
    """nn.Embedding(sparse=True): torch.sparse_coo gradients (duplicates uncoalesced)
    take fusedopt's row-sparse path; float64 vs torch within 1e-12."""
    dtype = torch.float64
    torch.manual_seed(0)
    ours = torch.nn.Embedding(50, 6, sparse=True).to(dtype)
    theirs = torch.nn.Embedding(50, 6, sparse=True).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    opt = getattr(ft, name)(ours.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    untouched = ours.weight.detach()[40:].clone()
    for step in range(10):
        index = torch.randint(0, 40, (20,), generator=torch.Generator().manual_seed(step))
        for model, o in ((ours, opt), (theirs, topt)):
            o.zero_grad()
            (model(index) ** 2).sum().backward()
            assert model.weight.grad.is_sparse
            o.step()
        np.testing.assert_allclose(ours.weight.detach().numpy(), theirs.weight.detach().numpy(),
                                   rtol=1e-12, atol=1e-14)
    assert torch.equal(ours.weight.detach()[40:], untouched)


def test_sparse_gradient_refused_where_torch_refuses_it():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = ft.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(TypeError, match="row-sparse|RowSparseGrad|sparse"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before)


def test_low_precision_gradients_of_float32_parameters():
    p = torch.nn.Parameter(torch.randn(5000))
    q = torch.nn.Parameter(p.detach().clone())
    g = torch.randn(5000).to(torch.bfloat16)
    opt, reference = ft.AdamW([p], lr=1e-2), ft.AdamW([q], lr=1e-2)
    p.grad_dtype = None   # torch lets a gradient differ from its parameter's dtype only so
    p.grad, q.grad = g, g.float()
    opt.step()
    reference.step()
    assert torch.equal(p, q)   # bfloat16 widens exactly


# -- in place -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["float32", "bfloat16", "float16"])
def test_steps_in_place_and_leaves_gradients_alone(dtype):
    model = mlp(torch.float32).to(dtype)
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    opt = ft.AdamW(params, lr=1e-2)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)).to(dtype)
        grads = [p.grad.clone() for p in params]
        before = [p.detach().clone() for p in params]
        opt.step()
        assert [p.data_ptr() for p in params] == pointers
        assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
        assert all(not torch.equal(p, b) for p, b in zip(params, before))
    if dtype != torch.float32:
        assert opt.state[params[0]]["master"].dtype == torch.float32


def test_replaced_parameter_memory_keeps_its_state():
    """p.data = t gives p other memory: the step follows it, with p's state (torch keeps
    state by parameter too)."""
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = ft.Adam(ours.parameters(), lr=1e-2)
    topt = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False)
    train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=3)
    for model in (ours, theirs):
        model[0].weight.data = model[0].weight.detach().clone() * 0.5
    train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=3, start=3)
    ours[0].weight.data = torch.zeros(3, 3, dtype=dtype)
    ours[0].weight.grad = torch.zeros(3, 3, dtype=dtype)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] now holds"):
        opt.step()


def test_persistent_gradients_follow_every_change_like_torch():
    """Gradients kept across steps (zero_grad(set_to_none=False), CPU offload) let a
    step reuse the last one's views; every change torch allows between steps is
    followed, as torch.optim follows it (float64, within 1e-12)."""
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = ft.AdamW(ours.parameters(), lr=1e-2)
    topt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, foreach=False)
    extra = [torch.nn.Parameter(torch.ones(7, dtype=dtype)) for _ in range(2)]
    changes = {
        3: lambda m, k: setattr(m[0].weight, "grad", m[0].weight.grad.clone()),        # new tensor
        4: lambda m, k: setattr(m[0].bias.grad, "data", m[0].bias.grad.data * 3),       # new memory
        5: lambda m, k: setattr(m[2].weight, "grad", None),                              # sits out
        6: lambda m, k: setattr(m[2].bias, "data", m[2].bias.data.clone()),              # parameter memory
        7: lambda m, k: m[0].weight.grad.mul_(-2.0),                                     # values in place
        8: lambda m, k: setattr(m[0].weight.grad, "data", m[0].weight.grad.data.view(-1).view(32, 12)),
    }
    for step in range(11):
        for model, o, k in ((ours, opt, 0), (theirs, topt, 1)):
            o.zero_grad(set_to_none=False)
            loss_of(model, *batch("mlp", dtype, step)).backward()
            if step in changes:
                changes[step](model, k)
            if step == 9:
                o.add_param_group({"params": [extra[k]]})
            if step >= 9:
                extra[k].grad = torch.full((7,), 0.5, dtype=dtype)
            o.step()
        if step == 2:
            assert opt._last_step is not None   # the shortcut is in use from here
        assert_params_close(ours, theirs, dtype, step + 1, f"step {step}")
        assert torch.allclose(extra[0], extra[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("change, error, match", [
    (lambda p: p.grad.t_(), ValueError, "not contiguous"),
    (lambda p: setattr(p.grad, "data", p.grad.data.to(torch.float64)), TypeError, "float64"),
    (lambda p: setattr(p, "data", p.data.t()), ValueError, "not contiguous"),
    (lambda p: p.grad.resize_(3, 3), ValueError, "shape"),
    (lambda p: setattr(p.grad, "data", torch._neg_view(p.grad.data)), ValueError, "negated"),
    (lambda p: setattr(p, "data", torch._neg_view(p.data)), ValueError, "negative bit"),
])
def test_changes_after_repeated_steps_are_still_refused(change, error, match):
    """After steps that reuse their views, a gradient made non-contiguous, wider,
    another shape or lazily negated in place, or a transposed or negated parameter,
    is refused by name as at any step."""
    params = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(3)]
    opt = ft.Adam(params, lr=0.1)
    for p in params:
        p.grad = torch.ones(4, 4)
    for _ in range(3):
        opt.step()
    assert opt._last_step is not None
    memory = lambda: [bytes(p.untyped_storage()) for p in params]
    before = memory()
    change(params[1])
    with pytest.raises(error, match=match) as info:
        opt.step()
    assert "param_groups[0]['params'][1]" in str(info.value)
    assert memory() == before


def test_a_failed_step_leaves_nothing_for_the_next_to_reuse():
    """A step refused after it took in a parameter's new memory (its master copy
    restarted from there) is not the `last step`: putting the old memory back
    steps from it, as torch.optim does (float16 parameters with master weights)."""
    results = []
    for make in (ft.SGD, lambda params, **kw: torch.optim.SGD(params, foreach=False, **kw)):
        p0 = torch.nn.Parameter(torch.full((4, 2), 1.0, dtype=torch.float16))
        p1 = torch.nn.Parameter(torch.full((4, 2), 1.0, dtype=torch.float16))
        opt = make([p0, p1], lr=0.125, momentum=0.5)
        p0.grad, p1.grad = torch.ones(4, 2, dtype=torch.float16), torch.ones(4, 2, dtype=torch.float16)
        for _ in range(3):
            opt.step()
        if make is ft.SGD:
            kept, good = p0.data, p1.grad
            p0.data = torch.full((4, 2), 100.0, dtype=torch.float16)
            p1.grad = torch.ones(4, 2, dtype=torch.float16).to_sparse(2)
            with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\] is sparse"):
                opt.step()
            p0.data, p1.grad = kept, good
        opt.step()
        results.append(p0.detach().clone())
    assert torch.equal(results[0], results[1]), results


# -- bad input ------------------------------------------------------------------------------

def _shrunk(t, nbytes):
    """t with its storage shrunk under it (as FSDP frees parameters)."""
    t.untyped_storage().resize_(nbytes)
    return t


@pytest.mark.parametrize("make, error, match", [
    (lambda: torch.nn.Parameter(torch.zeros(4, 4).t()), ValueError, "not contiguous"),
    (lambda: torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64)), TypeError, "complex64"),
    (lambda: torch.nn.Parameter(torch.zeros(4, device="meta")), ValueError, "is on meta"),
    (lambda: torch.nn.Parameter(torch.zeros(4, dtype=torch.float64).to_sparse()), TypeError, "sparse"),
    (lambda: torch.nn.Parameter(_shrunk(torch.zeros(1000), 64)), ValueError, "past the end of its storage"),
    (lambda: torch.nn.Parameter(_shrunk(torch.zeros(1000), 0)), ValueError, "past the end of its storage"),
])
def test_bad_parameters_are_named(make, error, match):
    good = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(error, match=match) as info:
        ft.Adam([good, make()])
    assert "param_groups[0]['params'][1]" in str(info.value)
    opt = ft.Adam([good])
    with pytest.raises(error, match=match):
        opt.add_param_group({"params": [make()]})
    assert len(opt.param_groups) == 1 and len(opt.fused.param_groups) == 1


@pytest.mark.parametrize("make, error, match", [
    (lambda p: torch.zeros(p.shape[::-1]).t(), ValueError, "not contiguous"),
    (lambda p: torch.zeros(p.shape, dtype=torch.float64), TypeError, "float64"),
    (lambda p: torch.zeros(p.shape, dtype=torch.complex64), TypeError, "complex64"),
    (lambda p: _shrunk(torch.zeros(p.shape), 16), ValueError, "past the end of its storage"),
    (lambda p: _shrunk(torch.zeros(p.shape), 0), ValueError, "past the end of its storage"),
])
def test_bad_gradients_are_named_and_change_nothing(make, error, match):
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(3, 4))]
    opt = ft.Adam(params, lr=0.1)
    params[0].grad = torch.ones(3, 4)
    opt.step()
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    params[1].grad_dtype = None   # torch checks the dtype of an assigned gradient otherwise
    params[1].grad = make(params[1])
    with pytest.raises(error, match=match):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    after = opt.state_dict()
    assert torch.equal(after["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert float(after["state"][0]["step"]) == 1.0


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_refused_torch_flags(flag):
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=flag):
        ft.Adam([p], **{flag: True})
    opt = ft.Adam([p])
    opt.param_groups[0][flag] = True
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=flag):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))


def test_foreach_and_fused_are_accepted():
    p = torch.nn.Parameter(torch.zeros(3))
    ft.AdamW([p], foreach=True)
    ft.AdamW([p], fused=True)


def test_two_threads_stepping_one_optimizer():
    """One optimizer from two threads: each step is whole or raises RuntimeError."""
    params = [torch.nn.Parameter(torch.randn(200_000))]
    params[0].grad = torch.randn(200_000)
    opt = ft.Adam(params, lr=1e-3)
    errors, applied = [], []

    def run():
        for _ in range(20):
            try:
                opt.step()
                applied.append(1)
            except RuntimeError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("stepping" in e or "changed" in e for e in errors)
    assert float(opt.state_dict()["state"][0]["step"]) == len(applied)


# -- schedulers -----------------------------------------------------------------------------

SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "sequential": lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=4),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)], milestones=[4]),
    "onecycle-betas": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=N_STEPS + 1),
    "plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
}


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_torch_schedulers_drive_it_as_torch_optim(scheduler):
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = ft.AdamW([{"params": ours[0].parameters()}, {"params": ours[2].parameters(), "lr": 5e-3}], lr=1e-2)
    topt = torch.optim.AdamW([{"params": theirs[0].parameters()}, {"params": theirs[2].parameters(), "lr": 5e-3}],
                             lr=1e-2, foreach=False)
    schedulers = [SCHEDULERS[scheduler](o) for o in (opt, topt)]
    lrs = set()
    for step in range(N_STEPS):
        losses = [backward(m, "mlp", dtype, step) for m in (ours, theirs)]
        opt.step()
        topt.step()
        for s, loss in zip(schedulers, losses):
            s.step(loss.item() * 0 + 1.0) if scheduler == "plateau" else s.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
        assert [g["betas"] for g in opt.param_groups] == [g["betas"] for g in topt.param_groups]
        lrs.add(opt.param_groups[0]["lr"])
        assert_params_close(ours, theirs, dtype, step + 1, scheduler)
    assert len(lrs) > 2


def test_fusedopt_schedules_work_too():
    from fusedopt import schedules

    schedule = schedules.CosineAnnealing(1e-2, T_max=20)
    model = mlp(torch.float64)
    arrays = [p.detach().numpy().copy() for p in model.parameters()]
    opt, reference = ft.Adam(model.parameters(), lr=schedule), fusedopt.Adam(arrays, lr=schedule)
    for step in range(6):
        backward(model, "mlp", torch.float64, step)
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        opt.step()
        reference.step(grads)
    for p, a in zip(model.parameters(), arrays):
        np.testing.assert_array_equal(p.detach().numpy(), a)


def test_param_groups_edited_between_steps():
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = ft.SGD(ours[0].parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(theirs[0].parameters(), lr=0.05, momentum=0.9, foreach=False)
    train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=3)
    for o, m in ((opt, ours), (topt, theirs)):
        o.add_param_group({"params": m[2].parameters(), "lr": 0.1, "nesterov": True})
        o.param_groups[0]["lr"] = 0.02
        o.param_groups[0]["momentum"] = 0.5
    train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=4, start=3)


# -- state_dict -------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["adamw", "sgd-nesterov", "adagrad", "rmsprop-centered", "nadam-decoupled",
                                    "radam", "adadelta", "adamax", "adafactor"])
def test_state_dict_cross_loads_both_ways(config):
    """torch.optim -> fusedopt.torch and back, mid-run: the runs go on as one."""
    name, kwargs = TORCH_CONFIGS[config]
    dtype = torch.float64
    ours, theirs = twins("mlp", dtype)
    opt = getattr(ft, name)(ours.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kwargs)
    with scalars_like(dtype):
        train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=4)
        # torch's state into a fresh fusedopt optimizer (of the same model), and ours into torch
        theirs_sd = copy.deepcopy(topt.state_dict())
        ours_sd = copy.deepcopy(opt.state_dict())
        opt = getattr(ft, name)(ours.parameters(), **kwargs)
        opt.load_state_dict(theirs_sd)
        topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kwargs)
        topt.load_state_dict(ours_sd)
        train_side_by_side(ours, theirs, opt, topt, "mlp", dtype, n_steps=4, start=4)
    assert set(opt.state_dict()["state"][0]) >= set(topt.state_dict()["state"][0])


@pytest.mark.parametrize("options", [{}, {"state_dtype": "8bit", "min_8bit_size": 0},
                                     {"state_dtype": "bfloat16"}], ids=["float32", "8bit", "bfloat16"])
def test_torch_save_and_load_weights_only_resume_bitwise(options):
    model, other = twins("mlp", torch.float32)
    opt = ft.AdamW(model.parameters(), lr=1e-2, **options)
    for step in range(3):
        backward(model, "mlp", torch.float32, step)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    other.load_state_dict(saved["model"])
    again = ft.AdamW(other.parameters(), lr=1e-2, **options)
    again.load_state_dict(saved["optimizer"])
    for step in range(3, 6):
        for m, o in ((model, opt), (other, again)):
            backward(m, "mlp", torch.float32, step)
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_load_state_dict_checks_before_changing_anything():
    model = mlp(torch.float32)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    backward(model, "mlp", torch.float32, 0)
    opt.step()
    good = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(good)
    bad["state"][2]["exp_avg"] = torch.zeros(7)
    bad["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 1e-2
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], good["state"][0]["exp_avg"])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    eight = ft.Adam(model.parameters(), state_dtype="8bit")
    with pytest.raises(ValueError, match="state_dtype"):
        eight.load_state_dict(good)
    for step, error in ((None, TypeError), ("3", TypeError), (torch.tensor([1.0, 2.0]), ValueError)):
        bad = copy.deepcopy(good)
        bad["state"][1]["step"] = step
        with pytest.raises(error, match=r"\['step'\]"):
            opt.load_state_dict(bad)
        assert float(opt.state_dict()["state"][1]["step"]) == 1.0
    numpy_step = copy.deepcopy(good)
    numpy_step["state"][1]["step"] = np.float32(1.0)   # a number of another library loads as one
    opt.load_state_dict(numpy_step)
    assert float(opt.state_dict()["state"][1]["step"]) == 1.0


def test_deepcopy_goes_on_identically():
    model = mlp(torch.float64)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    backward(model, "mlp", torch.float64, 0)
    opt.step()
    model2 = copy.deepcopy(model)
    both = copy.deepcopy({"model": model, "opt": opt})
    model2, opt2 = both["model"], both["opt"]
    for step in range(1, 4):
        for m, o in ((model, opt), (model2, opt2)):
            backward(m, "mlp", torch.float64, step)
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


# -- training with 16-bit parameters and master weights -----------------------------------------

def test_bfloat16_model_with_master_weights_trains_to_float32_accuracy():
    """A 64-128-10 MLP on scikit-learn's digits (450 test samples, 0.22 points each),
    AdamW lr 3e-3, 10 epochs, batch 32: bfloat16 parameters with float32 master
    weights (forward and backward in bfloat16) against the float32 model."""
    pytest.importorskip("sklearn")
    from test_low_precision_training import BATCH, demo, digits

    data = digits()
    X_train, y_train = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)

    def run(dtype):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(dtype)
        opt = ft.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
        for batches in demo.shuffled_batches(len(data.y_train), BATCH, 10, 0):
            for index in batches:
                index = torch.from_numpy(index)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(X_train[index].to(dtype)).float(),
                                                  y_train[index]).backward()
                opt.step()
        with torch.no_grad():
            predictions = model(torch.from_numpy(data.X_test).to(dtype)).argmax(dim=1).numpy()
        return 100.0 * float((predictions == data.y_test).mean()), opt

    accuracy_f32, _ = run(torch.float32)
    accuracy_bf16, opt = run(torch.bfloat16)
    assert opt.fused.master_weights is None and "master" in opt.state_dict()["state"][0]
    assert accuracy_f32 >= 95.0, accuracy_f32
    assert abs(accuracy_f32 - accuracy_bf16) <= 0.5, (accuracy_f32, accuracy_bf16)


def test_gradient_views_follow_the_gradient_and_hold_no_memory():
    """The view of a gradient kept between steps (offload keeps gradients in the same
    buffers) is the gradient's current memory, and does not keep a dropped gradient alive."""
    import gc
    import weakref

    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float64))
    q = fusedopt.SGD([np.zeros(1000)], lr=0.5)
    opt = ft.SGD([p], lr=0.5)
    p.grad = torch.ones(1000, dtype=torch.float64)
    values = [np.ones(1000)]
    for step in range(6):
        if step == 1:
            p.grad.mul_(3.0)                      # in place: the same view
        elif step == 2:
            p.grad.set_(torch.full((1000,), 2.0, dtype=torch.float64))   # other memory
        elif step == 3:
            p.grad = torch.full((1000,), -1.0, dtype=torch.float64)      # another tensor
        elif step == 4:
            p.grad.zero_()
        values.append(p.grad.numpy().copy())
        opt.step()
        q.step([values[-1]])
        np.testing.assert_array_equal(p.detach().numpy(), q.param_groups[0]["params"][0])
    dropped = weakref.ref(p.grad)
    p.grad = None
    gc.collect()
    assert dropped() is None


_FREED_UNDER_THE_STEP = """
import gc, sys, torch, fusedopt.torch as ft
path = sys.argv[1]
p = torch.nn.Parameter(torch.zeros(1 << 24))   # 64 MB: above glibc's mmap threshold, unmapped when freed
opt = ft.SGD([p], lr=1.0)
g = torch.ones(1 << 24)
for _ in range({"fresh": 1, "second": 1, "repeated": 3}[path]):
    p.grad = g.clone() if path == "fresh" else g
    opt.step()
p.grad = torch.ones(1 << 24) if path == "fresh" else g
real = opt.fused.step
def step(grads, **kwargs):   # what another thread may do between the checks and the kernel
    p.grad.set_(torch.zeros(0))
    gc.collect()
    return real(grads, **kwargs)
opt.fused.step = step
opt.step()
steps = {"fresh": 2, "second": 2, "repeated": 4}[path]
assert bool((p.detach() == -steps).all()), p
print("ok")
"""


@pytest.mark.parametrize("path", ["fresh", "second", "repeated"])
def test_gradient_given_other_memory_during_the_step_is_read_safely(path):
    """A gradient tensor given other memory (set_, as another thread may do while the
    step runs) after its view was checked: the step still reads the memory it checked
    (the view holds it, or the step holds its storage), never freed memory.  fresh: a
    new gradient tensor; second: one seen at the step before; repeated: the shortcut of
    a step that finds everything as it was."""
    out = subprocess.run([sys.executable, "-c", _FREED_UNDER_THE_STEP, path], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])


def test_threads_editing_groups_never_mix_gradients():
    """Two threads step while a third swaps the group's parameter: each parameter only
    ever steps with its own gradient (the groups are read under the optimizer's lock)."""
    p0 = torch.nn.Parameter(torch.zeros(64, dtype=torch.float64))
    p1 = torch.nn.Parameter(torch.zeros(64, dtype=torch.float64))
    p0.grad = torch.full((64,), 1.0, dtype=torch.float64)
    p1.grad = torch.full((64,), 1e6, dtype=torch.float64)
    opt = ft.SGD([p0], lr=1.0)
    group, stop = opt.param_groups[0], threading.Event()

    def stepper():
        while not stop.is_set():
            try:
                opt.step()
            except RuntimeError:
                pass
    threads = [threading.Thread(target=stepper) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(2000):
        group["params"] = [p1] if i % 2 == 0 else [p0]
    stop.set()
    for t in threads:
        t.join()
    a, b = p0.detach(), p1.detach()
    assert float(a[0]) == int(a[0]) and abs(float(a[0])) < 1e6      # steps of -1 only
    assert float(b[0]) % 1e6 == 0                                    # steps of -1e6 only
    assert torch.equal(a, a[0].expand(64)) and torch.equal(b, b[0].expand(64))


def test_parameter_memory_reshaped_or_transposed():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = ft.SGD([p], lr=1.0, momentum=0.9)
    p.grad = torch.ones(4)
    opt.step()
    p.data = p.data.view(2, 2)            # the same memory, another shape: state kept
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(p.detach(), torch.full((2, 2), -2.9))
    p.data = p.data.t()                   # the same memory, not contiguous: named, nothing written
    p.grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"\['params'\]\[0\] is not contiguous"):
        opt.step()
    assert torch.equal(p.detach(), torch.full((2, 2), -2.9))


def test_state_reset_snapshot_and_8bit_names():
    p = torch.nn.Parameter(torch.ones(5000))
    p.grad = torch.ones(5000)
    opt = ft.Adam([p], lr=0.1)
    opt.step()
    snapshot = opt.state_dict()
    opt.step()
    assert float(snapshot["state"][0]["step"]) == 1.0    # a snapshot: counters and buffers alike
    assert torch.equal(snapshot["state"][0]["exp_avg"], torch.full((5000,), 0.1))
    opt.state = collections.defaultdict(dict)               # torch's reset idiom
    assert len(opt.state) == 0 and opt.state[p] == {}
    opt.step()
    assert float(opt.state[p]["step"]) == 1.0
    eight = ft.Adam([p], lr=0.1, state_dtype="8bit")
    eight.step()
    sd = eight.state_dict()
    assert {"exp_avg_codes", "exp_avg_absmax"} <= set(sd["state"][0]) and "exp_avg" not in sd["state"][0]
    theirs = torch.optim.Adam([torch.nn.Parameter(torch.ones(5000))], lr=0.1)
    theirs.load_state_dict(sd)
    theirs.param_groups[0]["params"][0].grad = torch.ones(5000)
    with pytest.raises(KeyError):          # torch.optim cannot read 8-bit codes as moments
        theirs.step()


def test_errors_name_torchs_parameter():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(6, 3))
    opt = ft.SGD([a, b], lr=0.1, momentum=0.9)
    b.grad = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.ones(2, 3), (6, 3))
    with pytest.raises(ValueError, match=r"momentum must be 0 for param_groups\[0\]\['params'\]\[1\]"):
        opt.step()
    with pytest.raises(TypeError, match=r"^Adam\(\): got an unexpected keyword argument 'foo'"):
        ft.Adam([a], foo=1)


def test_new_memory_then_load_state_dict_keeps_the_loaded_master():
    """bfloat16 weights with master weights, resumed through p.data = saved, then the
    optimizer's state dict: the loaded master is the one stepped."""
    torch.manual_seed(0)
    init = torch.randn(300).to(torch.bfloat16)
    grads = [torch.randn(300).to(torch.bfloat16) for _ in range(4)]
    p = torch.nn.Parameter(init.clone())
    opt = ft.AdamW([p], lr=1e-2)
    for g in grads[:2]:
        p.grad = g
        opt.step()
    saved_weights, sd = p.detach().clone(), copy.deepcopy(opt.state_dict())
    for g in grads[2:]:
        p.grad = g
        opt.step()
    q = torch.nn.Parameter(init.clone())
    again = ft.AdamW([q], lr=1e-2)
    q.data = saved_weights.clone()
    again.load_state_dict(sd)
    for g in grads[2:]:
        q.grad = g
        again.step()
    assert torch.equal(p.detach(), q.detach())
