"""SpecDiff's decoding methods: a family (one per phase) and its draft length / denoising steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    family: str  # ar | sd | specdiff | hf
    gamma: int | None = None
    steps: int | None = None

    @property
    def name(self) -> str:
        if self.family == "ar":
            return "ar"
        if self.family == "specdiff":
            return f"specdiff/g{self.gamma}/T{self.steps}"
        return f"{self.family}/g{self.gamma}"


def methods_for(families: list[str], cfg) -> list[Method]:
    out = []
    for family in families:
        if family == "ar":
            out.append(Method("ar"))
        elif family in ("sd", "hf"):
            out += [Method(family, gamma=g) for g in cfg.sd_gammas]
        elif family == "specdiff":
            out += [Method("specdiff", gamma=g, steps=t) for g in cfg.gammas for t in cfg.steps]
    return out
