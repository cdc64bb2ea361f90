"""Phase drafted: the partial DLM's own predictions as free drafts for the gaps.

At the cutoff Dream's last forward has a distribution at every position it left masked;
phase A keeps, at each fraction's cutoff and at the adaptive stop (settings.ADAPTIVE), the
argmax and its probability there (PartialStates.drafts). The gap-filler verifies them the
way greedy speculative decoding does (decoding/drafted.py), so its output is the forced
decoder's, token for token, in fewer sequential passes.

Per prompt, gap-filler (ar_small; ar_control, which knows what Dream knows, beside it), stop
(each fraction, and the adaptive rule) and draft filter (all drafts, or only those Dream
gives at least `min_conf`), with the committed_end rule:

  positions          tokens the gap-filler emitted (the forced decoder's output length)
  forced_passes      the forced decoder's sequential passes (one per gap position it reaches)
  drafted_passes     the drafted decoder's; passes_vs_one_per_position = positions / passes
  tokens_equal       drafted output == forced output (tokens, anchor flags, stop reason)
  drafts_sent / fed / accepted
  payload            what travels beside the anchors: the deployable anchors' gzip template
                     (as phase payload: every committed position up to the first committed
                     end) and the drafts, which are sent up to the first drafted end token
                     and before the committed end: draft_varint_bytes (LEB128 position gaps
                     and ids, as pack_anchors) alone, and template_with_drafts_bytes, one gzip
                     stream of the anchor template and the draft template ("\\x01" between;
                     the NULL marks open positions in both) - the bytes the drafted mode sends

The forced output is phase B's committed_end fill of the same anchors (its tokens, anchor
flags, stop reason and passes; ar_small's fill at the adaptive stop is the one adaptive fill
B keeps tokens of, so ar_control runs at the fractions only); the drafted fill runs alone
(batch 1, the pipeline's setting; the tests compare batched with unbatched), over the
evaluation set only, ar_control with every draft only. Wall time is not measured here: the timing phase times the pipeline
with either fill, and benchmarks/bench_drafted.py measures the ratio of the two decoders
with repeats and spread.

table drafted_gap_fill: one row per gap-filler, stop and draft filter over the evaluation set.
"""

from __future__ import annotations

import gzip


from dlmkit.anchors import Anchors, anchors_after, pack_anchors, template_text
from dlmkit.data.benchmarks import is_eval_item
from dlmkit.data.chat import chat_prompt_ids
from dlmkit.decoding.drafted import drafted_forced_decode
from dlmkit.decoding.early_stop import sent_drafts
from dlmkit.errors import UserError
from dlmkit.experiments.inverse.fill import pick, records_from_fills
from dlmkit.experiments.inverse.payload import deployable_anchors
from dlmkit.experiments.inverse.settings import ADAPTIVE
from dlmkit.metrics.scoring import mean

ROLES = ("ar_small", "ar_control")
MIN_CONFS = (0.0, 0.9)  # 0: every draft; else only drafts Dream gives at least this probability
TABLE = "drafted_gap_fill"


def stops(context) -> list[tuple[str, float | None]]:
    """(draft_steps key, fraction) of each stop the phase runs: the fractions, then the adaptive rule."""
    return [(str(f), f) for f in context.fractions] + [("adaptive", None)]


