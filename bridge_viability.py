#!/usr/bin/env python
"""Bridge viability: can a large AR model's intermediate layers seed Dream?

Phases (default: both, in order; resumable per prompt with --resume):
  probe   ar_large answers each prompt greedily; one teacher-forced pass over prompt + answer
          with hooks at the layer taps; the logit lens (final norm, then lm_head) at every
          answer position. Per layer and confidence threshold: qualifying tokens, their
          accuracy against the final answer, structural vs content; a (layer, threshold) is
          viable with >= --viable-min-tokens qualifying tokens per prompt on average, at a
          pooled accuracy >= --viable-min-accuracy. Tables ar_answers, probe_layers, probe_depth, viable_configs;
          plot probe_accuracy_by_layer.png.
  inject  for each viable configuration (at most --max-inject-configs), the layer's confident
          tokens go into Dream's canvas at their generation positions before the first step
          (through text when the vocabularies differ), stay fixed, and Dream denoises the rest
          at every budget of --step-grid; cold Dream runs the same budgets with the same seeds.
          Word F1 against ar_large's answer and against cold Dream, accuracy, and the DLM steps
          saved for equal F1. Tables inject_f1, inject_steps_saved, inject_by_difficulty,
          inject_vs_cold; plot inject_f1_by_steps.png.
The science lives in dlmkit/experiments/bridge/ and dlmkit/models/logit_lens.py.

    python bridge_viability.py                               # tiny preset on a CPU, a few minutes
    python bridge_viability.py --preset paper --device cuda  # Qwen2.5-32B (4-bit) -> Dream-7B
    python bridge_viability.py --layer-taps 2 4 6 --phase probe
"""

from dlmkit.cli import run_main
from dlmkit.experiments import bridge
from dlmkit.runner import run_experiment


def main(argv=None, **settings) -> int:
    """settings: fields of bridge.Settings to replace (tests shorten Dream's run this way)."""
    return run_experiment(bridge, "bridge_viability.py", __doc__, argv, **settings)


if __name__ == "__main__":
    run_main(main)
