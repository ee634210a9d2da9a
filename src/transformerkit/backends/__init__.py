"""Speed measures: transforms of a built model that change how its products run on a machine,
never what they compute (the same function up to summation order).

The math in :mod:`transformerkit.nn` and :mod:`transformerkit.models` is plain PyTorch. Each
measure here is opt-in, applied in place by whoever builds the model for a purpose, and taken
only where it was measured faster on the machine that runs it:

    onednn.use_onednn_products(model)     fp32 CPU training: the projections' products (and their
                                          gradients) on oneDNN instead of ``F.linear``; the trainer
                                          applies it when :mod:`.calibration` measures it faster
    layout.use_decoding_layout(model)     CPU inference: weights reordered into oneDNN's blocked
                                          layout for products with a few rows (decoding); the
                                          generating tasks' loaders apply it when :mod:`.calibration`
                                          measures it faster

Figures for particular machines are in BENCHMARKS.md.
"""
