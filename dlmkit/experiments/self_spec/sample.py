"""Phase sample of train_self_spec.py: for each NFE budget, the dtau whose mean NFE meets it
(calibrated on rows that are not evaluated), then self-speculative samples, and the
cosine-window draft alone (every draft accepted) at its own exact budget as a control (at a
budget self-spec cannot get down to, at the calls self-spec spends there: `control_steps`);
every sample scored by the judge as it is drawn."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dlmkit.decoding.self_spec_sampler import calibrate_dtau, self_spec_sample, steps_if_all_accepted
from dlmkit.errors import UserError
from dlmkit.experiments.self_spec.scoring import score_samples
from dlmkit.models.self_spec import load_self_spec
from dlmkit.results import echo, portable_source
from dlmkit.seeds import budget_row_seed, calibration_seed

METHODS = ("self_spec", "draft_only")


def control_dtau(total: int, budget: int) -> float:
    """The largest dtau whose all-accepted schedule takes at least `budget` steps (exact NFE for
    the draft-only control when the budget is reachable)."""
    lo, hi = 1e-4, 1.0
    if steps_if_all_accepted(total, hi) >= budget:
        return hi
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if steps_if_all_accepted(total, mid) >= budget:
            lo = mid
        else:
            hi = mid
    return lo


def control_steps(budget: int, calibration: dict) -> int:
    """The draft-alone control's step count: the budget, or where self-spec cannot get down to it
    (widest windows still take more calls: verification rejects), the calls self-spec spends on
    the calibration rows, rounded up: the control then never has fewer calls than self-spec."""
    return budget if calibration["reachable"] else max(budget, math.ceil(calibration["calibration_nfe"]))


def row_generators(seed: int, budget: int, indices: list[int]) -> list[torch.Generator]:
    """One generator per sample, shared by both methods at one budget (paired comparison)."""
    return [torch.Generator().manual_seed(budget_row_seed(seed, budget, i)) for i in indices]


def sample_budgets(run, *, model, cfg, score, device: str) -> None:
    """Calibrate dtau to each NFE budget, then draw and score both methods' samples (resumable)."""
    n, length, batch_size = cfg.samples, cfg.length, cfg.spec_batch_size
    mask = model.mask_id

    calibration = {row["target_nfe"]: row for row in run.summary["tables"].get("self_spec_dtau", [])
                   if row.get("calibration_samples") == cfg.calibration_samples}
    for budget in cfg.nfe:
        if budget in calibration:
            continue
        echo(f"self-spec: calibrating dtau for NFE {budget}")
        canvas = torch.full((cfg.calibration_samples, length), mask, dtype=torch.long, device=device)
        floor = control_dtau(length, budget)  # all accepted: exactly the budget; rejections only add steps
        found = calibrate_dtau(model, canvas, budget, seed=calibration_seed(cfg.seed), low=floor)  # rows never evaluated
        calibration[budget] = {"target_nfe": budget, "dtau": found["dtau"], "calibration_nfe": found["nfe"],
                               "reachable": found["reachable"], "calibration_samples": cfg.calibration_samples}
        run.add_table("self_spec_dtau", [calibration[b] for b in sorted(calibration)], echo=False)
    for budget in cfg.nfe:  # the control matches what self-spec spends (control_steps)
        steps = control_steps(budget, calibration[budget])
        calibration[budget].update(draft_only_steps=steps, draft_only_dtau=control_dtau(length, steps))
    run.add_table("self_spec_dtau", [calibration[b] for b in cfg.nfe])

    log = run.log("self_spec_samples")
    # A resumed run whose schedule changed (another control rule) redraws the samples of that cell only.
    wanted = {(m, b): calibration[b]["dtau" if m == "self_spec" else "draft_only_dtau"] for b in cfg.nfe for m in METHODS}
    stale = log.drop(lambda r: (r["method"], r["target_nfe"]) in wanted and r["dtau"] != wanted[(r["method"], r["target_nfe"])])
    if stale:
        echo(f"self-spec: {stale} samples were drawn with another window schedule; drawing them again")
    done = log.done_ids()
    work = [(budget, method, start) for budget in cfg.nfe for method in METHODS for start in range(0, n, batch_size)]
    bar = tqdm(work, desc="self-spec samples", unit="batch")
    for budget, method, start in bar:
        indices = [i for i in range(start, min(start + batch_size, n)) if f"{method}/{budget}/{i}" not in done]
        if not indices:
            continue
        bar.set_postfix(method=method, nfe=budget)
        dtau = wanted[(method, budget)]
        canvas = torch.full((len(indices), length), mask, dtype=torch.long, device=device)
        out = self_spec_sample(model, canvas, dtau, generator=row_generators(cfg.seed, budget, indices),
                               verify=method == "self_spec")
        scored = score(out.tokens.cpu().tolist())
        for row, (index, record) in enumerate(zip(indices, scored)):
            log.append({"id": f"{method}/{budget}/{index}", "method": method, "target_nfe": budget, "dtau": dtau,
                        "index": index, "nfe": int(out.nfe[row]), "causal_passes": int(out.causal_passes[row]),
                        "drafted": int(out.drafted[row]), "accepted": int(out.accepted[row]),
                        "revealed_per_step": out.revealed_per_step[row], **record})


def weights_digest(directory: Path) -> str:
    """sha256 of the trained parts: samples drawn with other weights must not be mixed in on resume."""
    return hashlib.sha256((Path(directory) / "model.safetensors").read_bytes()).hexdigest()[:16]


def phase_sample(run, ctx) -> None:
    """Load the trained parts (settings.trained), refuse to mix samples of other weights, then sample."""
    cfg, device, dtype, trained = ctx.settings, ctx.device, ctx.dtype, ctx.settings.trained
    mdlm, tokenizer, judge, judge_tokenizer = ctx.models()
    model = load_self_spec(trained, mdlm, device=device, dtype=dtype)
    digest = weights_digest(trained)
    before = run.summary["config"].get("self_spec_weights")
    if before and before != digest and run.log("self_spec_samples").records():
        raise UserError(f"{run.dir} holds samples of other self-spec weights ({before}, now {digest}); remove "
                        f"{run.dir / 'self_spec_samples.jsonl'} and the self_spec_dtau table, or pass another --out")
    run.summary["config"]["self_spec_weights"] = digest
    run.summary["config"]["self_spec_source"] = portable_source(str(trained))
    sample_budgets(run, model=model, cfg=cfg, device=device,
                 score=lambda rows: score_samples(rows, tokenizer, judge, judge_tokenizer, cfg.length))
