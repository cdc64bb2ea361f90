"""One package per experiment script, each with the same small contract (see dlmkit/runner.py):
PHASES (name -> phase(run, context), in order), ROLES and PHASE_ROLES, add_flags, a frozen
Settings built from the flags, and a Context that the phases share. No experiment imports
another; what two of them need lives in the shared layers below (tests/test_layout.py)."""
