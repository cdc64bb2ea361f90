"""benchmarks/bench_dream.py: the sampler comparison runs and reports the one-pass filter keeping
the reference's tokens (no time is asserted: timings live in the benchmark's output)."""

def test_sampler_comparison_reports_the_same_kept_tokens(capsys, load_script):
    bench = load_script("benchmarks/bench_dream.py")
    bench.main(["--random-config", "tiny", "--device", "cpu", "--canvas", "40", "--prompt-len", "8", "--steps", "1",
                "--warmup", "0", "--sampling-repeats", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert "Sampling 32 open positions" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| reference (sort)")
            or line.startswith("| one pass")}
    assert set(rows) == {"reference (sort)", "one pass"}
    assert all(line.rstrip(" |").endswith("True") for line in rows.values())
    assert "ratio reference / one pass" in out


def test_sampler_comparison_is_skipped_with_zero_repeats(capsys, load_script):
    bench = load_script("benchmarks/bench_dream.py")
    bench.main(["--random-config", "tiny", "--device", "cpu", "--canvas", "40", "--prompt-len", "8", "--steps", "1",
                "--warmup", "0", "--sampling-repeats", "0", "--threads", "1"])
    assert "Sampling" not in capsys.readouterr().out
