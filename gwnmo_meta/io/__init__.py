"""I/O and safety: atomic writes, checked checkpoints, one run per folder, signal handling and the
default folders."""
