"""The bundled demo: the family registry and a few derived links (run by `make demo`)."""

import warnings

import dekc
from dekc.cli import main as dekc_cli

print(f"dekc {dekc.__version__}: registered exponential families\n")
dekc_cli(["families"])

for name, kwargs in [
    ("gaussian", {"reparam": "relu"}),
    ("bernoulli", {"reparam": "identity"}),
    ("poisson", {"activation": "sigmoid"}),
    ("gamma", {"reparam": "-exp(-eta)", "k": 2}),
]:
    print(f"\n$ dekc.link({name!r}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dekc.DekcWarning)
        print(dekc.link(name, **kwargs))

print("\n$ dekc.gaussian_expectation('relu', 'relu')  # derived by Price's theorem")
E = dekc.gaussian_expectation("relu", "relu")
print(f"method {E.method}\nE[relu(u) relu(v)] = {E.expr}")
value = E(1.3, 0.7, 0.4)
ref = dekc.reference.expectation("relu", "relu", 1.3, 0.7, 0.4, dps=30)
print(f"at a=1.3, b=0.7, c=0.4: {value!r}  (mpmath reference {ref}, relative error {float(abs(value - ref) / ref):.1e})")
