"""zerograd's lean optimizers never import `torch._dynamo` (issue 18, target 3).

torch wraps `add_param_group`, `state_dict`, `load_state_dict` and `step` in helpers whose first
call imports dynamo (1-1.5 s, as long as `import torch`) although nothing is compiled; the lean
optimizers call the wrapped functions directly. Checked in a fresh interpreter, with the updates
still bitwise torch's own.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys, torch
from zerograd.fast.optimizers import Adam, AdamW, SGD
kinds = {"adam": (Adam, torch.optim.Adam, dict(lr=1e-2)), "adamw": (AdamW, torch.optim.AdamW, dict(lr=1e-2)),
         "sgd": (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9))}
lean_class, torch_class, options = kinds[sys.argv[1]]
weights = []
for cls in (lean_class, torch_class):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    optimizer = cls(model.parameters(), fused=True, **options)
    data = torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(1))
    for x in data:
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    state = optimizer.state_dict()
    optimizer.load_state_dict(state)
    weights.append([p.detach().clone() for p in model.parameters()])
    if cls is lean_class:
        dynamo = "torch._dynamo" in sys.modules
print(json.dumps({"dynamo": dynamo, "equal": all(torch.equal(a, b) for a, b in zip(*weights))}))
"""


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_lean_optimizers_train_without_importing_dynamo(kind: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=300,
                          check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"dynamo": False, "equal": True}
