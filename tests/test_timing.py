import pytest

from harness import timing


def work_taking(clock, seconds_per_loop, noise=()):
    """A run(loops) that advances the fake clock; `noise` cycles extra seconds per call."""
    calls = []

    def run(loops):
        extra = noise[len(calls) % len(noise)] if noise else 0.0
        calls.append(loops)
        clock.advance_s(seconds_per_loop * loops + extra)

    return run, calls


def no_cpu_times():
    return None


def test_calibration_grows_loops_until_samples_are_long_enough(fake_clock):
    run, calls = work_taking(fake_clock, 1e-5)
    m = timing.measure(run, repeats=5, min_sample_s=0.01, clock=fake_clock, cpu_times=no_cpu_times)
    assert m.loops_per_sample * 1e-5 >= 0.01
    assert calls[0] == 1  # warm-up call outside the samples
    assert calls[-5:] == [m.loops_per_sample] * 5
    assert len(m.samples_s) == 5
    for s in m.samples_s:  # per-loop time recovered (each clock reading adds 1 ns)
        assert s == pytest.approx(1e-5, rel=1e-3)
    assert m.warnings == []


def test_a_budget_cuts_samples_of_long_calls_to_what_fits(fake_clock):
    run, calls = work_taking(fake_clock, 1.5)
    m = timing.measure(run, repeats=10, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times, budget_s=4.0)
    # warm-up, calibration (the first sample), then floor(4 / 1.5) -> at least 3 samples
    assert len(m.samples_s) == 3 and calls == [1] * 4
    run, _ = work_taking(fake_clock, 0.2)
    m = timing.measure(run, repeats=10, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times, budget_s=1.1)
    assert len(m.samples_s) == 5  # floor(1.1 / 0.2)
    run, _ = work_taking(fake_clock, 0.01)
    m = timing.measure(run, repeats=10, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times, budget_s=1.0)
    assert len(m.samples_s) == 10  # short calls: every repeat fits


def test_interleaved_runs_take_their_samples_in_rounds_and_are_checked_right_after_their_last(fake_clock):
    events = []

    def run_of(name, seconds_per_loop):
        def run(loops):
            events.append((name, loops))
            fake_clock.advance_s(seconds_per_loop * loops)
        return run
    hooks = [(lambda n=n: events.append(("poison", n)), lambda n=n: events.append(("check", n))) for n in "ab"]
    ms = timing.measure_interleaved([run_of("a", 0.02), run_of("b", 1e-3)], repeats=3, min_sample_s=0.05,
                                    clock=fake_clock, cpu_times=no_cpu_times, around_last=hooks)
    la, lb = (m.loops_per_sample for m in ms)
    assert la * 0.02 >= 0.05 and lb * 1e-3 >= 0.05  # each calibrated on its own
    assert events[:2] == [("a", 1), ("b", 1)]  # warm-ups
    rounds = events[-10:]
    assert rounds == [("a", la), ("b", lb)] * 2 + [("poison", "a"), ("a", la), ("check", "a"),
                                                   ("poison", "b"), ("b", lb), ("check", "b")]
    assert events[-11] == ("b", lb)  # b's calibration, after a's
    assert [len(m.samples_s) for m in ms] == [3, 3]
    assert ms[0].samples_s == pytest.approx([0.02] * 3, rel=1e-3) and ms[1].samples_s == pytest.approx([1e-3] * 3, rel=1e-3)
    with pytest.raises(ValueError):
        timing.measure_interleaved([run_of("a", 0.02)], repeats=0, min_sample_s=0.05, clock=fake_clock)


def test_a_budget_cuts_the_rounds_of_long_calls_to_what_fits_all_the_runs(fake_clock):
    def rounds(*seconds, budget_s):
        runs = [work_taking(fake_clock, s)[0] for s in seconds]
        ms = timing.measure_interleaved(runs, repeats=10, min_sample_s=0.05, clock=fake_clock,
                                        cpu_times=no_cpu_times, budget_s=budget_s)
        assert len({len(m.samples_s) for m in ms}) == 1  # whole rounds
        return len(ms[0].samples_s)
    assert rounds(0.9, 0.05, 0.05, budget_s=2.5) == 7  # floor(2.5 s x 3 runs / 1.0 s a round)
    assert rounds(1.5, 1.5, budget_s=2.5) == 3  # at least 3
    assert rounds(0.06, 0.06, 0.06, 0.06, 0.06, budget_s=2.5) == 10  # STREAM's rounds: every repeat fits
    assert rounds(0.9, 0.05, 0.05, budget_s=None) == 10


