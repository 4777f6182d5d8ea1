"""Two switches measured side by side in one process on the seed's 784-1000-2 MLP, batch 32, CPU:
fused vs default Adam (optimizer step alone and whole training step), and torch.compile on vs off (whole
training step; compilation time reported apart). Prints JSON.

    python -m benchmarks.optimizer_compile
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import save
from vae_lightning.losses import SeedLoss
from vae_lightning.nets.mlp import MLPVAE
from vae_lightning.priors import StandardNormal


def step_rate(net, optimizer, data, steps, warmup=30) -> float:
    loss_fn, prior = SeedLoss(), StandardNormal(net)
    order = torch.randperm(len(data)).split(32)
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x = data[order[step % len(order)]]
        terms = loss_fn(net, prior, x, 1e-4)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def optimizer_step_rate(optimizer_factory, steps=500) -> float:
    torch.manual_seed(0)
    net = MLPVAE((1, 28, 28), [1000], 2)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    optimizer = optimizer_factory(net.parameters())
    for _ in range(20):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    data = torch.rand(32 * 100, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    adam = {"lr": 1e-3, "eps": 1e-6}
    result = {"benchmark": "optimizer_and_compile", "model": "mlp 784-1000-2, batch 32, CPU"}
    fused_opt = optimizer_step_rate(lambda p: torch.optim.Adam(p, fused=True, **adam))
    plain_opt = optimizer_step_rate(lambda p: torch.optim.Adam(p, **adam))
    result["adam_optimizer_steps_per_s"] = {
        "fused": round(fused_opt),
        "default": round(plain_opt),
        "speedup": round(fused_opt / plain_opt, 2),
    }
    rates = {"fused": 0.0, "default": 0.0}
    for _ in range(2):  # alternate, best of two, so drifts in machine load hit both alike
        for name, fused in (("fused", True), ("default", False)):
            torch.manual_seed(0)
            net = MLPVAE((1, 28, 28), [1000], 2)
            rate = step_rate(net, torch.optim.Adam(net.parameters(), fused=fused, **adam), data, 1000)
            rates[name] = max(rates[name], rate)
    result["training_steps_per_s_by_adam"] = {k: round(v, 1) for k, v in rates.items()} | {
        "speedup": round(rates["fused"] / rates["default"], 2)
    }
    torch.manual_seed(0)
    eager = MLPVAE((1, 28, 28), [1000], 2)
    compiled = MLPVAE((1, 28, 28), [1000], 2)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    start = time.perf_counter()
    step_rate(compiled, torch.optim.Adam(compiled.parameters(), fused=True, **adam), data, 1, warmup=2)
    compile_s = time.perf_counter() - start
    eager_rate = compiled_rate = 0.0
    for _ in range(2):
        eager_rate = max(
            eager_rate, step_rate(eager, torch.optim.Adam(eager.parameters(), fused=True, **adam), data, 1000)
        )
        compiled_rate = max(
            compiled_rate, step_rate(compiled, torch.optim.Adam(compiled.parameters(), fused=True, **adam), data, 1000)
        )
    result["training_steps_per_s_by_compile"] = {
        "eager": round(eager_rate, 1),
        "compiled": round(compiled_rate, 1),
        "speedup": round(compiled_rate / eager_rate, 2),
        "compile_s": round(compile_s, 1),
    }
    save("optimizer_compile", result)


if __name__ == "__main__":
    main()
