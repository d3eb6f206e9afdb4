"""The pipeline: stage order, the one training loop, and everything a run folder records.

- :mod:`.pipeline`: the stages in order, each resumable; :mod:`.routes`: scratch or the user's
  model, and stage 3's teacher; :mod:`.preflight`: every check before stage 1 trains;
- :mod:`.stages`: the per-iteration work of stage 1 (GAN) and stage 3 (distillation);
- :mod:`.train`: the one training loop (checkpoints, resume, logging, samples);
- :mod:`.record`: recipe.yaml and history.jsonl, and what a resume may change;
- :mod:`.evaluate`: metric, latency, report.json and report.md;
- :mod:`.detectors`: real-vs-generated classifiers for a finished run (train-detector).

May import: errors, config, system, files, nets, data, metrics, demo, method, families, pretrained,
export.
"""
