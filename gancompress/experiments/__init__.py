"""Studies that run the pipeline many times and compare what comes out.

- :mod:`.baselines`: the student against the nets people would train instead, over seeds;
- :mod:`.ablation`: the student discriminator's modes side by side; :mod:`.seeds`: seed schedules
  and the spread rule;
- :mod:`.benchmark`: stage-3 rate and latency, teacher vs student; :mod:`.bench_cpu`: one run alone
  and two at once; :mod:`.gpu_check`: every CUDA path in one command.

May import: errors, config, system, files, nets, data, metrics, demo, method, families, pretrained,
export, run.
"""
