"""Stop the DLM when its structural work is done: a per-prompt stopping rule read from what
the partial run shows, instead of a fixed share of the steps.

The paper suggests halting when the commit rate plateaus. Dream's schedule fixes the commit
rate: step i commits int(n_masked * (1 - s/t)) positions whatever the model thinks (one per
step when the steps equal the canvas), so a raw commit count says nothing about the prompt.
What the partial run does show after c steps, for free (`StepState`):

  end             the committed end of text: the first position whose committed token is an
                  end token (Dream commits trailing end-of-text early); it bounds the answer.
  coverage        the share of the positions before `end` that are committed.
  left_conf       how sure Dream is of what it has left: the highest top-1 probability, in
                  the last forward (the logits of step c - 1, before its commits), over the
                  positions still masked before `end` (all masked positions while no end is
                  committed); 0 when none is left. Probabilities are the model's softmax at
                  temperature 1, not the sampler's tempered, nucleus-filtered ones.
  left_text_conf  the same over the open positions whose argmax is not an end token: how
                  sure Dream is of the answer text it has left. Before the end is committed,
                  the far positions of the canvas are near-certain end tokens, so left_conf
                  stays near 1 until Dream commits them; left_text_conf does not wait for that.

Rules (`StopRule`), each bounded by min_steps and max_steps; with `window` w the condition
must hold after each of the last w steps (a signal that dips for one step does not stop):

  confidence       stop after c steps once left_conf < threshold
  text_confidence  stop once left_text_conf < threshold: every answer position Dream is that
                   sure of is committed; what is left it would guess, and the gap-filler
                   guesses as well (in entropy order the tokens a model knows come first)
  end_coverage     stop once an end token is committed and `coverage` >= threshold
  fixed            c = threshold * steps (at least 1), the paper's fixed fraction, the baseline

`PartialStates` is the tokens hook that records, after every step, the signals and Dream's
argmax at every position (the drafts of `drafted.py`); `stop_step` runs a rule over a
finished run's record, and `StopRule.stops` with `online_state` is the same decision taken
while the run goes, so a deployment that stops when the rule says holds exactly the anchors
(and drafts) the full run records at that step (a test checks it on the tiny Dream).
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmkit.errors import UserError  # torch is imported where tensors are read: the rules stay light

KINDS = ("confidence", "text_confidence", "end_coverage", "fixed")
SIGNALS = ("left_conf", "left_text_conf")  # per-step signals a record keeps (PartialStates.signals_of)
RESOLUTION = 4  # digits the signals are rounded to


@dataclass(frozen=True)
class StepState:
    """What the partial run shows after some steps (see the module docstring)."""

    end: int | None
    coverage: float
    left_conf: float
    left_text_conf: float


@dataclass(frozen=True)
class StopRule:
    kind: str
    threshold: float
    min_steps: int = 1
    max_steps: int | None = None  # default: all steps
    window: int = 1  # the condition must hold after each of the last `window` steps

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown stop rule {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.kind == "fixed" and not 0 < self.threshold <= 1:
            raise UserError(f"a fixed stop is a step fraction in (0, 1], got {self.threshold!r}")
        if self.min_steps < 1 or (self.max_steps is not None and self.max_steps < self.min_steps):
            raise UserError(f"stop rule bounds must satisfy 1 <= min_steps <= max_steps, got {self.min_steps}, "
                            f"{self.max_steps}")
        if self.window < 1:
            raise UserError(f"a stop rule's window is a number of steps >= 1, got {self.window}")

    @property
    def name(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.threshold:g}"
        bounds = f" for {self.window} steps" if self.window > 1 else ""
        if self.min_steps > 1 or self.max_steps:
            bounds += f", steps {self.min_steps}..{self.max_steps or ''}"
        if self.kind == "end_coverage":
            return f"end_coverage >= {self.threshold:g}{bounds}"
        signal = "left_conf" if self.kind == "confidence" else "left_text_conf"
        return f"{signal} < {self.threshold:g}{bounds}"

    def stops(self, history: list[StepState], steps: int) -> bool:
        """Whether to stop now, from the partial run's state after each step so far (history[-1]
        is the state after the step just done) in a `steps`-step run."""
        done = len(history)
        if self.kind == "fixed":
            return done >= max(int(steps * self.threshold), 1)
        if done >= min(self.max_steps or steps, steps):
            return True
        if done < max(self.min_steps, self.window):
            return False
        return all(self._holds(state) for state in history[-self.window:])

    def _holds(self, state: StepState) -> bool:
        if self.kind == "confidence":
            return state.left_conf < self.threshold
        if self.kind == "text_confidence":
            return state.left_text_conf < self.threshold
        return state.end is not None and state.coverage >= self.threshold


def _end_of(canvas, mask_id: int, end_ids) -> int:
    """The first committed end position of a row's canvas, or its width."""
    ends = set(end_ids)
    return next((p for p, t in enumerate(canvas) if t != mask_id and t in ends), len(canvas))


def state_of(canvas, mask_id: int, end_ids, left_conf: float = 0.0, left_text_conf: float = 0.0) -> StepState:
    """StepState of one row from its canvas (generation region, mask id at open positions)."""
    width = len(canvas)
    end = _end_of(canvas, mask_id, end_ids)
    coverage = sum(1 for t in canvas[:end] if t != mask_id) / end if end else 1.0
    return StepState(end if end < width else None, coverage, float(left_conf), float(left_text_conf))


