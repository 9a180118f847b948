"""simulate_many after a FCFS ring overflow: only the replications that overflowed are rerun
(plus, where an overflow in the warm-up moved the start of a point's statistics window, that
point's others), and every replication ends as a ring large enough from the start gives it."""

import jax
import numpy as np
import pytest

from jaxqueue import policies, scenarios, sweep
from jaxqueue.driver import BufferOverflowError, SimulationWarning

MODEL = scenarios.load("paper-qwen8b")
# FG-SP keeps its prefill queue in a FCFS ring. On 10 GPUs a ring of 16 jobs overflows in some
# replications of these loads and not in others, some inside the warm-up (which spans about 10
# chunks of 64 events), some after it; a ring of 64 never does (measured; the tests check it).
KW = dict(horizon=40.0, warmup=20.0, chunk_events=64)


def grid(loads, capacity: int):
    return [policies.build("fg-sp", MODEL.replace(lambda_=lam), 10, capacity=capacity)[0]
            for lam in loads]


def spy_on_stacks(monkeypatch) -> list[dict]:
    """Records every stack of replications the sweep simulates (the work it does)."""
    calls = []
    real = sweep._run_stack

    def spy(key, systems, rep_ids, floors, *args, **kwargs):
        out = real(key, systems, rep_ids, floors, *args, **kwargs)
        calls.append({"loads": [np.asarray(s.model.lambda_).tolist() for s in systems],
                      "ids": np.array(rep_ids), "over": out.over.copy(),
                      "start": out.start.copy(), "capacity": systems[0].capacity})
        return out

    monkeypatch.setattr(sweep, "_run_stack", spy)
    return calls


def check_reruns(monkeypatch, loads, key: int, reps: int) -> tuple[list, list, list]:
    """Runs the grid with rings of 16 and of 64 and checks everything but which points had their
    window start moved; returns (the points whose window start moved, the rerun rounds'
    stacks, the lines notify received)."""
    calls = spy_on_stacks(monkeypatch)
    said = []
    grown = sweep.simulate_many(jax.random.key(key), grid(loads, 16), reps=reps,
                                notify=said.append, **KW)
    large = sweep.simulate_many(jax.random.key(key), grid(loads, 64), reps=reps,
                                notify=said.append, **KW)
    first, reference = calls[0], calls[-1]
    assert first["capacity"] == 16 and reference["capacity"] == 64
    assert np.all(reference["over"] < 0), "a ring of 64 must be large enough"
    num = len(loads)
    overflowed = [set(np.flatnonzero(first["over"][p] >= 0).tolist()) for p in range(num)]
    # Not vacuous: some replication overflowed and some did not.
    assert 0 < sum(len(o) for o in overflowed) < num * reps, overflowed
    moved = [p for p in range(num) if first["start"][p] != reference["start"][p]]

    # Bit for bit, every replication of every point, as the large ring from the start.
    for a, b in zip(grown, large, strict=True):
        np.testing.assert_array_equal(a.tallies, b.tallies)
        np.testing.assert_array_equal(a.stock_start, b.stock_start)
        np.testing.assert_array_equal(a.stock_end, b.stock_end)
        np.testing.assert_array_equal(a.window, b.window)
        np.testing.assert_allclose(a.level_integrals, b.level_integrals, rtol=1e-6)
        assert a.events == b.events and a.chunks == b.chunks
        assert b.rerun_reps == () and b.regrown == 0 and b.buffer_capacity == 64
        assert a.buffer_capacity == (64 if a.rerun_reps else 16)

    # What was rerun: the replications that overflowed, and for a point whose window start
    # moved with some replication that did not overflow, those too; nothing else.
    everything = set(range(reps))
    expected = [everything if p in moved else overflowed[p] for p in range(num)]
    assert [set(r.rerun_reps) for r in grown] == expected
    # The work: the stacks run between the first and the reference hold exactly those
    # replications, each once (a row may repeat its last replication to fill the stack).
    reruns = calls[1:-1]
    assert all(c["capacity"] == 64 for c in reruns)
    done = {p: set() for p in range(num)}
    for c in reruns:
        for lam, row in zip(c["loads"], c["ids"], strict=True):
            p = [list(map(float, x)) for x in loads].index(lam)
            assert not (set(row.tolist()) & done[p]), "a replication rerun twice"
            done[p] |= set(row.tolist())
    assert [done[p] for p in range(num)] == expected
    count = sum(len(o) for o in overflowed)
    assert f"overflowed in {count} replications of points" in said[0] and "64 jobs" in said[0]
    return moved, reruns, said


# Key 1: point 0 overflows in its replication 0, point 1 in both, neither moving its window
# start: only those replications are rerun. One rerun stack, of the reference's shape: two
# compiled programs in all.
CHEAP = dict(loads=([0.5, 0.5], [0.4, 0.4]), key=1, reps=2)


def test_an_overflow_reruns_only_its_replications_and_gives_the_large_ring_result(monkeypatch):
    moved, reruns, said = check_reruns(monkeypatch, **CHEAP)
    assert moved == [] and len(reruns) == 1 and len(said) == 1
    assert "points 0 (replication 0), 1 (replications 0, 1)" in said[0]


@pytest.mark.slow
def test_an_overflow_in_the_warmup_that_moves_the_window_reruns_the_point(monkeypatch):
    # Key 13: an overflow inside point 0's warm-up moves the chunk its window starts at (9
    # instead of 10): its replications that did not overflow must be rerun too, in a second
    # round, after the first told where the overflowed ones really finish their warm-up.
    moved, reruns, said = check_reruns(monkeypatch, ([0.5, 0.5], [0.45, 0.45], [0.4, 0.4]),
                                       key=13, reps=4)
    assert moved == [0] and len(reruns) == 2 and len(said) == 2
    assert said[1].startswith("point 0: an overflow in the warm-up moved the start of its "
                              "statistics window (chunk 9 instead of 10)")


def test_overflow_warns_without_notify_and_fixed_capacity_is_an_error():
    # The programs of the first test (cached when it ran first).
    systems = grid(CHEAP["loads"], 16)
    key = jax.random.key(CHEAP["key"])
    with pytest.warns(SimulationWarning, match="rerunning only those replications") as seen:
        sweep.simulate_many(key, systems, reps=CHEAP["reps"], **KW)
    assert seen[0].filename == __file__  # the warning points at the caller
    with pytest.raises(BufferOverflowError, match=r"points \[0, 1\]: .*grow_buffers=False"):
        sweep.simulate_many(key, systems, reps=CHEAP["reps"], grow_buffers=False, **KW)
