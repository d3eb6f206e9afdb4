"""The baselines' result as data (:func:`build_result`: the JSON ``baselines.json`` and
``docs/results/baselines_<family>.json`` hold) and its tables rendered from that data alone
(:func:`render_markdown`), with the issue's targets checked on it and the machine and commit it came
from (recorded by :mod:`gancompress.experiments.provenance`).
"""
from __future__ import annotations

import datetime

from ...metrics.keys import HEADLINE_ORDER, HIGHER_IS_BETTER
from ..seeds import spread_or_none
from .rows import ROWS
from .stats import paired_difference

FORMAT = "gancompress-baselines/2"
#: The paired comparisons reported, as (row a, row b): a - b, signed so that positive means a is better.
COMPARISONS = (("gcc", "pruned-finetune"), ("gcc", "kd"), ("gcc", "small-scratch"), ("kd", "pruned-finetune"))
#: Families whose target is "gcc beats pruned-finetune": the interval of the difference above 0.
BEATS_FINETUNE = ("pix2pix", "cyclegan", "srgan")
#: SRGAN: every student must beat bicubic by at least this many dB on the held-out images.
SR_MARGIN_DB = 0.3


def _spread(per_seed: dict) -> dict:
    s = spread_or_none(per_seed.values())
    return {"per_seed": per_seed, "mean": s.mean if s else None, "std": s.std if s else None}


def _metric_table(by_seed: dict[int, dict]) -> dict[str, dict]:
    """seed -> {key: value} into key -> {"per_seed", "mean", "std"} (the scored keys only)."""
    keys = sorted({k for v in by_seed.values() for k in v if k in HIGHER_IS_BETTER})
    return {k: _spread({str(s): v[k] for s, v in by_seed.items() if k in v}) for k in keys}