def signals(canvas, argmax, conf, mask_id: int, end_ids) -> dict[str, float]:
    """left_conf and left_text_conf of one row (see the module docstring), rounded to RESOLUTION
    digits so that a rule reads the same number online and from a record."""
    ends = set(end_ids)
    end = _end_of(canvas, mask_id, end_ids)
    left = [(c, a) for t, c, a in zip(canvas[:end], conf[:end], argmax[:end]) if t == mask_id]
    return {"left_conf": round(max((c for c, _ in left), default=0.0), RESOLUTION),
            "left_text_conf": round(max((c for c, a in left if a not in ends), default=0.0), RESOLUTION)}


def drafts_of(canvas, argmax, conf, mask_id: int, end_ids) -> dict:
    """Drafts of one row: the argmax and its probability at the positions still masked before
    the committed end (all masked ones while none is committed). {"positions", "tokens", "conf"}."""
    positions = [p for p in range(_end_of(canvas, mask_id, end_ids)) if canvas[p] == mask_id]
    return {"positions": positions, "tokens": [argmax[p] for p in positions],
            "conf": [round(conf[p], 3) for p in positions]}


def top1(logits):
    """(probability, id) of the most likely token at every position: softmax at temperature 1."""
    import torch

    return torch.softmax(logits.float(), dim=-1).max(dim=-1)


def online_state(canvas, logits, mask_id: int, end_ids) -> tuple[StepState, dict]:
    """What a run stopping now reads, for one row: its StepState and drafts, from the generation
    region of the canvas after a step (L,) and that step's logits there (L, V)."""
    conf, argmax = top1(logits)
    canvas, conf, argmax = canvas.tolist(), conf.tolist(), argmax.tolist()
    state = state_of(canvas, mask_id, end_ids, **signals(canvas, argmax, conf, mask_id, end_ids))
    return state, drafts_of(canvas, argmax, conf, mask_id, end_ids)


def stop_step(rule: StopRule, commit_step, tokens, recorded: dict, end_ids, steps: int, mask_id: int = -1) -> int:
    """The step count after which `rule` stops a finished run, from its record: commit_step and
    tokens (one row of DiffusionOutput) and `recorded`, PartialStates.signals_of(row) (each
    signal's value after every step)."""
    for name in SIGNALS:
        if len(recorded.get(name, ())) != steps:
            raise UserError(f"signal {name!r} has {len(recorded.get(name, ()))} values for a {steps}-step run; "
                            "record them with PartialStates over the whole run")
    commit_step, history = [int(c) for c in commit_step], []
    for done in range(1, steps + 1):
        canvas = [int(t) if c < done else mask_id for c, t in zip(commit_step, tokens)]
        history.append(state_of(canvas, mask_id, end_ids, **{name: recorded[name][done - 1] for name in SIGNALS}))
        if rule.stops(history, steps):
            return done
    return steps


class PartialStates:
    """A diffusion_generate tokens hook: after every step, each row's signals and Dream's argmax
    and its probability at every generation position (from that step's logits)."""

    def __init__(self, width: int, mask_id: int, end_ids):
        self.width, self.mask_id, self.end_ids = width, mask_id, list(end_ids)  # width: max_new_tokens
        self.signals: list[list[dict]] = []  # [step][row]
        self.argmax: list = []  # [step] (B, L) tensors on the CPU
        self.conf: list = []
        self.canvas: list = []  # [step] (B, L): the generation region after the step

    def __call__(self, step, x, logits):
        if step is None:
            return
        gen = x[:, -self.width:].cpu().clone()  # x is updated in place by later steps
        conf, argmax = (t.cpu() for t in top1(logits[:, -self.width:]))
        self.argmax.append(argmax)
        self.conf.append(conf)
        self.canvas.append(gen)
        self.signals.append([signals(gen[b].tolist(), argmax[b].tolist(), conf[b].tolist(), self.mask_id,
                                     self.end_ids) for b in range(gen.shape[0])])

    def signals_of(self, row: int) -> dict[str, list[float]]:
        return {name: [step[row][name] for step in self.signals] for name in SIGNALS}

    def drafts(self, row: int, steps_done: int) -> dict:
        """Dream's drafts after `steps_done` steps (see drafts_of); none before its first forward."""
        if steps_done == 0:
            return {"positions": [], "tokens": [], "conf": []}
        if not 1 <= steps_done <= len(self.argmax):
            raise UserError(f"no recorded state after {steps_done} steps (the run recorded {len(self.argmax)})")
        i = steps_done - 1
        return drafts_of(self.canvas[i][row].tolist(), self.argmax[i][row].tolist(), self.conf[i][row].tolist(),
                         self.mask_id, self.end_ids)


def drafts_before(drafts: dict, limit: int | None = None, min_conf: float = 0.0) -> dict[int, int]:
    """{position: token} of a drafts record, below `limit` and at least `min_conf` sure."""
    return {p: t for p, t, c in zip(drafts["positions"], drafts["tokens"], drafts["conf"])
            if (limit is None or p < limit) and c >= min_conf}


def sent_drafts(drafts: dict, end_ids, min_conf: float = 0.0) -> dict[int, int]:
    """The drafts that travel to the gap-filler: Dream's argmax at the open positions before the
    committed end, at least `min_conf` sure, up to and including the first drafted end token
    (what follows a drafted end is never checked: the verifier stops there or corrects it)."""
    out = {}
    for p, t in sorted(drafts_before(drafts, min_conf=min_conf).items()):
        out[p] = t
        if t in end_ids:
            break
    return out


__all__ = ["KINDS", "SIGNALS", "PartialStates", "StepState", "StopRule", "drafts_before", "drafts_of",
           "online_state", "sent_drafts", "signals", "state_of", "stop_step", "top1"]