def test_interleaved_runs_share_the_drift_that_runs_one_after_another_split(fake_clock):
    """A memory that halves its speed half-way through: timed one after the other, the second kernel
    takes all of it; in rounds both see it alike, so their ratio stays their true 2:1."""
    state = {"calls": 0}

    def run_of(seconds_per_loop):
        def run(loops):
            state["calls"] += loops
            fake_clock.advance_s(seconds_per_loop * loops * (2 if state["calls"] > 10 else 1))
        return run
    a, b = timing.measure_interleaved([run_of(0.1), run_of(0.05)], repeats=8, min_sample_s=0.01, clock=fake_clock,
                                      cpu_times=no_cpu_times)
    medians = [sorted(m.samples_s)[4] for m in (a, b)]
    assert medians[0] / medians[1] == pytest.approx(2.0, rel=1e-3)
    state["calls"] = 0
    one = timing.measure(run_of(0.1), repeats=8, min_sample_s=0.01, clock=fake_clock, cpu_times=no_cpu_times)
    two = timing.measure(run_of(0.05), repeats=8, min_sample_s=0.01, clock=fake_clock, cpu_times=no_cpu_times)
    assert sorted(one.samples_s)[4] / sorted(two.samples_s)[4] == pytest.approx(1.0, rel=1e-3)  # the drift, not the kernels


def test_the_calibration_run_is_the_first_sample_unless_each_sample_follows_between(fake_clock):
    run, calls = work_taking(fake_clock, 0.2)
    m = timing.measure(run, repeats=3, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times)
    assert calls == [1] * 4 and len(m.samples_s) == 3  # warm-up, calibration = sample 1, two more
    events = []
    run, calls = work_taking(fake_clock, 0.2)
    m = timing.measure(lambda n: (events.append("run"), run(n)), repeats=3, min_sample_s=0.05, clock=fake_clock,
                       cpu_times=no_cpu_times, between=lambda: events.append("between"))
    assert len(calls) == 5 and events == ["run", "run"] + ["between", "run"] * 3
    run, calls = work_taking(fake_clock, 1e-5)
    m = timing.measure(run, repeats=4, min_sample_s=0.01, clock=fake_clock, cpu_times=no_cpu_times)
    assert calls == [1, 1, 10, 100, 1000, 1000, 1000, 1000] and len(m.samples_s) == 4  # calibrated at 1000 loops


def test_long_work_needs_one_loop(fake_clock):
    run, _ = work_taking(fake_clock, 0.2)
    m = timing.measure(run, repeats=3, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times)
    assert m.loops_per_sample == 1
    assert m.samples_s == pytest.approx([0.2] * 3, rel=1e-6)


def test_max_loops_caps_calibration_and_short_samples_warn(fake_clock):
    run, _ = work_taking(fake_clock, 1e-9)
    m = timing.measure(run, repeats=3, min_sample_s=1.0, max_loops=4, clock=fake_clock,
                       cpu_times=no_cpu_times)
    assert m.loops_per_sample == 4
    assert any("too short for the timer" in w for w in m.warnings)


def test_noisy_samples_warn(fake_clock):
    run, _ = work_taking(fake_clock, 0.1, noise=(0.0, 0.05, 0.0, 0.08, 0.01, 0.0, 0.06))
    m = timing.measure(run, repeats=6, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times)
    assert any("wide spread" in w for w in m.warnings)


def test_timer_resolution_from_fake_clock(fake_clock):
    assert timing.timer_resolution_s(fake_clock) == pytest.approx(1e-9)


def test_steal_fraction_recorded_and_flagged(fake_clock):
    # 60 of 1000 jiffies stolen, 40 idle, the rest this process's
    readings = iter([timing.CpuTimes(100, 0, 10_000, 0), timing.CpuTimes(160, 40, 11_000, 900)])
    run, _ = work_taking(fake_clock, 0.1)
    m = timing.measure(run, repeats=2, min_sample_s=0.05, clock=fake_clock, cpu_times=lambda: next(readings))
    assert m.steal_fraction == pytest.approx(0.06) and m.other_load_fraction == 0
    assert any("steal" in w for w in m.warnings) and not any("other work" in w for w in m.warnings)