def build_result(*, family: str, names: tuple[str, ...], records: dict[str, dict[int, dict]],
                 teacher_eval: dict[int, dict], shared: dict, latency: dict, settings: dict, resamples: int) -> dict:
    """Everything the tables show, per generator: the teacher, the sparse model before pruning, the
    pruned net before fine-tuning, every row per seed with mean and std, the family's references,
    the paired differences, the targets and the distilling rows' diagnostics."""
    seeds = sorted({s for by_seed in records.values() for s in by_seed})
    generators = {}
    for n in names:
        rows = {}
        for key, by_seed in records.items():
            gens = {s: r["generators"][n] for s, r in by_seed.items()}
            first = next(iter(gens.values()))
            rows[key] = {"label": ROWS[key].label, "definition": ROWS[key].definition,
                         "metrics": _metric_table({s: g["metrics"] for s, g in gens.items()}),
                         "gmacs_complete": first["macs"]["macs_complete"], "gmacs_thop": first["macs"]["macs"],
                         "params_m": first["macs"]["params"],
                         "latency_ms": _spread({str(s): latency.get(f"{key}@{s}", {}).get(n) for s in by_seed
                                                if latency.get(f"{key}@{s}", {}).get(n) is not None}),
                         "iterations": sorted({r["diagnostics"].get("iterations") for r in by_seed.values()},
                                              key=str),
                         "diagnostics": {str(s): r["diagnostics"] for s, r in by_seed.items()}}
        refs: dict[str, dict[int, dict]] = {}
        for by_seed in records.values():
            for s, r in by_seed.items():
                for role, values in r["generators"][n].get("references", {}).items():
                    refs.setdefault(role, {}).setdefault(s, values)
        teacher = {s: e.get(n, {}).get("teacher", {}) for s, e in teacher_eval.items()}
        shared_metrics = shared["metrics"].get(n, {})
        entry = {
            "teacher": {"metrics": _metric_table(teacher), "gmacs_complete": shared["teacher_macs"][n]["macs_complete"],
                        "params_m": shared["teacher_macs"][n]["params"],
                        "latency_ms": latency.get("teacher", {}).get(n)},
            "sparse_model": {"metrics": _metric_table({seeds[0]: shared_metrics.get("sparse", {})}),
                             "gmacs_complete": shared["macs"][n]["sparse"]["macs_complete"]},
            "pruned_before_finetune": {"metrics": _metric_table({seeds[0]: shared_metrics.get("pruned", {})}),
                                       "gmacs_complete": shared["macs"][n]["pruned"]["macs_complete"]},
            "budget_gmacs": shared["budget_gmacs"][n],
            "references": {role: {"metrics": _metric_table(by_seed)} for role, by_seed in refs.items()},
            "rows": rows,
        }
        keys = [k for k in HEADLINE_ORDER if any(k in r["metrics"] for r in rows.values())]
        entry["headline"] = keys[0] if keys else None
        entry["paired"] = {}
        # the shared teacher joins as a row of its own: gcc against it, and it against fine-tuning
        # alone (the headroom)
        pool = {**rows, "teacher": {"metrics": entry["teacher"]["metrics"]}} if entry["teacher"]["metrics"] else rows
        for a, b in (*COMPARISONS, ("gcc", "teacher"), ("teacher", "pruned-finetune")):
            if a in pool and b in pool:
                entry["paired"][f"{a} - {b}"] = {
                    k: paired_difference(_values(pool[a], k), _values(pool[b], k), higher_is_better=HIGHER_IS_BETTER[k],
                                         resamples=resamples)
                    for k in keys if k in pool[a]["metrics"] and k in pool[b]["metrics"]}
        entry["targets"] = targets(family, entry)
        entry["headroom"] = headroom(entry)
        generators[n] = entry
    return {"format": FORMAT, "family": family, "seeds": seeds, "settings": settings, "generators": generators,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _values(row: dict, key: str) -> dict[int, float]:
    return {int(s): v for s, v in row["metrics"].get(key, {}).get("per_seed", {}).items() if v is not None}


def targets(family: str, entry: dict) -> list[dict]:
    """The protocol's targets for this family, each with the figures it was judged on and whether
    it was met (None where a row it needs did not run)."""
    out = []
    head = entry["headline"]
    rows = entry["rows"]
    if family in BEATS_FINETUNE:
        d = entry["paired"].get("gcc - pruned-finetune", {}).get(head)
        met = None if d is None or d["ci_low"] is None else d["ci_low"] > 0
        out.append({"target": f"the 95 % interval of gcc - pruned-finetune ({head}) lies above 0 (gcc better)",
                    "value": None if d is None else [d["ci_low"], d["ci_high"]], "met": met})
    if family == "srgan" and "bicubic" in entry["references"]:
        bicubic = entry["references"]["bicubic"]["metrics"].get("psnr", {}).get("mean")
        margins = {k: min(v - bicubic for v in _values(r, "psnr").values())
                   for k, r in rows.items() if bicubic is not None and _values(r, "psnr")}
        out.append({"target": f"every student beats bicubic by at least {SR_MARGIN_DB} dB (PSNR, every seed)",
                    "value": margins, "met": bool(margins) and all(m >= SR_MARGIN_DB for m in margins.values())})
    if family == "sagan" and "gcc" in rows:
        t = entry["teacher"]["metrics"].get(head, {})
        g = rows["gcc"]["metrics"].get(head, {})
        met = None
        if t.get("mean") is not None and g.get("mean") is not None:
            met = abs(g["mean"] - t["mean"]) <= (t["std"] or 0.0)
        out.append({"target": f"the gcc student's mean {head} lies within one standard deviation of its teacher's "
                              "(the teacher scored on every seed's samples)",
                    "value": {"gcc": g.get("mean"), "teacher": t.get("mean"), "teacher_std": t.get("std")},
                    "met": met})
    return out


def headroom(entry: dict) -> dict | None:
    """Whether the teacher's generator had anything to give: it must beat the pruned net fine-tuned
    alone, or imitating it can at best reach what pruned-finetune already reached (the terms on the
    teacher D's features may still help). None where either row is missing."""
    d = entry["paired"].get("teacher - pruned-finetune", {}).get(entry["headline"])
    if d is None or d["ci_low"] is None:
        return None
    return {"interval": [d["ci_low"], d["ci_high"]], "mean": d["mean"], "teacher_better": d["ci_low"] > 0}


# --------------------------------------------------------------------------------------------
# Tables, from the result alone.

def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _cell(metric: dict | None) -> str:
    if not metric or metric.get("mean") is None:
        return "-"
    if metric.get("std") is None:
        return _fmt(metric["mean"])
    return f"{_fmt(metric['mean'])} ± {_fmt(metric['std'], 2)}"


def _per_seed(metric: dict | None) -> str:
    if not metric:
        return "-"
    return ", ".join(_fmt(v) for v in metric["per_seed"].values())


def render_markdown(result: dict) -> str:
    """The tables of a baselines result (its JSON), as Markdown."""
    s = result["settings"]
    lines = [f"# Baselines: {s['recipe']} ({result['family']})", "",
             f"Generated from `{s.get('json_name', 'baselines.json')}` by `gancompress baselines`; do not edit.", ""]
    for n, g in result["generators"].items():
        head = g["headline"]
        if head is None:
            continue
        better = "higher" if HIGHER_IS_BETTER[head] else "lower"
        if len(result["generators"]) > 1:
            lines += [f"## Generator {n}", ""]
        lines += [f"{head} ({better} is better), mean ± sample standard deviation over seeds "
                  f"{', '.join(map(str, result['seeds']))}; the budget is {_fmt(g['budget_gmacs'])} GMACs.", "",
                  f"| row | {head} | per seed | GMACs (complete) | params (M) | CPU latency b1 (ms) |",
                  "|---|---|---|---|---|---|"]
        t = g["teacher"]
        lines.append(f"| teacher (shared, frozen) | {_cell(t['metrics'].get(head))} | {_per_seed(t['metrics'].get(head))}"
                     f" | {_fmt(t['gmacs_complete'])} | {_fmt(t['params_m'])} | {_fmt(t['latency_ms'], 3)} |")
        for key, label in (("sparse_model", "sparse model, before pruning"),
                           ("pruned_before_finetune", "pruned net, before any training")):
            e = g[key]
            lines.append(f"| {label} | {_cell(e['metrics'].get(head))} | - | {_fmt(e['gmacs_complete'])} | - | - |")
        for key, r in g["rows"].items():
            lines.append(f"| `{key}`: {r['label']} | {_cell(r['metrics'].get(head))} | "
                         f"{_per_seed(r['metrics'].get(head))} | {_fmt(r['gmacs_complete'])} | {_fmt(r['params_m'])} | "
                         f"{_cell(r['latency_ms'])} |")
        for role, ref in g["references"].items():
            lines.append(f"| {role} (no network) | {_cell(ref['metrics'].get(head))} | - | - | - | - |")
        lines += ["", f"Paired differences over the seeds ({head}; positive: the first row is better), with the 95 % "
                      "percentile-bootstrap interval of the mean:", "",
                  "| comparison | mean difference | 95 % interval | per seed |", "|---|---|---|---|"]
        for name, by_key in g["paired"].items():
            d = by_key.get(head)
            if d is None or d["mean"] is None:
                continue
            lines.append(f"| {name} | {_fmt(d['mean'], 3)} | [{_fmt(d['ci_low'], 3)}, {_fmt(d['ci_high'], 3)}] | "
                         f"{', '.join(_fmt(v, 3) for v in d['per_seed'].values())} |")
        lines += ["", "Targets:", ""]
        for t in g["targets"]:
            verdict = {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]
            lines.append(f"- {t['target']}: {verdict} ({_value_text(t['value'])})")
        room = g.get("headroom")
        if room is not None:
            lines += ["", f"Headroom: teacher - pruned-finetune {_fmt(room['mean'], 3)} "
                          f"[{_fmt(room['interval'][0], 3)}, {_fmt(room['interval'][1], 3)}]; "
                      + ("the teacher is better than the pruned net fine-tuned alone, so there is something to distil."
                         if room["teacher_better"] else
                         "the pruned net fine-tuned alone is not clearly worse than its teacher, so imitating the "
                         "teacher's generator has nothing to give and any gain over pruned-finetune comes from the "
                         "rest (the teacher D's features); a missed target says little about the method here: "
                         "tighten prune.budget or train a stronger teacher (baselines.teacher_epochs).")]
        diag = _diagnostics_text(g["rows"], n)
        if diag:
            lines += ["", "Diagnostics of the distilling rows (stage 3's log, every seed):", ""] + diag
        lines.append("")
    lines += ["Rows:", ""]
    first = next(iter(result["generators"].values()))
    for key, r in first["rows"].items():
        lines.append(f"- `{key}`: {r['definition']}.")
    lines += ["", "Settings: " + ", ".join(f"{k} {_fmt(v)}" for k, v in s.items()
                                           if k not in ("command", "machine", "commit", "commit_at_end", "recipe", "json_name")) + ".",
              "", f"Command: `{s['command']}`", "",
              f"Commit {_commit_text(s['commit'])}"
              f"{' at the start, ' + _commit_text(s['commit_at_end']) + ' at the end' if 'commit_at_end' in s else ''}; "
              f"machine: {s['machine']['cpu_count']} cores, {s['machine']['torch_threads']} torch threads, "
              f"{s['machine']['processor']}, torch {s['machine']['torch']}, trained on {s['machine']['training_device']}"
              f"{', ' + s['machine']['gpu'] if 'gpu' in s['machine'] else ''}; {result['date']}."]
    return "\n".join(lines) + "\n"


def _commit_text(record: dict) -> str:
    return f"{record.get('commit') or 'unknown'}{' (with uncommitted changes)' if record.get('dirty') else ''}"


def _value_text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v, 3) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v, 3)}" for k, v in value.items())
    return _fmt(value, 3)


