"""Few-shot task distributions over MNIST, Fashion-MNIST and CIFAR-10. Installed as ``gwnmo_meta.tasks``."""