def test_other_work_beside_a_measurement_is_recorded_and_flagged(fake_clock):
    # as measured on the 2-vCPU dev VM with `yes` beside a 2-thread FMA peak: 122 of 127 jiffies
    # busy, 75 of them this process's (37%); idle, the others' share was 0.5%
    readings = iter([timing.CpuTimes(0, 0, 0, 0), timing.CpuTimes(0, 5, 127, 75)])
    run, _ = work_taking(fake_clock, 0.1)
    m = timing.measure(run, repeats=2, min_sample_s=0.05, clock=fake_clock, cpu_times=lambda: next(readings))
    assert m.other_load_fraction == pytest.approx(47 / 127)
    assert any("other work (processes, or the kernel) took 37% of the CPUs' time" in w for w in m.warnings)
    few = timing.other_load_fraction(timing.CpuTimes(0, 0, 0, 0), timing.CpuTimes(0, 0, 20, 5))
    assert few is None  # 20 ticks cannot say who used them


def test_read_cpu_times_parses_proc_stat(tmp_path):
    p = tmp_path / "stat"
    p.write_text("cpu  2736 0 1344 26265 85 0 18 6 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    got = timing.read_cpu_times(str(p))
    assert (got.steal, got.idle, got.total) == (6, 26265 + 85, 2736 + 1344 + 26265 + 85 + 18 + 6)
    assert got.own >= 0
    assert timing.read_cpu_times(str(tmp_path / "missing")) is None
    assert timing.steal_fraction(None, timing.CpuTimes(1, 0, 2, 0)) is None
    p.write_text("cpu  2736 0 1344 26265 85 0 18\n")  # an older kernel's line: no steal column
    assert timing.read_cpu_times(str(p)).steal == 0
    for short in ("cpu  2736 0 1344\n", "cpu  2736 0 1344 n/a 85 0 18 6\n", "cpu0 1 2 3 4 5\n"):
        p.write_text(short)  # too short, no number, or no aggregate line: unknown, not a crash
        assert timing.read_cpu_times(str(p)) is None


def test_repeats_must_be_positive(fake_clock):
    with pytest.raises(ValueError):
        timing.measure(lambda loops: None, repeats=0, min_sample_s=0.1, clock=fake_clock)


def test_between_runs_right_before_each_sample_and_is_not_timed(fake_clock):
    run, calls = work_taking(fake_clock, 0.1)
    log = []

    def between():
        log.append(len(calls))  # how many run() calls came before it
        fake_clock.advance_s(5.0)  # slow, but outside the timed regions

    m = timing.measure(run, repeats=3, min_sample_s=0.05, clock=fake_clock, cpu_times=no_cpu_times, between=between)
    first_sample = len(calls) - 3
    assert log == [first_sample, first_sample + 1, first_sample + 2]
    assert m.samples_s == pytest.approx([0.1] * 3, rel=1e-6)


def test_a_probe_may_ask_for_fewer_samples_than_the_context_but_never_more(cpu, fake_clock):
    from harness.workload import Context, Workload

    def run(loops):
        fake_clock.advance_s(0.01 * loops)

    w = Workload(name="w", run=run, check=lambda: None, poison=lambda: None, threads=1, dtype="fp64", bytes_per_call=8)
    ctx = Context(cpu=cpu, threads=1, clock=fake_clock, counters="off")
    assert len(ctx.measure(w)["samples_s"]) == ctx.repeats == 10
    assert len(ctx.measure(w, repeats=5)["samples_s"]) == 5
    assert len(ctx.measure(w, repeats=50)["samples_s"]) == 10


def test_a_ctrl_c_swallowed_by_a_ctypes_callback_is_raised_at_the_next_sample(monkeypatch, fake_clock):
    """llvmlite reports Numba's compiled objects through a ctypes callback, where Python drops
    exceptions: a Ctrl-C landing there was lost. The harness's handler remembers it."""
    import ctypes
    import os
    import signal
    import sys

    from harness import interrupt

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    previous = signal.getsignal(signal.SIGINT)
    with interrupt.handled():
        def compile_callback():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100000):  # the handler runs here, inside the callback
                pass

        ctypes.CFUNCTYPE(None)(compile_callback)()
        assert dropped == [KeyboardInterrupt]  # what happened to Ctrl-C before
        with pytest.raises(KeyboardInterrupt):
            timing.timed_s(lambda loops: None, 1, fake_clock)
    assert signal.getsignal(signal.SIGINT) is previous
    timing.timed_s(lambda loops: None, 1, fake_clock)  # nothing pending once the command is over
