"""What a process runs on: threads, devices, several processes, precision.

- :mod:`.threads`: thread and worker settings chosen before torch loads; :mod:`.coreshare`
  lowers torch's threads while other processes keep the cores busy;
- :mod:`.devices`: device choice and seeding; :mod:`.distributed`: torchrun process groups;
- :mod:`.optim`: mixed precision, Adam and learning-rate schedules shared by every stage;
- :mod:`.finite`: checks for NaN and infinite values; :mod:`.fast_infer`: a fixed-shape
  generator replayed as a CUDA graph or compiled.

May import: errors, config.
"""