def _diagnostics_text(rows: dict, name: str) -> list[str]:
    """The distilling rows' diagnostics under generator ``name``: its own mask points (a run of
    several generators logs ``active_<name>`` for each), and the run's gradient norms."""
    lines = []
    for key in ("gcc", "kd"):
        if key not in rows:
            continue
        per_seed = rows[key]["diagnostics"]

        def own(d: dict, k: str) -> bool:
            return k == f"active_{name}" or (k.startswith("active_") and f"active_{name}" not in d)
        actives = [(s, k, v) for s, d in per_seed.items() for k, v in d.items() if own(d, k)]
        if actives:
            lowest = "; ".join(f"seed {s}: " + "/".join(_fmt(x, 2) for x in v["lowest"]) for s, k, v in actives)
            first = ", ".join(f"{_fmt(v['first_step_with_a_channel_off'])}" for _, _, v in actives)
            share = ", ".join(f"{v['log_points_with_a_channel_off']}/{v['log_points']}" for _, _, v in actives)
            lines.append(f"- `{key}`: lowest active fraction per mask point {lowest}; first iteration with a channel "
                         f"off {first}; log points with a channel off {share}.")
        starts = [d.get("grad_norms_start") for d in per_seed.values() if d.get("grad_norms_start")]
        if starts:
            names = list(starts[0])
            mean = {k: sum(s.get(k, 0.0) for s in starts) / len(starts) for k in names}
            lines.append(f"- `{key}`: gradient norm of each term on the student at the first iteration (mean over seeds): "
                         + ", ".join(f"{k[5:]} {_fmt(v, 3)}" for k, v in mean.items()) + ".")
        weights = [d["balanced_weights"] for d in per_seed.values() if d.get("balanced_weights")]
        if weights:
            lines.append(f"- `{key}`: weights chosen by distill.balance: task, per seed: content "
                         + ", ".join(_fmt(w["content"], 3) for w in weights) + "; texture "
                         + ", ".join(_fmt(w["texture"], 3) for w in weights) + ".")
    return lines
