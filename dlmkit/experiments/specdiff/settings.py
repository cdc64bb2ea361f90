"""specdiff_bench.py's settings, built once from the flags and frozen (per-preset defaults, then the
flags that override them)."""

from __future__ import annotations

from dataclasses import dataclass

from dlmkit.errors import UserError

FAMILIES = ("ar", "sd", "specdiff", "hf")
PROMPT_SETS = {"tiny": ("documents", "chat"), "paper": ("owt", "cnn_dm")}
PRESET_DEFAULTS = {
    "tiny": dict(prompt_sets=PROMPT_SETS["tiny"], prompts=6, prompt_tokens=12, max_new_tokens=64,
                 gammas=(4, 8, 16), steps=(1, 2, 4), sd_gammas=(2, 4, 8, 16), temperatures=(0.0, 1.0)),
    "paper": dict(prompt_sets=PROMPT_SETS["paper"], prompts=50, prompt_tokens=128, max_new_tokens=256,
                  gammas=(5, 10, 15, 20), steps=(1, 2, 4, 8), sd_gammas=(3, 5, 8), temperatures=(0.0, 1.0)),
}


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    preset: str
    phases: tuple[str, ...]
    prompt_sets: tuple[str, ...]
    prompts: int
    prompt_tokens: int
    max_new_tokens: int
    gammas: tuple[int, ...]
    steps: tuple[int, ...]
    sd_gammas: tuple[int, ...]
    temperatures: tuple[float, ...]
    sampler: str
    seed: int
    timing_repeats: int = 3

    @classmethod
    def from_flags(cls, args, job) -> "Settings":
        defaults = PRESET_DEFAULTS[job.preset]
        settings = cls(preset=job.preset, phases=job.phases,
                       prompt_sets=tuple(args.prompt_sets or defaults["prompt_sets"]),
                       prompts=job.subset or defaults["prompts"],
                       prompt_tokens=args.prompt_tokens or defaults["prompt_tokens"],
                       max_new_tokens=args.max_new_tokens or defaults["max_new_tokens"],
                       gammas=tuple(args.gammas or defaults["gammas"]), steps=tuple(args.steps or defaults["steps"]),
                       sd_gammas=tuple(args.sd_gammas or defaults["sd_gammas"]),
                       temperatures=tuple(args.temperatures or defaults["temperatures"]), sampler=args.sampler,
                       seed=job.seed, timing_repeats=args.timing_repeats)
        unknown = [s for s in settings.prompt_sets if s not in PROMPT_SETS[job.preset]]
        if unknown:
            raise UserError(f"--prompt-sets {','.join(unknown)} does not exist on the {job.preset} preset; choose "
                            f"from {','.join(PROMPT_SETS[job.preset])}")
        return settings

    def config(self, specs) -> dict:
        return {"prompt_sets": list(self.prompt_sets), "prompts": self.prompts, "prompt_tokens": self.prompt_tokens,
                "max_new_tokens": self.max_new_tokens, "gammas": list(self.gammas), "steps": list(self.steps),
                "sd_gammas": list(self.sd_gammas), "temperatures": list(self.temperatures), "sampler": self.sampler,
                "seed": self.seed, "timing_repeats": self.timing_repeats, "phases": list(self.phases)}

    def identity(self, specs) -> dict:
        # Records carry no length: resuming with other ones would mix two runs (the runner adds seed and models).
        return {"prompt_tokens": self.prompt_tokens, "max_new_tokens": self.max_new_tokens, "sampler": self.sampler}
