"""Config layering: harness defaults < method default < --config file < CLI flags < --set.

The layers only: the method's part specs (``method.tokenizer`` and friends) are resolved against
the registered components by the run's builder (``ssl_bench.run.assemble.method_config``), which
sits above the registry.

Configs are mmengine `Config` python files (with `_base_` inheritance); we use nothing else of
mmengine (its Runner's resume is broken under torch.load's weights_only default).
"""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

from mmengine.config import Config, ConfigDict

from ssl_bench.errors import ConfigError
from ssl_bench.hookspecs import PART_KINDS

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.py"


def parse_set_items(items: Iterable[str]) -> dict[str, Any]:
    """`key.sub=value` strings -> {"key.sub": value}; values parsed as Python literals when possible."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}' (example: --set train.epochs=5)")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip()] = value
    return out


#: method keys that hold a component spec (``dict(name=..., **options)`` or None): see
#: ``ssl_bench.methods.parts``. Their options are checked against the component's constructor when the
#: config is resolved (``ssl_bench.run.assemble.method_config``), so new option keys are allowed under them.
COMPONENT_SLOTS = tuple(PART_KINDS)  # the method slots built from the registry (one list, in hookspecs.py)


def _is_open(node: Any, path: list[str]) -> bool:
    """True for dicts that accept new keys: a component spec (a ``name`` plus the component's own
    options, e.g. ``dataset``, ``backbone``, ``method.corruption``; not ``method`` itself), a None
    component slot, or a lookup table whose values are all tuples/lists (``method.decoder_sizes``).
    A component's options are checked against it when it is built."""
    if node is None:
        return len(path) == 2 and path[0] == "method" and path[1] in COMPONENT_SLOTS
    if not isinstance(node, (dict, ConfigDict)) or not path or path == ["method"]:
        return False
    if isinstance(node.get("name"), str):
        return True
    return bool(node) and all(isinstance(v, (tuple, list)) for v in node.values())


def check_keys_exist(cfg: Config, overrides: Mapping[str, Any], origin: str) -> None:
    """Catch typos: every dotted key of an override must exist in the resolved config (keys under a
    component spec are that component's options, checked when it is built)."""
    tree = cfg.to_dict()
    for key in overrides:
        node: Any = tree
        parts = key.split(".")
        for i, part in enumerate(parts):
            if _is_open(node, parts[:i]):
                break
            if not isinstance(node, (dict, ConfigDict)) or part not in node:
                known = sorted(node.keys()) if isinstance(node, (dict, ConfigDict)) else []
                where = ".".join(parts[:i]) or "top level"
                raise ConfigError(
                    f"{origin}: unknown config key '{key}' ('{part}' not found under {where}; "
                    f"known keys there: {', '.join(known)})"
                )
            node = node[part]


def _open_none_slots(cfg: Config, dotted_keys: Iterable[str]) -> None:
    """mmengine refuses to merge a dict (or a dotted sub-key) into a None value; a None component
    slot (e.g. MAE's ``method.noise_schedule=None``) being given options becomes an empty dict first."""
    for key in dotted_keys:
        parts = key.split(".")
        node: Any = cfg
        for part in parts[:-1]:
            if not isinstance(node, (dict, ConfigDict, Config)) or part not in node:
                break
            if node[part] is None:
                node[part] = ConfigDict()
            node = node[part]


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": leaf}; a dict value is descended into, anything else is a leaf."""
    out: dict[str, Any] = {}
    for k, v in dict(tree).items():
        key = f"{prefix}{k}"
        if isinstance(v, (dict, ConfigDict)) and v:
            out.update(flat_keys(v, key + "."))
        else:
            out[key] = v
    return out


def read_config_file(path: str | Path, origin: str) -> dict[str, Any]:
    """Execute an mmengine config file (it is Python) and return its dict; a file that does not parse
    or raises is one ConfigError line with file:line, not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist ({origin})")
    try:
        return Config.fromfile(str(path)).to_dict()
    except SyntaxError as exc:
        name = exc.filename if exc.filename and not exc.filename.startswith("<") else path
        where = f"{name}:{exc.lineno}" if exc.lineno else str(path)
        raise ConfigError(f"{where}: syntax error in {origin} file: {exc.msg}") from None
    except Exception as exc:  # a NameError, a bad _base_, ...: the innermost frame inside the file
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename).name == path.name:
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {origin} file failed to load: {type(exc).__name__}: {exc}") from None


def load_config(
    method_config: str | Path | Mapping[str, Any] | None = None,
    user_config: str | Path | None = None,
    cli: dict[str, Any] | None = None,
    set_items: Iterable[str] = (),
    base: Config | None = None,
) -> Config:
    """The defaults < the method's defaults < ``--config`` < command-line flags < ``--set``.

    ``method_config``: the method's default config file, or its contents already read (the run's
    builder reads it once: it also resolves the part specs against it).
    ``base``: start from this resolved config instead of the defaults and the method's (a resumed
    run's own config); the user's layers merge onto it by the same rules.
    """
    cfg = Config.fromfile(str(DEFAULT_CONFIG)) if base is None else Config(base.to_dict())
    for path, origin in ((None if base is not None else method_config, "method default"), (user_config, "--config")):
        if path is None:
            continue
        # a dict already read is copied: mmengine's merge keeps (and may change) the dicts it is given
        loaded = copy.deepcopy(dict(path)) if isinstance(path, Mapping) else read_config_file(path, origin)
        keys = flat_keys(loaded)
        if origin == "--config":  # a user file is checked like --set: a misspelt key is an error
            check_keys_exist(cfg, keys, f"--config {path}")
        _open_none_slots(cfg, keys)
        cfg.merge_from_dict(loaded)
    if cli:
        cli = {k: v for k, v in cli.items() if v is not None}
        check_keys_exist(cfg, cli, "command-line flag")
        cfg.merge_from_dict(cli)
    overrides = parse_set_items(set_items)
    check_keys_exist(cfg, overrides, "--set")
    _open_none_slots(cfg, overrides)
    cfg.merge_from_dict(overrides)
    return cfg


def config_to_json(cfg: Config | ConfigDict | dict) -> str:
    """Resolved config as JSON (stored in the run dir and the results store), keys in the config's
    own order: a resume reads it back in that order, so everything a run records from its config
    (the parts' options in each metric's protocol, metrics.json) comes out byte for byte as in the
    uninterrupted run. Comparisons sort keys themselves."""
    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return json.dumps(data, default=str, indent=1)
