"""Phase payload: how many bytes must travel from the DLM to the gap-filler?

Per prompt and fraction, the answer's anchors (positions < gen_len, as the published
anchor file keeps them) encoded three ways (dlmkit.anchors): the gzip template (the paper's
measure: anchor text with one NULL per open position, gzip level 9), LEB128 varints and fixed
uint32 pairs; beside them the answer itself, raw UTF-8 and gzip-compressed. table payload: per
fraction the mean bytes over all selected prompts with an answer (gen_len > 0), and how the
template compares with gzip(full text). An answer whose anchors decode to a NULL character
has no template (counted in n_no_template); its binary payloads are still measured. The
paper's "119 B vs 209 B vs 402 B" (template, gzip text, raw text) sits on the 10% row.

Cutting at gen_len, as the paper and its anchor file do, uses the full run's answer length,
which the cloud cannot know after a fraction of the steps. The `deployable_*` columns measure
what it can send: every committed position of the canvas up to and including the first
committed end-of-text token (its text marks where the answer ends), or up to the last
anchor when no end is committed yet (the gap-filler then writes on until its own end token).
That is the cut the committed_end gap-fill rule reads.
"""

from __future__ import annotations

from dlmkit.anchors import Anchors, encode_gzip_template, gzip_text_size, pack_anchors
from dlmkit.data.chat import end_token_ids
from dlmkit.errors import UserError
from dlmkit.experiments.inverse.fill import anchors_for
from dlmkit.metrics.scoring import mean, not_reproduced

PUBLISHED_PAYLOAD = {"gzip_template_bytes": 119, "gzip_text_bytes": 209, "raw_text_bytes": 402}
SIZES = ("gzip_template_bytes", "varint_bytes", "fixed_bytes")
DEPLOYABLE = ("deployable_length", "deployable_n_anchors", "deployable_gzip_template_bytes", "deployable_varint_bytes")


def deployable_anchors(canvas: Anchors, end_ids: set[int]) -> Anchors:
    """What the cloud can send at the cutoff, not knowing the answer's length: the canvas's
    anchors up to and including the first committed end token, else up to the last anchor."""
    ends = [p for p, t in zip(canvas.positions, canvas.tokens) if t in end_ids]
    cut = ends[0] + 1 if ends else (canvas.positions[-1] + 1 if canvas.positions else 0)
    return canvas.truncated(cut)


def _template_bytes(anchors: Anchors, decode) -> int | None:
    try:
        return len(encode_gzip_template(anchors, decode))
    except UserError:  # an anchor decodes to the NULL the template reserves for gaps
        return None


def payload_record(context, a_record: dict) -> dict:
    tokenizer = context.dlm_tokenizer()
    end_ids = end_token_ids(tokenizer)
    gen_len = a_record["gen_len"]
    rows = []
    for fraction in context.fractions:
        canvas = anchors_for(a_record, fraction, context.dream.steps)
        anchors = canvas.truncated(gen_len)
        deployable = deployable_anchors(canvas, end_ids)
        rows.append({"fraction": fraction, "n_anchors": len(anchors), "coverage": anchors.coverage,
                     "gzip_template_bytes": _template_bytes(anchors, tokenizer.decode),
                     "varint_bytes": len(pack_anchors(anchors, "varint")),
                     "fixed_bytes": len(pack_anchors(anchors, "fixed")),
                     "deployable_length": deployable.length, "deployable_n_anchors": len(deployable),
                     "deployable_gzip_template_bytes": _template_bytes(deployable, tokenizer.decode),
                     "deployable_varint_bytes": len(pack_anchors(deployable, "varint")),
                     "raw_text_bytes": len(a_record["text"].encode("utf-8")),
                     "gzip_text_bytes": gzip_text_size(a_record["text"])})
    return {"id": a_record["id"], "gen_len": gen_len, "fractions": list(context.fractions), "rows": rows}


def payload_table(records: list[dict], fractions) -> list[dict]:
    out = []
    for fraction in fractions:
        rows = [row for r in records if r["gen_len"] for row in r["rows"] if row["fraction"] == fraction]
        row = {"fraction": fraction, "n": len(rows), "n_anchors": mean([r["n_anchors"] for r in rows]),
               "coverage": mean([r["coverage"] for r in rows])}
        for key in SIZES + ("gzip_text_bytes", "raw_text_bytes"):
            row[key] = mean([r[key] for r in rows])
        for key in DEPLOYABLE:
            row[key] = mean([r[key] for r in rows])
        row["template_over_gzip_text"] = mean([r["gzip_template_bytes"] / r["gzip_text_bytes"] for r in rows
                                               if r["gzip_template_bytes"] is not None])
        row["n_no_template"] = sum(r["gzip_template_bytes"] is None for r in rows)
        published = PUBLISHED_PAYLOAD if round(fraction, 4) == 0.1 else {}
        row.update({f"published_{k}": published.get(k) for k in PUBLISHED_PAYLOAD})
        out.append(row)
    return out


def phase_payload(run, context) -> None:
    a_records = context.phase_a_records(run.dir, "payload")
    log = run.log("payload")
    # Records of other fractions, or written before the deployable columns existed, are redone.
    have = {r["id"]: r for r in log.records()
            if r.get("fractions") == list(context.fractions) and all(k in r["rows"][0] for k in DEPLOYABLE)}
    for item in context.items():
        if item["id"] not in have:
            have[item["id"]] = payload_record(context, a_records[item["id"]])
            log.append(have[item["id"]])
    rows = payload_table([have[i["id"]] for i in context.items()], context.fractions)
    run.add_table("payload", rows)
    if any(r["n_no_template"] for r in rows):
        run.note("payload: some anchors decode to a NULL character, which the gzip template reserves for gaps; "
                 "those answers have no template size (n_no_template) and are left out of its mean")
    misses = not_reproduced(rows, {k: f"published_{k}" for k in PUBLISHED_PAYLOAD}, lambda r: f"@{r['fraction']}",
                            tolerance=0.0)
    if misses:
        run.note(f"payload ({context.preset} preset: other models, other answer lengths) differs from the paper's "
                 "bytes: " + "; ".join(misses))


__all__ = ["payload_record", "payload_table", "phase_payload"]
