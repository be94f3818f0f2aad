"""The ``gwnmo-meta`` command line (Typer). Installed as ``gwnmo_meta.cli``."""
