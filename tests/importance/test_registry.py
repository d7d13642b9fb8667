"""The one importance registry is complete as soon as it is imported: nothing adds to it later."""

import subprocess
import sys

from prunekit.importance import IMPORTANCE, names

PROBE = """
import importlib, pkgutil, sys
import prunekit.importance as imp
before = imp.names()
if sys.argv[1] == "all":
    import prunekit
    for m in pkgutil.walk_packages(prunekit.__path__, "prunekit."):
        if ".cli" not in m.name:
            try:
                importlib.import_module(m.name)
            except ImportError:  # an optional extra that is not installed
                pass
print(before == imp.names(), ",".join(imp.names()))
"""


def _names_after(what: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, what], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_the_rest_of_prunekit_adds_no_criterion():
    alone, everything = _names_after("alone"), _names_after("all")
    assert alone == everything == f"True {','.join(IMPORTANCE.names())}"


def test_kinds_partition_the_registry():
    only_one = {"bn_scale", "bn_folded", "snip", "synflow", "wanda"}
    assert set(names("group")) & set(names("weight")) == set(names()) - only_one
