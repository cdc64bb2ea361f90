"""Every script's paper path at the real geometries on a CPU (benchmarks/real_geometry.py): random
weights, real vocabularies and widths, the real hub formats through dlmkit's loaders. Slow (about
6 minutes for all five on 2 cores, up to ~8 GB for clsd), so benchmark-marked: run by hand with

    OMP_NUM_THREADS=1 pytest -m benchmark tests/test_real_geometry.py -s
"""

import pytest

NEEDS_GIB = {"inverse": 4, "bridge": 6, "specdiff": 3, "self_spec": 3, "clsd": 8.5}


def available_gib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


@pytest.mark.benchmark
@pytest.mark.parametrize("case", list(NEEDS_GIB))
def test_paper_path_at_real_geometry(load_script, case):
    real_geometry = load_script("benchmarks/real_geometry.py")
    assert set(NEEDS_GIB) == set(real_geometry.CASES)
    if available_gib() < NEEDS_GIB[case]:
        pytest.skip(f"{case} needs ~{NEEDS_GIB[case]} GiB free, {available_gib():.1f} available")
    result = real_geometry.run_isolated(case)
    print(f"\n{case}: {result['seconds']} s, peak RSS {result['peak_rss_gib']} GiB, {result['details']}")
    assert result["ok"], result["error"]
    assert result["peak_rss_gib"] < NEEDS_GIB[case]
