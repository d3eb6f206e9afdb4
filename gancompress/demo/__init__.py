"""The demo data: small real-image datasets made from the photos that ship with scikit-image,
and the small evaluator nets (segmenter, feature net) each demo trains next to its data.

May import: errors, config, system, files, nets, data, metrics.
"""
