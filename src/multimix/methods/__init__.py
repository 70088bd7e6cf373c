"""The registry of methods: one line per method folder, and the plugins other packages add.

A method is a folder `multimix/methods/<name>/` whose `__init__.py` defines `PLUGIN`, a
`base.MethodPlugin` (docs/adding-a-method.md). The shared stages — study expansion, the
training loop, evaluation, the report, the CLI and the parameter file — reach methods only
through this module and never ask which one they run. Another installed package adds a
method by declaring an entry point in the group `multimix.methods` (`name = "pkg.module"`);
built-in methods come first, then entry points by name.

Loading a plugin imports only its light modules (presets, params sections); its networks and
training code load when a run needs them.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from multimix import runs
from multimix.errors import InputError
from multimix.methods.base import Method, MethodPlugin

BUILT_IN = (
    "multimix.methods.multimix",  # MultiMix and its baselines (seeds 001-002)
    "multimix.methods.appaunet",  # KLTV and APPAU-Net (seed 003)
    "multimix.methods.chexseg",  # CheXseg (seed 004)
)
ENTRY_POINTS = "multimix.methods"


def _load() -> dict[str, MethodPlugin]:
    modules = list(BUILT_IN) + [ep.value for ep in sorted(metadata.entry_points(group=ENTRY_POINTS),
                                                          key=lambda ep: ep.name)]
    found: dict[str, MethodPlugin] = {}
    for module in modules:
        try:
            plugin = importlib.import_module(module).PLUGIN
        except (ImportError, AttributeError) as exc:
            raise InputError(f"method plugin {module!r}: cannot load its PLUGIN ({exc})") from None
        if plugin.name in found:
            raise InputError(f"method plugin {module!r}: method name {plugin.name!r} is already registered")
        clash = sorted(set(plugin.presets) & set(runs.PRESETS))
        if clash:
            raise InputError(f"method plugin {module!r}: preset {clash[0]!r} is already another method's")
        found[plugin.name] = plugin
        runs.PRESETS.update(plugin.presets)
    return found


PLUGINS = _load()
PRESETS = runs.PRESETS  # every preset of every method, in registration order


def plugins() -> list[MethodPlugin]:
    return list(PLUGINS.values())


def plugin_of(spec: runs.RunSpec) -> MethodPlugin:
    """The plugin of the method that trains run `spec`."""
    return PLUGINS[spec.variant.method]


def method_class(spec: runs.RunSpec) -> type[Method]:
    """The trainer of run `spec`."""
    return plugin_of(spec).trainer(spec)


def method_subsets(cfg, partitions: dict) -> dict[str, dict]:
    """The methods' own subsets of the split file, each under its method's name."""
    found = {plugin.name: plugin.subsets(cfg, partitions) for plugin in PLUGINS.values()}
    return {name: info for name, info in found.items() if info is not None}


def describe_subsets(name: str, info: dict) -> str:
    return PLUGINS[name].describe_subsets(info)


def load_predictor(best: dict, device):
    """The trained networks of a best.pt, ready for evaluation (best.pt names its method)."""
    method = str(best["method"])
    if method not in PLUGINS:
        raise InputError(f"checkpoint of method {method!r}, which is not registered (have {', '.join(PLUGINS)})")
    return PLUGINS[method].load_predictor(best, device)
