"""Forward+backward time of attention with each query–key score, relative to the scaled dot.

    python -m experiments.bench_attention                       # T = 256, 1024, 4096
    python -m experiments.bench_attention --lengths 1024 --scores cosine --json /tmp/attn.json

What is timed: one self-attention layer (``jaxemb.attention.MultiHeadAttention``, causal by
default) on i.i.d. standard normal inputs [batch, T, width]; the jitted gradient of the sum of
its outputs with respect to the parameters and the inputs (a forward and a backward pass). For
each T every score is compiled and run once (warm-up, compile time reported apart), then the
scores run interleaved, one after another, for ``--repeats`` rounds in this one process, so a
slow period of a shared machine hits them all alike. Reported per score: min / median / max
seconds and the ratio of its median to the scaled dot's at the same T.

The issue's target: every score within 1.15× of the scaled dot at T = 1024 on the same backend;
whether each score meets it is computed from the medians (printed and in the JSON).

``--implementation cudnn`` is tried only where the backend is a GPU (cuDNN also needs float16 or
bfloat16: pass ``--dtype bfloat16``); a score whose cuDNN call fails falls back to XLA with a
note, as does every score on a CPU. ``--json PATH`` writes everything printed and the raw times
to PATH, atomically; an existing file is never overwritten.

Memory: the XLA path materialises [batch, heads, T, T] float32 logits (256 MiB at the defaults
and T = 4096) and a few such arrays live at once in the backward pass.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Literal

import tyro

from experiments.benchkit import (
    Printer,
    check_json_path,
    device_environment,
    write_json_atomically,
)
from jaxemb import timing
from jaxemb.attention import ATTENTION_SCORES

TARGET_T = 1024
TARGET_RATIO = 1.15
BASELINE = "scaled_dot"


@dataclasses.dataclass(frozen=True)
class Args:
    """Forward+backward time (jit of the gradient of the summed outputs w.r.t. params and
    inputs) of one multi-head self-attention layer per query-key score, interleaved over
    --repeats rounds after a warm-up; min/median/max seconds and the ratio of medians to
    scaled_dot per sequence length; whether each score is within 1.15x of scaled_dot at
    T=1024."""

    lengths: tuple[int, ...] = (256, 1024, 4096)
    """Sequence lengths T, one after another."""
    repeats: int = 5
    """Timed interleaved rounds per length (after one warm-up per score)."""
    width: int = 64
    """Model width D (= qkv width)."""
    heads: int = 4
    """Attention heads (must divide --width)."""
    batch: int = 1
    """Sequences per call."""
    scores: tuple[Literal[ATTENTION_SCORES], ...] = ATTENTION_SCORES
    """Scores to time (scaled_dot is always included, first)."""
    implementation: Literal["xla", "cudnn"] | None = None
    """Passed to jax.nn.dot_product_attention (default: jax's choice, XLA); cudnn is tried on a
    GPU only, falling back to xla per score on failure."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the inputs and the computation (parameters stay float32)."""
    causal: bool = True
    """Causal (decoder) self-attention; --no-causal for an encoder."""
    seed: int = 0
    """Seed of the inputs and the init."""
    json: str | None = None
    """Also write all results and printed lines to this JSON file (written atomically; refuses
    to overwrite an existing file)."""

    def resolved(self) -> Args:
        """The baseline first, each score once."""
        return dataclasses.replace(self, scores=tuple(dict.fromkeys((BASELINE, *self.scores))))

    def validate(self) -> None:
        if not self.lengths or min(self.lengths) < 1 or min(
                self.repeats, self.width, self.heads, self.batch) < 1:
            raise ValueError("--lengths, --repeats, --width, --heads and --batch must be "
                             "positive")
        if self.width % self.heads:
            raise ValueError(f"--heads {self.heads} must divide --width {self.width}")
        check_json_path(self.json)


def parse_args(argv: list[str] | None = None) -> Args:
    """The resolved, validated config (SystemExit with the reason when it is not valid)."""
    a = tyro.cli(Args, args=argv, prog="python -m experiments.bench_attention",
                 description=__doc__).resolved()
    try:
        a.validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return a


def make_step(score: str, implementation: str | None, args, T: int):
    """(compiled grad function, params, inputs, seconds to compile) for one score at length T."""
    import jax
    import jax.numpy as jnp

    from jaxemb.attention import MultiHeadAttention

    dtype = jnp.dtype(args.dtype)
    m = MultiHeadAttention(num_heads=args.heads, score=score, implementation=implementation,
                           dtype=dtype)
    key = jax.random.key(args.seed)
    x = jax.random.normal(jax.random.fold_in(key, T), (args.batch, T, args.width), dtype)
    params = m.init(jax.random.fold_in(key, 1), x[:, :8])

    def loss(p, x):
        return m.apply(p, x, causal=args.causal).astype(jnp.float32).sum()

    t = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    return compiled, params, x, time.perf_counter() - t


def xla_cost(compiled) -> dict:
    """XLA's own estimate of flops and bytes accessed (noise-free; None where not reported)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 — some backends do not implement it
        cost = None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    cost = cost or {}
    return {"flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed")}


def run_once(f, params, x) -> float:
    import jax

    t = time.perf_counter()
    jax.block_until_ready(f(params, x))
    return time.perf_counter() - t


def _blocking_call(f, params, x):
    """``f(params, x)`` waited for; returns None so that no output stays alive."""
    import jax

    def call() -> None:
        jax.block_until_ready(f(params, x))

    return call


def bench_length(T: int, args: Args, bar) -> dict:
    import jax

    want = args.implementation
    gpu = jax.default_backend() == "gpu"
    steps, used, notes, compile_s, first_s, cost = {}, {}, {}, {}, {}, {}
    for score in args.scores:
        impl = want
        if want == "cudnn" and not gpu:
            impl, notes[score] = "xla", f"cudnn needs a GPU (backend {jax.default_backend()}); xla"
        bar.set_postfix_str(f"T={T} compile {score}")
        try:
            f, p, x, compile_s[score] = make_step(score, impl, args, T)
            first_s[score] = run_once(f, p, x)
        except Exception as e:  # noqa: BLE001 — any cuDNN refusal: fall back, say why
            if impl != "cudnn":
                raise
            notes[score] = f"cudnn failed ({type(e).__name__}: {str(e)[:120]}); xla"
            impl = "xla"
            f, p, x, compile_s[score] = make_step(score, impl, args, T)
            first_s[score] = run_once(f, p, x)
        steps[score], used[score], cost[score] = (f, p, x), impl or "default (xla)", xla_cost(f)
    calls = {s: _blocking_call(*step) for s, step in steps.items()}
    times, _ = timing.interleave(calls, args.repeats, bar, f"T={T} ")
    stats = {s: {**timing.summary(t), "compile_s": compile_s[s], "first_run_s": first_s[s],
                 "implementation": used[s], "note": notes.get(s), **cost[s]}
             for s, t in times.items()}
    base = stats[BASELINE]
    ratios = {s: st["median_s"] / base["median_s"] for s, st in stats.items()}
    flops = {s: (st["flops"] / base["flops"] if st["flops"] and base["flops"] else None)
             for s, st in stats.items()}
    return {"T": T, "scores": stats, "ratios": ratios, "flop_ratios": flops}


def print_table(results: list[dict], log: Printer) -> None:
    log(f"\n{'T':>6s}  {'score':18s} {'impl':14s} {'min ms':>9s} {'median ms':>10s} "
        f"{'max ms':>9s} {'ratio':>7s} {'flops':>7s} {'compile s':>9s}  target")
    for res in results:
        for s, st in res["scores"].items():
            ratio, flops = res["ratios"][s], res["flop_ratios"][s]
            target = "" if res["T"] != TARGET_T else ("ok" if ratio <= TARGET_RATIO else "MISS")
            flop_txt = f"{flops:7.3f}" if flops is not None else f"{'n/a':>7s}"
            log(f"{res['T']:6d}  {s:18s} {st['implementation']:14s} {1e3 * st['min_s']:9.2f} "
                f"{1e3 * st['median_s']:10.2f} {1e3 * st['max_s']:9.2f} {ratio:7.3f} "
                f"{flop_txt} {st['compile_s']:9.2f}  {target}")
        log("")
    log(f"ratio = median time / median time of {BASELINE} at the same T (>1: slower); flops = "
        f"XLA's cost-analysis flop count / {BASELINE}'s (deterministic, unlike the times); "
        f"target: ratio <= {TARGET_RATIO} at T={TARGET_T}")
    for res in results:
        for s, st in res["scores"].items():
            if st["note"]:
                log(f"  note T={res['T']} {s}: {st['note']}")


def target_verdict(results: list[dict]) -> dict:
    """Whether each score is within TARGET_RATIO of the baseline at TARGET_T (computed)."""
    at = [r for r in results if r["T"] == TARGET_T]
    if not at:
        return {"T": TARGET_T, "max_ratio": TARGET_RATIO, "measured": False, "met": None,
                "all_met": None}
    met = {s: r <= TARGET_RATIO for s, r in at[0]["ratios"].items()}
    return {"T": TARGET_T, "max_ratio": TARGET_RATIO, "measured": True, "met": met,
            "all_met": all(met.values())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    log = Printer()
    env = device_environment()
    log("Attention forward+backward time per query-key score, relative to scaled_dot")
    log(f"layer: MultiHeadAttention(heads={args.heads}, width={args.width}, "
        f"{'causal' if args.causal else 'non-causal'}), batch {args.batch}, dtype {args.dtype}, "
        f"implementation {args.implementation or 'default'}; timed: jit(grad(sum(outputs)) "
        f"w.r.t. params and inputs); {args.repeats} interleaved rounds after one warm-up; "
        f"inputs i.i.d. N(0, 1), seed {args.seed}")
    for key, v in env.items():
        log(f"  {key}: {v}")
    results = []
    with tqdm(total=len(args.lengths) * args.repeats * len(args.scores), desc="bench_attention",
              file=sys.stderr, dynamic_ncols=True) as bar:
        for T in args.lengths:
            results.append(bench_length(T, args, bar))
    print_table(results, log)
    verdict = target_verdict(results)
    load = os.getloadavg()
    log(f"load average at the end (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {len(os.sched_getaffinity(0))} usable cores (a load above the core count means "
        "other processes shared the CPUs: the times are noisy)")
    if verdict["measured"]:
        missed = [s for s, ok in verdict["met"].items() if not ok]
        log(f"target (every score within {TARGET_RATIO}x of {BASELINE} at T={TARGET_T}): "
            + ("met by all scores" if not missed else f"missed by {', '.join(missed)}"))
    else:
        log(f"target at T={TARGET_T}: not measured (add {TARGET_T} to --lengths)")
    if args.json is not None:
        payload = {"command": [sys.executable, *sys.argv] if argv is None
                   else ["python", "-m", "experiments.bench_attention", *argv],
                   "config": dataclasses.asdict(args), "environment": env, "results": results,
                   "target": verdict, "load_average_end": load, "output": log.lines}
        write_json_atomically(args.json, payload)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
