"""Write the documentation's Performance table (docs/performance.md) and `benchmarks/README.md` from the figures
the benchmarks saved in `benchmarks/results/` (run them first: `python -m benchmarks.<name>`).

    python -m benchmarks.summary
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def rows() -> list[tuple[str, str, str, str]]:
    """(what, figure, target, command) for each saved result."""
    table = []
    for name, label in (
        ("train_step_haskell_mnist", "784-1000-2 MLP, batch 32"),
        ("train_step_faces_dogs_conv", "conv VAE, 64x64x3, batch 64"),
        ("train_step_faces_dogs_ladder", "conv ladder VAE, 64x64x3, batch 64"),
    ):
        result = load(name)
        if result:
            rates = result["steps_per_s"]
            command = "train_step" + ("" if "haskell" in name else f" --experiment {result['experiment']}")
            command += f" --threads {result['threads_per_column']}" if result.get("threads_per_column") else ""
            command += f" --repeats {result['repeats']}" if result.get("repeats", 3) != 3 else ""
            table.append(
                (
                    f"training steps/s, {label}: plain loop / bare LightningModule / framework",
                    f"{rates['plain']} / {rates['bare']} / {rates['framework']}",
                    "",
                    command,
                )
            )
            targets = result["targets"]  # as train_step.py states them
            plain = targets["framework/plain (MLP, batch 32)" if "haskell" in name else "framework/plain (conv)"]
            table.append(
                (
                    f"framework / bare LightningModule ({label})",
                    f"{result['framework_over_bare']:.2f}",
                    f">= {targets['framework/bare']}",
                    command,
                )
            )
            table.append(
                (f"framework / plain loop ({label})", f"{result['framework_over_plain']:.2f}", f">= {plain}", command)
            )
    family = load("train_step_models")
    if family:
        target = family["targets"]["framework/bare (every model)"]
        threads = f" --threads {family['threads_per_column']}" if family.get("threads_per_column") else ""
        for name, result in family["models"].items():
            rates = result["steps_per_s"]
            shown = " ".join(result["overrides"]) or "the ELBO, standard normal, Bernoulli"
            table.append(
                (
                    f"`mnist_nll` with {shown}: steps/s (plain loop / bare / framework) and framework / bare",
                    f"{rates['plain']} / {rates['bare']} / {rates['framework']}: {result['framework_over_bare']:.2f}",
                    f">= {target}",
                    f"train_step --models {name}{threads}",
                )
            )
    overhead = load("run_overhead")
    if overhead:
        for preset in overhead["presets"]:
            table.append(
                (
                    f"a `{preset['preset']}` run beyond its training steps (validation, checkpoints, pictures, end)",
                    percent(preset["overhead_of_whole_run"]),
                    "<= 10%",
                    "run_overhead",
                )
            )
    diagnostics = load("diagnostics")
    if diagnostics:
        for preset in diagnostics["presets"]:
            table.append(
                (
                    f"pictures of a `{preset['preset']}` run: one drawing / the end of the run / share of the run",
                    f"{preset['seconds_per_drawing']:.2f} s / {preset['end_of_run_seconds']:.2f} s / "
                    f"{percent(preset['share_of_run'])}",
                    "< 10% (haskell_*)" if preset["preset"].startswith("haskell") else "",
                    "diagnostics",
                )
            )
    evaluation = load("evaluation")
    if evaluation:
        for run in evaluation["runs"]:
            table.append(
                (
                    f"`evaluate` on {run['test_images']:,} test images (mnist_nll, k = {run['nll_samples']}), mutual "
                    f"information {'on' if run['mutual_info'] else 'off'}: peak memory / time",
                    f"{run['peak_rss_gb']:.2f} GB / {run['seconds']:.0f} s",
                    "< 1.5 GB at 10,000" if run["mutual_info"] else "",
                    "evaluation",
                )
            )
        if "mutual_info_spread" in evaluation:
            spread = evaluation["mutual_info_spread"]
            table.append(
                (
                    "`test/mutual_info` over draws of its 2,000-posterior subsample: mean ± standard deviation",
                    f"{spread['mean']:.3f} ± {spread['std']:.3f} nats",
                    "",
                    "evaluation",
                )
            )
    data = load("data")
    if data:
        rates = data["preprocess_images_per_s"]
        faces = next(v for k, v in rates.items() if k.startswith("utkface"))
        table.append(("photo preprocessing, UTKFace 200x200 -> 64x64 RGB", f"{faces:,} images/s", ">= 3,000", "data"))
        table.append(
            (
                "preprocessed cache: build / load",
                f"{data['cache']['build_s']} s / {data['cache']['load_s']} s",
                ">= 10x",
                "data",
            )
        )
    memory = load("memory")
    if memory:
        table.append(
            (
                "peak memory of `haskell_dogpeople` (7,000 photos): preparing / training",
                f"{memory['data_preparation']['peak_rss_gb']:.2f} / "
                f"{memory['training_from_cache']['peak_rss_gb']:.2f} GB",
                "< 2 GB",
                "memory",
            )
        )
    threads = load("threads")
    if threads:
        for preset, cases in threads["results"].items():
            for label in ("torch default", "framework"):
                ratios = " / ".join(
                    f"{cases[f'{label}, {busy} busy']['ratio_to_idle_default']:.2f}"
                    for busy in ("0", "1", "2", "1 later")
                )
                table.append(
                    (
                        f"{preset}, {label} threads: speed idle / next to 1 busy process / 2 / 1 started later, "
                        "over torch's default on the idle machine",
                        ratios,
                        "",
                        "threads",
                    )
                )
    optim = load("optimizer_compile")
    if optim:
        fused = optim.get("training_steps_per_s_by_adam", {})
        if fused:
            table.append(("fused Adam: whole training step speed-up", f"{fused['speedup']}x", "", "optimizer_compile"))
        compiled = optim["training_steps_per_s_by_compile"]
        table.append(
            ("torch.compile of the 784-1000-2 MLP on the CPU", f"{compiled['speedup']}x", "", "optimizer_compile")
        )
    recipe = load("faces_recipe")
    if recipe:
        variants = recipe["variants"]
        for name, v in variants.items():
            table.append(
                (
                    f"faces recipe (64x64 conv, batch 64 unless named), training images/s: {name}",
                    f"{v['images_per_s']} ({v['images_per_s_vs_float32']:.2f}x float32)",
                    "",
                    "faces_recipe",
                )
            )
    demo = load("demo")
    if demo:
        work, trip = demo["server_work_ms"], demo["round_trip_ms"]
        table.append(
            (
                "web demo, 64x64 conv: a slider move, server work / HTTP round trip (gradio_client)",
                f"{work['slider']:.0f} / {trip['slider']:.0f} ms",
                "<= 100 ms server",
                "demo",
            )
        )
        table.append(
            (
                "web demo: a 12 MP photo uploaded to its first decoded image, round trip (server work)",
                f"{trip['upload'] / 1000:.2f} s ({work['upload'] / 1000:.2f} s)",
                "<= 1 s",
                "demo",
            )
        )
        table.append(("web demo: GIF and strip of 25 frames, round trip", f"{trip['gif'] / 1000:.2f} s", "", "demo"))
    return table


def main() -> None:
    table = rows()
    lines = ["| what | measured | target | `python -m benchmarks.` |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {figure} | {target} | `{command}` |" for what, figure, target, command in table]
    text = "\n".join(lines)
    page = ROOT / "docs" / "performance.md"
    head, rest = page.read_text().split(START)
    page.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    details = [
        "# Benchmarks",
        "",
        "Each script prints JSON and saves it in `results/<name>.json`; "
        "`python -m benchmarks.summary` turns those into the Performance table of docs/performance.md.",
        "",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        machine = result.get("machine", {})
        if isinstance(machine, str):  # models.json says it in words, with its own date
            machine = {"date": result.get("date", "?"), "platform": machine}
        details += [
            f"## `{path.stem}`",
            "",
            f"Measured on {machine.get('date', '?')}: {machine.get('cpu_threads', '?')} CPU threads, "
            f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}, torch {machine.get('torch', '?')}, "
            f"Lightning {machine.get('lightning', '?')}.",
            "",
            "```json",
            json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2),
            "```",
            "",
        ]
    (ROOT / "benchmarks" / "README.md").write_text("\n".join(details))
    print(text)


if __name__ == "__main__":
    main()
