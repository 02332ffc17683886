"""The engine benchmark's parts: ``workloads`` (the child), ``harness`` (the parent), ``ratios``.

``bench/engine.py`` is the entry point; ``bench/vs_prefect.sh`` runs it against Prefect.
"""
