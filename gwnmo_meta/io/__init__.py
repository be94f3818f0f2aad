"""I/O and safety: atomic writes, checked checkpoints, one run per folder, signal handling, the
default folders and bounded reads of user files."""
