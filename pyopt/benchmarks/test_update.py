"""Update-only benchmarks: one optimizer step with fixed gradients, every implementation.

Cases (``workloads.update_cases``): float32 size sweep 1K..64M, bfloat16 and float64 at 4M,
many small tensors (200 x 10K, 1000 x 1K), clipnorm / global_clipnorm variants, and the
chapter's MLP 13-4-1; issue #20's rules (Adagrad, RMSprop plain and centered with momentum,
Adamax, Nadam, Lion, AdamW) at 16M and 200 x 10K; an Embedding of 1M x 64 with an
IndexedSlices gradient of 4096 repeated ids (Adagrad and Adam, pyopt's dense and lazy steps).
Each case first runs one step from the known initial state and checks the parameters against
a float64 reference (no benchmark times a no-op).
"""

from __future__ import annotations

import time

from .implementations import IMPLEMENTATIONS, case_note
from .plugin import build_or_skip, selected
from .workloads import (
    FLOOR_IMPL,
    SLOTS_PER_RULE,
    ParamUnchanged,
    case_impls,
    check_runner,
    data_for,
    runs_call_floor,
    update_cases,
)

# Keras' Adam and TF's ResourceApplyAdam compute the bias correction in the variable's dtype:
# in bfloat16, beta_2 = 0.999 rounds to 1.0, so alpha = lr*sqrt(1 - beta_2^t)/(1 - beta_1^t) = 0
# and the parameters never move (m and v are still updated: the step does its full memory
# traffic). Those cases are timed and flagged instead of failed; so is torch's fused SGD on
# bfloat16, which does not update large parameters at all.
BF16_NO_UPDATE = {
    "adam": "parameters never change: in bfloat16, beta_2=0.999 rounds to 1.0, so the step size is 0",
    # torch 2.13 CPU: SGD(fused=True) updates 8-element bfloat16 parameters but leaves
    # 65536-element and larger ones unchanged (checked directly with torch, outside pyopt).
    "gd": "torch fused SGD leaves bfloat16 parameters of >= 64K elements unchanged (torch bug)",
    "momentum": "torch fused SGD leaves bfloat16 parameters of >= 64K elements unchanged (torch bug)",
}


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    quick = metafunc.config.getoption("quick")
    params, ids = [], []
    for workload, rule, clip in update_cases(quick):
        names = list(case_impls(workload, rule, clip, quick))
        if runs_call_floor(workload, clip):
            names.append(FLOOR_IMPL)
        for name in selected(metafunc.config, names):
            params.append((workload, rule, clip, name))
            ids.append(f"{rule}{'-' + clip if clip else ''}-{workload.name}-{name}")
    metafunc.parametrize("case", params, ids=ids)


def test_update(case, timed, benchmark):
    workload, rule, clip, name = case
    impl = IMPLEMENTATIONS[name]
    benchmark.group = f"{rule}{'-' + clip if clip else ''} {workload.name}"
    data = data_for(workload)
    t0 = time.perf_counter()
    runner = build_or_skip(lambda: impl.build(rule, clip, data, steps_per_call=workload.steps_per_call))
    runner.step()  # the first call (steps_per_call steps): trace/compile + the value check
    first_step_s = time.perf_counter() - t0
    note = case_note(name, rule, workload)
    if name == FLOOR_IMPL:  # updates nothing, by design; but it must take every input
        inputs = workload.n_tensors * (1 + SLOTS_PER_RULE[rule]) + workload.n_tensors  # variables, slots, grads
        graph_fn = runner.step.get_concrete_function()
        captured = len(graph_fn.captured_inputs)
        assert captured >= inputs, f"the call floor takes {captured} inputs, not the {inputs} it should"
        graph_def = graph_fn.graph.as_graph_def()  # the top graph and the functions it calls (a loop's body)
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        consumed = max((sum(not i.startswith("^") for i in n.input) for n in nodes if n.op == "Assert"), default=0)
        assert consumed >= inputs + 1, f"no Assert consumes the floor's {inputs} inputs (TF would prune them)"
        rel_err, note = None, f"no update: the cost of a tf.function call taking these {inputs} variables and gradients"
    else:
        try:
            rel_err = check_runner(data, rule, clip, name, runner, steps=workload.steps_per_call)
        except ParamUnchanged:
            if not (workload.dtype == "bfloat16" and (rule == "adam" or name == "torch")):
                raise
            rel_err, note = None, BF16_NO_UPDATE[rule]
    timed(
        runner.step,
        impl=name,
        label=impl.label,
        rule=rule,
        clip=clip,
        workload=workload.name,
        kind=workload.kind,
        dtype=workload.dtype,
        n_tensors=workload.n_tensors,
        n_elements=workload.n_elements,
        bytes_per_step=workload.bytes_per_step(rule),
        first_step_s=first_step_s,
        check_rel_err=rel_err,
        train=False,
        note=note,
        steps_per_call=workload.steps_per_call,
        rows_touched=len(set(data.indices[0].tolist())) if workload.sparse else None,
    )
