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
