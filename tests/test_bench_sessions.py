"""bench/structured_resnet.py's session merge: the median session's figures and every session's speed-up."""

from bench.structured_resnet import markdown, merge_sessions


def _session(speedup: float) -> dict:
    return {"fold+cl": {"256": {"dense_ms": 100.0, "pruned_ms": 100.0 / speedup, "speedup_median": speedup,
                                "speedup_p10": speedup, "repeats": 5}}}


def test_merge_sessions_keeps_the_median_session_and_the_range():
    merged = merge_sessions([_session(s) for s in (1.9, 1.5, 1.7, 2.2)])["fold+cl"]["256"]
    assert merged["speedup_median"] == 1.7  # lower median of an even count: never flatters
    assert merged["pruned_ms"] == 100.0 / 1.7 and merged["sessions"] == [1.5, 1.7, 1.9, 2.2]
    res = {"name": "n", "model": "m", "dataset": "d", "recipe": "r", "seeds": [0], "command": "c",
           "variants": {}, "loadavg_end": [0.5], "latency": [{"label": "a/s0", "macs_reduction": 2.0,
                                                             "modes": {"fold+cl": {"256": merged}}}]}
    assert "| 1.70× | 1.70× | 1.50–2.20× (4) |" in markdown(res)
