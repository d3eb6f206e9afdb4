"""The baselines' figures summarised: mean ± std over the seeds, speed-up and verdicts per row
(:func:`summarise`), the table and ``baselines.md`` (:func:`markdown_report`), and the machine
the figures were measured on."""
from __future__ import annotations

import os
import platform

import torch

from ..seeds import RULE, Spread, compare, headline_keys, spread_or_none, within_std
from .rows import ROWS, TEACHER_ROW


def machine_record(device: torch.device) -> dict:
    """Where the figures were measured: cores, torch threads, processor, torch version, device."""
    record = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
              "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
              "training_device": str(device)}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def summarise(records: dict[str, dict[int, dict]], latency: dict, generator_names: tuple[str, ...]) -> dict:
    """Mean ± std of every figure per row and generator, and the verdicts.

    Args:
        records: row -> seed -> row.json content.
        latency: from :func:`measure_latencies`.
        generator_names: the family's generators.

    Returns:
        ``{generator: {"primary": key or None, "rows": {row: {...}}}}``; rows are the trained rows,
        then :data:`TEACHER_ROW` (the gcc rows' teachers, or small-distill's) and the family's
        evaluation baselines (e.g. 'bicubic').
    """
    out = {}
    for n in generator_names:
        rows: dict[str, dict] = {}
        for key, by_seed in records.items():
            gens = [r["generators"][n] for r in by_seed.values()]
            metric_keys = {k for g in gens for k in g["student"]["metrics"]}
            entry = {"label": ROWS[key].label, "seeds": sorted(by_seed),
                     "student": {k: spread_or_none(g["student"]["metrics"].get(k) for g in gens) for k in metric_keys},
                     "teacher": {}, "macs": {}, "params_m": None,
                     "iterations": [r.get("iterations") for r in by_seed.values()]}
            if all("teacher" in g for g in gens):
                t_keys = {k for g in gens for k in g["teacher"]["metrics"]}
                entry["teacher"] = {k: spread_or_none(g["teacher"]["metrics"].get(k) for g in gens) for k in t_keys}
            entry["macs"] = {"complete": spread_or_none(g["student"]["macs"]["macs_complete"] for g in gens),
                             "thop": spread_or_none(g["student"]["macs"]["macs"] for g in gens)}
            entry["params_m"] = spread_or_none(g["student"]["macs"]["params"] for g in gens)
            entry["latency_ms"] = spread_or_none(latency.get(key, {}).get(s, {}).get(n) for s in by_seed)
            rows[key] = entry
        teacher_source = next((k for k in ("gcc", "small-distill") if k in records), None)
        if teacher_source is not None and rows[teacher_source]["teacher"]:
            gens = [r["generators"][n] for r in records[teacher_source].values()]
            rows[TEACHER_ROW] = {
                "label": f"teacher (the {teacher_source} rows')", "seeds": sorted(records[teacher_source]),
                "student": rows[teacher_source]["teacher"], "teacher": {},
                "macs": {"complete": spread_or_none(g["teacher"]["macs"]["macs_complete"] for g in gens),
                         "thop": spread_or_none(g["teacher"]["macs"]["macs"] for g in gens)},
                "params_m": spread_or_none(g["teacher"]["macs"]["params"] for g in gens),
                "latency_ms": spread_or_none(latency.get(TEACHER_ROW, {}).get(s, {}).get(n)
                                             for s in records[teacher_source])}
        # The family's evaluation baselines (bicubic, real photos, the untranslated input): the
        # same figures in every row's evaluation; taken from the first row of each seed.
        refs: dict[str, dict[int, dict]] = {}
        for by_seed in records.values():
            for seed, r in by_seed.items():
                for role, values in r["generators"][n].get("references", {}).items():
                    refs.setdefault(role, {}).setdefault(seed, values)
        for role, by_seed in refs.items():
            keys = {k for v in by_seed.values() for k in v}
            rows[role] = {"label": f"{role} (no network)" if role != "real" else "real images (the metric's ceiling)",
                          "seeds": sorted(by_seed), "student": {k: spread_or_none(v.get(k) for v in by_seed.values())
                                                                for k in keys},
                          "teacher": {}, "macs": {}, "params_m": None, "latency_ms": None}
        keys = headline_keys({k for r in rows.values() for k, s in r["student"].items() if s is not None})
        primary = keys[0] if keys else None
        _verdicts(rows, keys)
        out[n] = {"primary": primary, "keys": keys, "rows": rows}
    return out


