"""What makes GCC GCC, as pure functions and small controllers that know no family.

- :mod:`.losses`: GAN losses, Gram matrices, content and texture distances;
- :mod:`.sparsity`: stage 1's L1 penalty on norm scales or conv weights;
- :mod:`.pruning`: channel importance, the global-threshold budget search and physical pruning
  with torch-pruning; :mod:`.latency_budget`: the same search by measured latency;
  :mod:`.layer_pruners`: torch-pruning pruners for our custom layers;
- :mod:`.taps`: feature taps and the 1x1 adapters of the distillation terms;
- :mod:`.coordination`: the gap, the EMA target and the alpha objective;
- :mod:`.discriminators`: the student discriminator's modes (selective, DMD, GLeaD), by registry;
- :mod:`.classifier`: real-vs-generated classifiers and the classifier-guided loss.

May import: errors, config, system, files, nets, data, metrics, demo.
"""
