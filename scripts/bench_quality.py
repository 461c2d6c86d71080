"""Time to quality: single-scale L-BFGS for many steps against the default schedule.

For a few real pairs, both runs go through the same worker code as a gallery; each
output is then evaluated with one fixed loss (the default layers and weights, at the
full size, fp32), so settings that optimize something else are judged alike.

    python scripts/bench_quality.py [--size 256] [--single-steps 500] [--pairs 3]
                                    [--set scales=3 --set steps=100 ...] [--save DIR]
                                    [--schedule "scales=2 scale_steps=200 steps=120" ...]

`--set` changes the schedule under test (the default one unless set); each `--schedule`
adds another, compared with the same single-scale runs.

Target: the default reaches a total loss no higher than the single-scale run's in at
most a third of its time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from nst_batch import images
from nst_batch.manifest import load_manifest
from nst_batch.params import Params
from nst_batch.plan import plan
from nst_batch.stylize import _Objective, style_targets
from nst_batch.worker import Worker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
PAIRS = [
    ("chelsea.png", "starry_night.jpg"),
    ("astronaut.png", "the_scream.jpg"),
    ("rocket.jpg", "shipwreck.jpg"),
    ("coffee.png", "woman-with-hat-matisse.jpg"),
]


def run(folder: Path, name: str, content: str, style: str, params: dict[str, object]) -> float:
    """Stylize one pair in-process; returns the seconds of the whole task."""
    manifest = folder / f"{name}.yaml"
    doc = {
        "output": "out",
        "content": [str(EXAMPLES / "content" / content)],
        "style": [str(EXAMPLES / "style" / style)],
        "params": params,
        "name": f"{{content}}__{{style}}__{name}",
        "format": "png",
    }
    manifest.write_text(yaml.safe_dump(doc))
    (task,) = plan(load_manifest(manifest))
    worker = Worker("cuda" if torch.cuda.is_available() else "cpu", "bench")
    worker.model(task)  # the model build is not the schedule's time
    start = time.perf_counter()
    outcome = worker.run(task)
    assert outcome.status == "done", outcome.error
    return time.perf_counter() - start


@torch.no_grad()
def fixed_loss(vgg, content_path: Path, style_path: Path, output: Path, size: int) -> float:
    """The default objective (layers, weights, fp32) of `output` at full size."""
    device = next(vgg.parameters()).device
    params = Params(size=size)
    out = images.to_tensor(images.load_image(output)).to(device)
    h, w = out.shape[-2:]
    content = images.to_tensor(images.resize(images.load_image(content_path), (w, h))).to(device)
    style_image = images.load_image(style_path)
    style_size = images.scaled_style_size(style_image.size, size, 1.0)
    style = images.to_tensor(images.resize(style_image, style_size)).to(device)
    objective = _Objective(vgg, content, style_targets(vgg, style, params), params)
    features = vgg(out, sorted(objective.layers))
    return float(objective.terms(features, out).sum())


def main() -> None:
    from nst_batch.vgg import build_vgg19

    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512 if gpu else 256)
    parser.add_argument("--single-steps", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the schedule under test (default: the defaults)")  # fmt: skip
    parser.add_argument("--schedule", action="append", default=[], metavar="'K=V K=V'",
                        help="another schedule to compare (repeatable)")  # fmt: skip
    parser.add_argument("--save", type=Path, help="copy the outputs here")
    args = parser.parse_args()
    schedules = [_schedule(args.size, args.set)]
    schedules += [_schedule(args.size, text.split()) for text in args.schedule]
    single = {"size": args.size, "steps": args.single_steps, "scales": 1}
    print(f"{args.size} px on {'cuda' if gpu else 'cpu'}; single-scale: {args.single_steps} steps")
    vgg = build_vgg19("original", Params().content_layers + Params().style_layers)
    if gpu:
        vgg = vgg.cuda()
    met = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def measure(content: str, style: str, name: str, params: dict[str, object]):
            seconds = run(folder, name, content, style, params)
            output = folder / "out" / f"{Path(content).stem}__{Path(style).stem}__{name}.png"
            loss = fixed_loss(
                vgg, EXAMPLES / "content" / content, EXAMPLES / "style" / style, output, args.size
            )
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / output.name).write_bytes(output.read_bytes())
            return loss, seconds

        pairs = PAIRS[: args.pairs]
        if gpu:  # cuDNN autotunes each shape on first use: not a cost of the first run timed
            deepest = max(int(str(s.get("scales", 1))) for s in schedules)
            for pair in pairs:
                for precision in {str(s.get("precision", "fp32")) for s in [single, *schedules]}:
                    warm = {"size": args.size, "steps": 3, "scales": deepest, "scale_steps": 3}
                    run(folder, "warmup", *pair, {**warm, "precision": precision})
        singles = {pair: measure(*pair, "single", single) for pair in pairs}
        for number, schedule in enumerate(schedules):
            described = ", ".join(f"{k}={v}" for k, v in schedule.items() if k != "size")
            print(f"\nschedule: {described or 'defaults'}")
            print(f"{'pair':>36} {'single loss':>12} {'s':>7} {'schedule loss':>14} {'s':>7} "
                  f"{'loss ratio':>10} {'time ratio':>10}")  # fmt: skip
            ok = True
            for content, style in pairs:
                l1, s1 = singles[content, style]
                l2, s2 = measure(content, style, f"schedule{number}", schedule)
                ok &= l2 <= l1 and s2 <= s1 / 3
                print(f"{content + ' x ' + style:>36} {l1:>12.4g} {s1:>7.1f} {l2:>14.4g} "
                      f"{s2:>7.1f} {l2 / l1:>10.3f} {s2 / s1:>10.3f}")  # fmt: skip
            print("target met" if ok else "target missed")
            met.append(ok)
    if len(schedules) > 1:
        print(f"\n{sum(met)} of {len(schedules)} schedules met the target")


def _schedule(size: int, items: list[str]) -> dict[str, object]:
    """{size, KEY: VALUE...} from KEY=VALUE items (values parsed as YAML)."""
    schedule: dict[str, object] = {"size": size}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench_quality: {item!r} is not KEY=VALUE")
        schedule[key] = yaml.safe_load(value)
    return schedule


if __name__ == "__main__":
    main()
