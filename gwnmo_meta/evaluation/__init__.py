"""Evaluation: meta-test scoring of checkpoints and methods (``evaluate``) and the statistics behind
every interval (``stats``)."""
