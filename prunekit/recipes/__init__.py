"""Shipped recipes (YAML files beside this module; ``recipes/`` at the repo root links here)."""
