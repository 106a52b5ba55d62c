"""``loadgen capacity``: the largest load at which every SLO holds, found by search.

    slo.py         the SLO set (latency limits + "x% of requests within"), one verdict per run
    saturation.py  watches a running probe's records; cuts a step on an over-saturated server
    search.py      bracketing, bisection, repetitions at the boundary, budget: pure logic
    probe.py       one probe = one ordinary run (run_benchmark) + the saturation watch
    trace.py       a trace's time scale as the level: the slice, replayed in whole passes
    output.py      capacity.json, the plot, replicas for a target rate
"""
