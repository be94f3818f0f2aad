"""Inner loops and training: the meta-objectives (``inner_loops``), the methods behind one interface
(``methods``, ``reference``, ``l2l``), targets, the meta-training loop (``trainer``), its distributed
support, TensorBoard logging and classic (non-few-shot) training (``classic``)."""
