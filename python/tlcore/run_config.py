"""Run configurations: ``tlcore train --config run.yaml`` and the file train writes beside its model.

A configuration is a YAML mapping of the command's options, named as the flags without their
dashes (``finetune_epochs: 5``, ``augment: flip,rotate=0.2``, ``label_smoothing: 0.1``); the
command line overrides it. ``write`` records every option a run used, so
``tlcore train --config runs/<model>.yaml`` repeats it exactly.

Usage: ``tlcore train --config examples/flowers_efficientnet.yaml --limit 200``
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

import yaml

from .files import atomic_write_bytes

# Namespace entries that are the command's machinery, not options of the run.
_NOT_OPTIONS = {"run", "argv", "command", "debug", "config", "command_parser", "parser"}
# The CLI's destination prefix for the C++ training options (cli._FIT_DEST).
_FIT_DEST = "fit_option_"


def _destinations(command: argparse.ArgumentParser) -> Dict[str, str]:
    """Configuration name -> destination: each option's flags without dashes, and its destination."""
    names = {}
    for action in command._actions:
        if action.dest in _NOT_OPTIONS:
            continue
        names[action.dest.removeprefix(_FIT_DEST)] = action.dest
        negated = isinstance(action, argparse.BooleanOptionalAction)  # "no_flip: true" is not "flip"
        for flag in action.option_strings:
            if flag.startswith("--") and not (negated and flag.startswith("--no-")):
                names[flag[2:].replace("-", "_")] = action.dest
    return names


def _read(path: Path) -> Dict[str, object]:
    """The file's mapping; ValueError naming the file for anything else."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    if config is None:
        return {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{path}: expected a mapping of option: value")
    return config


def apply(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` parsed again with ``args.config``'s values as the command's defaults."""
    path = Path(args.config)
    command: argparse.ArgumentParser = args.command_parser
    known = _destinations(command)
    defaults = {}
    for key, value in _read(path).items():
        dest = known.get(key.replace("-", "_"))
        if dest is None:
            raise ValueError(f"{path}: unknown option '{key}' (`tlcore {args.command} --help` lists them)")
        defaults[dest] = value
    command.set_defaults(**defaults)
    configured = args.parser.parse_args(args.argv)
    configured.argv, configured.parser = args.argv, args.parser
    return configured


def options(args: argparse.Namespace) -> Dict[str, object]:
    """Every option of the run, under its configuration name (unset training options left out)."""
    out = {}
    for dest, value in vars(args).items():
        if dest in _NOT_OPTIONS or value is None:
            continue
        out[dest[len(_FIT_DEST):] if dest.startswith(_FIT_DEST) else dest] = value
    return out


def write(args: argparse.Namespace, path: Path) -> Path:
    """Writes the run's configuration to ``path`` (atomically) and returns it."""
    text = "# tlcore train --config " + path.name + " repeats this run\n"
    text += yaml.safe_dump(options(args), sort_keys=False, default_flow_style=None)
    return atomic_write_bytes(path, text.encode("utf-8"))
