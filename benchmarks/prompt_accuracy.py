"""Prompt accuracy of a text-to-image run on captioned digit pairs (issue 16), against the guidance scale.

    python -m ddpm_jax train-classifier --dataset digits --workdir runs/classifier_digits
    python benchmarks/prompt_accuracy.py --workdir runs/text_pairs --classifier runs/classifier_digits \
        --guidance 1 2 3 5 --per-prompt 4 --out benchmarks/results/prompt_accuracy_digits.json \
        --grid docs/text_to_image_prompts.png

For each of the 100 ordered pairs (L, R) and both templates ("L left of R", "R right of L") it samples
--per-prompt canvases and classifies their left and right halves with the project's digits classifier; a sample
is right when both halves are the asked digits. Rows: seen pairs (90) and held-out pairs (R = (L + 3) mod 10, 10),
per template; one column per guidance scale. The same classifier on real test canvases gives the ceiling. Also
reports the autoencoder's reconstruction error (latent.json) and the time of each training stage (metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from ddpm_jax import classifier, data, latent, runs, text_pairs, text_to_image, viz


def both_right(net, canvases: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """bool [N]: the classifier's digit of each canvas half equals the asked (left, right) digits [N, 2]."""
    w = canvases.shape[2] // 2
    left = np.argmax(net(canvases[:, :, :w])["logits"], -1)
    right = np.argmax(net(canvases[:, :, w:])["logits"], -1)
    return (left == digits[:, 0]) & (right == digits[:, 1])


def prompt_set(per_prompt: int):
    """(prompts [N], digits [N, 2], template [N], held_out [N]): every ordered pair in both templates, repeated."""
    rows = [(text_pairs.caption(a, b, t), a, b, t) for t in range(2) for a in range(10) for b in range(10)]
    rows = [r for r in rows for _ in range(per_prompt)]
    digits = np.array([(a, b) for _, a, b, _ in rows], np.int32)
    return ([r[0] for r in rows], digits, np.array([r[3] for r in rows]),
            text_pairs.held_out(digits[:, 0], digits[:, 1]))


def img2img_rows(run, net, strengths, guidance: float, seed: int, per_pair: int = 4) -> dict:
    """Edit samples of "L left of R" (the 10 pairs R = (L + 1) mod 10, `per_pair` each) towards "L left of R'",
    R' = (R + 1) mod 10 (all seen pairs): per strength, the fraction of edits that classify as the target pair and
    as the source pair; "source" is the fraction of the unedited samples that are right."""
    source = np.array([(a, (a + 1) % 10) for a in range(10) for _ in range(per_pair)], np.int32)
    target = np.stack([source[:, 0], (source[:, 1] + 1) % 10], axis=1)
    prompts, edits = ([text_pairs.caption(a, b, 0) for a, b in pairs] for pairs in (source, target))
    images = text_to_image.sample(run, prompts, jax.random.PRNGKey(seed + 2), guidance_scale=guidance)
    rows = dict(pairs=len(source), guidance=guidance, source=float(np.mean(both_right(net, images, source))))
    for s in strengths:
        edited = text_to_image.img2img(run, images, edits, jax.random.PRNGKey(seed + 3), strength=s,
                                       guidance_scale=guidance)
        rows[str(s)] = dict(target=float(np.mean(both_right(net, edited, target))),
                            source=float(np.mean(both_right(net, edited, source))))
        print(f"img2img strength {s}: target {rows[str(s)]['target']:.3f}, source {rows[str(s)]['source']:.3f}")
    return rows


def stage_seconds(path: str) -> float | None:
    """A training stage's seconds from its metrics.jsonl: the span of the log records, plus the steps before the
    first record at the steady rate between the records, plus the first call's compile time."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    first, last = records[0], records[-1]
    per_step = (last["time"] - first["time"]) / max(last["step"] - first["step"], 1)
    return last["time"] - first["time"] + first["step"] * per_step + (first.get("compile_seconds") or 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--classifier", required=True, help="a train-classifier directory for the single digits")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    p.add_argument("--per-prompt", type=int, default=4, help="samples per (pair, template)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON")
    p.add_argument("--grid", default=None, help="PNG: held-out and seen prompts (rows) x samples at --grid-guidance")
    p.add_argument("--grid-guidance", type=float, default=3.0)
    p.add_argument("--img2img-strengths", type=float, nargs="*", default=[0.4, 0.6, 0.8],
                   help="edit samples of 'L left of R' to 'L left of R+1' at these strengths (guidance "
                        "--grid-guidance); none: skip")
    args = p.parse_args()

    run = runs.load_run(args.workdir)
    net = classifier.feature_network(args.classifier)
    test = data.load_arrays(run.config.data.source, "test", data_dir=run.config.data.get("data_dir", None))
    ceiling = float(np.mean(both_right(net, data.to_float(test.images, test.max_value), test.labels)))
    prompts, digits, template, held = prompt_set(args.per_prompt)
    result = dict(workdir=args.workdir, step=run.step, classifier=net.name, per_prompt=args.per_prompt,
                  sampler=run.config.sample.sampler, num_steps=run.config.sample.num_steps,
                  real_test_canvases_both_right=ceiling, autoencoder=latent.read_report(args.workdir),
                  stage_seconds=dict(autoencoder=stage_seconds(os.path.join(args.workdir, "autoencoder",
                                                                            "metrics.jsonl")),
                                     diffusion=stage_seconds(os.path.join(args.workdir, "metrics.jsonl"))),
                  load_average=os.getloadavg(), rows={})
    for w in args.guidance:
        start = time.perf_counter()
        images = text_to_image.sample(run, prompts, jax.random.PRNGKey(args.seed), guidance_scale=w)
        seconds = time.perf_counter() - start
        right = both_right(net, images, digits)
        for name, sel in (("seen", ~held), ("held-out", held)):
            for t in (0, 1):
                key = f"{name}, template {t} ({text_pairs.TEMPLATES[t]})"
                result["rows"].setdefault(key, {})[str(w)] = float(np.mean(right[sel & (template == t)]))
            result["rows"].setdefault(f"{name}, both templates", {})[str(w)] = float(np.mean(right[sel]))
        result.setdefault("sample_seconds", {})[str(w)] = seconds
        print(f"guidance {w}: seen {np.mean(right[~held]):.3f}, held-out {np.mean(right[held]):.3f} "
              f"({len(prompts)} samples in {seconds:.1f}s)", flush=True)
    print("| prompts | " + " | ".join(f"w = {w:g}" for w in args.guidance) + " |")
    print("|---|" + "---|" * len(args.guidance))
    for key, by_w in result["rows"].items():
        print(f"| {key} | " + " | ".join(f"{100 * by_w[str(w)]:.1f}%" for w in args.guidance) + " |")
    print(f"real test canvases (classifier ceiling): {100 * ceiling:.1f}%")
    if args.grid:
        pairs = [(a, (a + 3) % 10) for a in range(0, 10, 2)] + [(a, (a + 5) % 10) for a in range(1, 10, 2)]
        grid_prompts = [text_pairs.caption(a, b, t) for a, b in pairs for t in (0, 1)]
        n = 8
        images = text_to_image.sample(run, [q for q in grid_prompts for _ in range(n)], jax.random.PRNGKey(1),
                                      guidance_scale=args.grid_guidance)
        viz.save_grid(images, args.grid, nrow=n, upscale=8)
        result["grid"] = dict(path=args.grid, guidance=args.grid_guidance, prompts=grid_prompts)
    if args.img2img_strengths:
        result["img2img"] = img2img_rows(run, net, args.img2img_strengths, args.grid_guidance, args.seed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