def _gzip_size(text: str) -> int:
    return len(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def draft_payload(anchors: Anchors, drafts: dict[int, int], decode) -> dict:
    """Bytes of the deployable anchors' template alone and with the drafts (see the module docstring)."""
    length = max([anchors.length] + [p + 1 for p in drafts])
    wide = Anchors(anchors.positions, anchors.tokens, length)
    draft_set = Anchors.from_mapping(drafts, length)
    try:
        anchor_text, draft_text = template_text(wide, decode), template_text(draft_set, decode)
        template = _gzip_size(template_text(anchors, decode))
        together = _gzip_size(anchor_text + "\x01" + draft_text)
    except UserError:  # a token decodes to the NULL the template reserves for gaps
        template = together = None
    return {"template_bytes": template, "template_with_drafts_bytes": together,
            "draft_varint_bytes": len(pack_anchors(draft_set, "varint")) if drafts else 0}


def forced_fill(b_record: dict, role: str, fraction: float | None) -> dict | None:
    """Phase B's committed_end fill of `role` at this stop (its tokens and passes), or None."""
    if fraction is not None:
        return pick(b_record, role, fraction, "committed_end")
    return next((f for f in b_record.get("adaptive", []) if f["model"] == role and f["stop_rule"] == ADAPTIVE.name
                 and "tokens" in f), None)


def drafted_record(context, item: dict, a_record: dict, b_record: dict) -> dict:
    record = {"id": item["id"], "task": item["task"], "difficulty": item["difficulty"], "eval": is_eval_item(item),
              "fractions": list(context.fractions), "adaptive": ADAPTIVE.name, "min_confs": list(MIN_CONFS),
              "models": list(ROLES), "rows": []}
    if not record["eval"]:  # the table reads the evaluation set only
        return record
    dlm_ends = context.dlm_end_ids()
    for key, fraction in stops(context):
        if key not in a_record.get("draft_steps", {}):
            raise UserError(f"phase A's record of {item['id']} has no drafts at {key}; rerun phase A with this "
                            f"dlmkit ({context.job.prog} --phase A --out {context.job.out} --overwrite)")
        steps = a_record["draft_steps"][key]
        canvas = anchors_after(a_record["commit_step"], a_record["tokens"], steps)
        deployable = deployable_anchors(canvas, dlm_ends)
        for role in ROLES:
            forced = forced_fill(b_record, role, fraction)
            if forced is None:  # phase B fills ar_control at the fractions only
                continue
            model, tokenizer = context.ar(role)
            prompt = chat_prompt_ids(tokenizer, item["prompt"])
            kwargs = dict(max_new_tokens=context.dream.max_new_tokens, rule="committed_end",
                          end_token_ids=context.ar_end_ids(role), batch_size=1)
            for min_conf in MIN_CONFS if role == ROLES[0] else MIN_CONFS[:1]:
                drafts = sent_drafts(a_record["drafts"][str(steps)], dlm_ends, min_conf)
                drafted = drafted_forced_decode(model, [prompt], [canvas.as_dict()], [drafts], **kwargs).rows[0]
                record["rows"].append({
                    "model": role, "stop": "fixed" if fraction is not None else ADAPTIVE.name, "fraction": fraction,
                    "dlm_steps": steps, "min_conf": min_conf, "positions": len(forced["tokens"]),
                    "forced_passes": forced["forward_passes"], "drafted_passes": drafted.forward_passes,
                    "tokens_equal": ((forced["tokens"], [bool(f) for f in forced["forced"]], forced["stop_reason"])
                                     == (drafted.tokens, drafted.forced, drafted.stop_reason)),
                    "drafts_sent": len(drafts), "drafts_fed": drafted.drafts_fed,
                    "drafts_accepted": drafted.drafts_accepted,
                    **draft_payload(deployable, drafts, context.dlm_tokenizer().decode)})
    return record


def _ratio(a, b):
    return a / b if a is not None and b else None


def drafted_table(records: list[dict]) -> list[dict]:
    out = []
    keys = dict.fromkeys((row["model"], row["stop"], row["fraction"], row["min_conf"]) for r in records
                         for row in r["rows"])
    for model, stop, fraction, min_conf in keys:
        rows = [row for r in records for row in r["rows"]
                if (row["model"], row["stop"], row["fraction"], row["min_conf"]) == (model, stop, fraction, min_conf)]
        positions, drafted = mean([r["positions"] for r in rows]), mean([r["drafted_passes"] for r in rows])
        forced = mean([r["forced_passes"] for r in rows])
        fed = sum(r["drafts_fed"] for r in rows)
        out.append({
            "model": model, "stop": stop, "fraction": fraction, "min_conf": min_conf, "n": len(rows),
            "dlm_steps": mean([r["dlm_steps"] for r in rows]), "positions": positions,
            "forced_passes": forced, "drafted_passes": drafted,
            "passes_vs_one_per_position": _ratio(positions, drafted),
            "forced_passes_vs_one_per_position": _ratio(positions, forced),
            "drafted_vs_forced_passes": _ratio(forced, drafted),
            "median_prompt_passes_vs_one_per_position": _median([_ratio(r["positions"], r["drafted_passes"])
                                                                 for r in rows if r["drafted_passes"]]),
            "tokens_equal_forced": mean([float(r["tokens_equal"]) for r in rows]),
            "drafts_sent": mean([r["drafts_sent"] for r in rows]),
            "acceptance": sum(r["drafts_accepted"] for r in rows) / fed if fed else None,
            "payload_bytes": mean([r["template_with_drafts_bytes"] for r in rows]),
            "template_bytes": mean([r["template_bytes"] for r in rows]),
            "draft_varint_bytes": mean([r["draft_varint_bytes"] for r in rows]),
        })
    return out


def drafted_by_task(records: list[dict]) -> list[dict]:
    """drafted_gap_fill_by_task: ar_small with every draft, per stop and task (where the passes go)."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        mine = [r for r in records if r["task"] == task]
        for row in drafted_table(mine):
            if row["model"] == ROLES[0] and row["min_conf"] == 0.0:
                rows.append({"task": task, **{k: row[k] for k in (
                    "stop", "fraction", "n", "positions", "forced_passes", "drafted_passes",
                    "passes_vs_one_per_position", "forced_passes_vs_one_per_position", "acceptance")}})
    return rows


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def phase_drafted(run, context) -> None:
    items = {i["id"]: i for i in context.items()}
    evaluation = records_from_fills(run, context, "drafted", TABLE,
                                    lambda a, b: drafted_record(context, items[a["id"]], a, b))
    run.summary["config"]["drafted"] = {"models": list(ROLES), "rule": "committed_end", "min_confs": list(MIN_CONFS),
                                        "adaptive": ADAPTIVE.name}
    if evaluation is None:
        return
    rows = drafted_table(evaluation)
    run.add_table(TABLE, rows)
    run.add_table(f"{TABLE}_by_task", drafted_by_task(evaluation), echo=False)
    for role in ROLES:
        every = [r for r in rows if r["model"] == role and r["min_conf"] == 0.0]
        run.note(f"{TABLE} ({role}, n={len(evaluation)}, every draft sent): positions per sequential AR pass "
                 + ", ".join(f"{'@' + format(r['fraction'], 'g') if r['fraction'] is not None else r['stop']} "
                             f"{_times(r['passes_vs_one_per_position'])} (forced decoder "
                             f"{_times(r['forced_passes_vs_one_per_position'])}, acceptance {r['acceptance'] or 0:.2f}, "
                             f"tokens equal {r['tokens_equal_forced']:.3f})" for r in every))


def _times(ratio: float | None) -> str:
    """A ratio for a note; None when no prompt had a gap left to fill (the anchors covered every answer)."""
    return "n/a (nothing left to fill)" if ratio is None else f"{ratio:.2f}x"


__all__ = ["MIN_CONFS", "draft_payload", "drafted_by_task", "drafted_record", "drafted_table", "phase_drafted", "stops"]
