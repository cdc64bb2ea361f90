"""train_clsd.py's settings, built once from the flags and frozen (per-preset defaults, then the
flags that override them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from dlmkit.errors import UserError

# Published (model card): 128-token blocks, 32 candidates, 2 Euler steps, stage A 50K steps
# of batch 32 at AdamW 1e-4 cosine. Stage C's length and the prefix length are not given.
PRESET_DEFAULTS = {
    # Tiny: stage A 3000 steps and the verifier's own greedy chunks as targets; with 600 steps the
    # DiT learned only the embeddings' marginal (4% of tokens right, with either targets).
    "tiny": dict(block_len=32, prefix_len=32, train_records=3000, val_records=200, stage_a_steps=3000,
                 stage_c_steps=200, batch_size=16, stage_a_lr=1e-3, stage_c_lr=3e-4, candidates=8, prompts=12,
                 gen_length=40, val_batch=64, targets="verifier"),
    "paper": dict(block_len=128, prefix_len=128, train_records=400_000, val_records=100, stage_a_steps=50_000,
                  stage_c_steps=5_000, batch_size=32, stage_a_lr=1e-4, stage_c_lr=1e-5, candidates=32, prompts=64,
                  gen_length=512, val_batch=32, targets="data"),
}
IDENTITY = ("block_len", "prefix_len", "train_records", "val_records", "stage_a_steps", "stage_c_steps", "batch_size",
            "stage_a_lr", "stage_c_lr", "candidates", "gen_length", "val_batch", "euler_steps", "beta0", "threshold",
            "targets")
# Settings a flag can set; a flag is named as its setting unless FLAG_OF says otherwise.
FLAGGED = ("block_len", "prefix_len", "train_records", "stage_a_steps", "stage_c_steps", "batch_size", "candidates",
           "gen_length", "targets")
FLAG_OF = {"train_records": "embed_records"}
# --subset N: the training budgets of a smoke test (each flag given still wins).
SMOKE = dict(train_records=40, stage_a_steps=5, stage_c_steps=5, gen_length=8, candidates=2)
# What the DiT learns to draft: "data" (the card: the transcripts' own chunks) or "verifier" (each
# chunk replaced by the verifier's greedy continuation of its prefix, what the guillotine accepts).
TARGETS = ("data", "verifier")


@dataclass(frozen=True)
class Settings:
    preset: str
    phases: tuple[str, ...]
    block_len: int
    prefix_len: int
    train_records: int
    val_records: int
    stage_a_steps: int
    stage_c_steps: int
    batch_size: int
    stage_a_lr: float
    stage_c_lr: float
    candidates: int
    prompts: int
    gen_length: int
    val_batch: int
    targets: str
    euler_steps: int
    beta0: float
    threshold: float
    seed: int
    source_indices: tuple[int, ...] | None
    ckpt_dir: Path
    data_dir: Path | None = None

    @classmethod
    def from_flags(cls, args, job) -> "Settings":
        values = dict(PRESET_DEFAULTS[job.preset])
        if job.subset:  # a smoke test: smoke-sized training, then the flags given
            values.update(SMOKE, prompts=job.subset)
        flagged = {key: getattr(args, FLAG_OF.get(key, key)) for key in FLAGGED}
        values.update({key: value for key, value in flagged.items() if value is not None})
        # The caches belong to the run: under OUT (git ignores results/**/checkpoints/), removed by --overwrite.
        ckpt = args.ckpt_dir or Path(job.out) / "checkpoints"
        if args.ckpt_dir and "results" in Path(ckpt).resolve().parts and \
                not Path(ckpt).resolve().is_relative_to(Path(job.out).resolve()):
            raise UserError(f"--ckpt-dir {ckpt} lies inside results/; checkpoints must stay out of committed "
                            "results: leave --ckpt-dir out (OUT/checkpoints) or pass one under runs/")
        return cls(preset=job.preset, phases=job.phases, euler_steps=args.euler_steps, beta0=args.beta0,
                   threshold=args.threshold, seed=job.seed,
                   source_indices=tuple(args.source_indices) if args.source_indices else None,
                   ckpt_dir=Path(ckpt), data_dir=args.data_dir, **values)

    @staticmethod
    def verifier_label(specs) -> str:
        """The verifier as the embedding shards record it: a hub id, or a local directory's name."""
        source = specs["verifier"].source
        return source if not Path(source).exists() else Path(source).name

    def config(self, specs) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        config = {key: values[key] for key in PRESET_DEFAULTS[self.preset]}
        config.update(euler_steps=self.euler_steps, beta0=self.beta0, threshold=self.threshold, seed=self.seed,
                      source_indices=list(self.source_indices) if self.source_indices else self.source_indices,
                      verifier=self.verifier_label(specs))
        return {**config, "ckpt_dir": str(self.ckpt_dir), "phases": list(self.phases)}

    def identity(self, specs) -> dict:
        # Every setting that changes the shards, the trained DiT or the inference records (the runner adds
        # seed and models); the prompt count only adds items.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {key: values[key] for key in IDENTITY} | {
            "source_indices": list(self.source_indices) if self.source_indices else None}