def _verdicts(rows: dict[str, dict], keys: list[str]) -> None:
    """Fill speed-up and the two verdicts of every row, per headline key."""
    teacher = rows.get(TEACHER_ROW)
    t_ms = teacher["latency_ms"] if teacher else None
    scratch = rows.get("small-scratch")
    for key, row in rows.items():
        row["speedup_vs_teacher"] = (t_ms.mean / row["latency_ms"].mean
                                     if t_ms is not None and row.get("latency_ms") is not None else None)
        row["verdicts"] = {}
        for k in keys:
            s = row["student"].get(k)
            if s is None:
                continue
            v = {}
            ref = scratch["student"].get(k) if scratch is not None and key != "small-scratch" else None
            if ref is not None:
                v["beats_small_scratch"] = compare(k, s, ref)
            own = row["teacher"].get(k)
            t = own if own is not None else (teacher["student"].get(k) if teacher and key != TEACHER_ROW else None)
            if t is not None:
                v["within_teacher_std"] = within_std(k, s, t)
                v["teacher_compared"] = "own" if own is not None else TEACHER_ROW
            row["verdicts"][k] = v


def summary_json(summary: dict) -> dict:
    """:func:`summarise`'s result with every :class:`Spread` as a plain dict."""
    def plain(v):
        if isinstance(v, Spread):
            return v.as_dict()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v
    return plain(summary)


def _fmt(s: Spread | None, digits: int = 4) -> str:
    return "-" if s is None else s.format(digits)


def markdown_table(summary: dict, order: list[str]) -> str:
    """One table per generator: student and teacher metrics (mean ± std), GMACs, params, latency,
    speed-up and the two verdicts on the headline metric."""
    blocks = []
    for n, gen in summary.items():
        rows, keys, primary = gen["rows"], gen["keys"], gen["primary"]
        head = ["row"] + [f"student {k}" for k in keys] + [f"teacher {k}" for k in keys]
        head += ["GMACs (complete)", "GMACs (thop)", "params (M)", "CPU latency b1 (ms)", "speed-up vs teacher",
                 f"beats small-scratch? ({primary})", f"within one teacher std of teacher? ({primary})"]
        lines = [f"### Generator {n}" if len(summary) > 1 else "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for key in [*order, TEACHER_ROW] + [k for k in rows if k not in order and k != TEACHER_ROW]:
            if key not in rows:
                continue
            r = rows[key]
            v = r["verdicts"].get(primary, {})
            within = v.get("within_teacher_std", "-")
            if v.get("teacher_compared") == TEACHER_ROW and within != "-":
                within += " vs the teacher row"
            cells = [f"{key}: {r['label']}"] + [_fmt(r["student"].get(k)) for k in keys]
            cells += [_fmt(r["teacher"].get(k)) for k in keys]
            cells += [_fmt(r["macs"].get("complete")), _fmt(r["macs"].get("thop")), _fmt(r["params_m"]),
                      _fmt(r["latency_ms"], 3),
                      "-" if r["speedup_vs_teacher"] is None else f"{r['speedup_vs_teacher']:.2f}x",
                      v.get("beats_small_scratch", "-"), within]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(line for line in lines if line))
    return "\n\n".join(blocks)


def markdown_report(result: dict) -> str:
    """baselines.md: the table, the seeds and the spread rule, the row definitions, time and machine."""
    m = result["machine"]
    seeds = result["seeds"]
    lines = [f"# Baselines: {result['recipe']} ({result['family']})", "",
             markdown_table(result["_summary"], result["rows"]), "",
             f"Seeds {', '.join(map(str, seeds))}: every figure is the mean ± the sample standard deviation over "
             f"{len(seeds)} seed(s). A difference is called one only where {RULE}; otherwise \"within spread\"."
             + (" With one seed there is no spread and nothing is called." if len(seeds) == 1 else ""),
             "Rows without their own teacher are compared with the teacher row (the gcc rows' teachers). MACs "
             "and parameters are the student's (the teacher row: the teacher's). Latency: "
             f"{result['latency_protocol']}.", ""]
    for n, gen in result["_summary"].items():
        t = gen["rows"].get(TEACHER_ROW)
        if t is not None and gen["primary"] in t["student"]:
            lines.append(f"Teacher's own spread ({n}, {gen['primary']}): {_fmt(t['student'][gen['primary']])} "
                         f"over seeds {', '.join(map(str, t['seeds']))}.")
    iterations = {k: sorted({r.get("iterations") for r in by_seed.values()}, key=str)
                  for k, by_seed in result["runs"].items()}
    lines.append("Training iterations (stage 3's length) per row: "
                 + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in iterations.items()) + ".")
    lines += [f"Note: {note}" for note in result["notes"]]
    lines += ["", "Rows:", ""]
    for key in result["rows"]:
        lines.append(f"- `{key}`: {ROWS[key].definition}.")
    lines += ["", f"Budget and uniform width: {result['uniform']}.", "",
              f"Wall time {result['wall_seconds']:.0f} s (this invocation; the rows' own training and evaluation: "
              f"{result['row_seconds']:.0f} s in all). Machine: {m['cpu_count']} cores, {m['torch_threads']} torch "
              f"threads (OMP_NUM_THREADS={m['omp_num_threads']}), {m['processor']}, torch {m['torch']}, trained on "
              f"{m['training_device']}{', ' + m['gpu'] if 'gpu' in m else ''}."]
    return "\n".join(lines) + "\n"
