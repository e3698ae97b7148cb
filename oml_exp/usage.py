"""The config groups on `oml-exp --help`: every option with one line, the first sentence of its YAML file's comment.

`hydra.help.template` (conf/hydra/default.yaml) calls `${oml_exp.groups:}`. Groups and options come from Hydra's own
config loader, so a sweep's config dir (`-cd sweeps`) adds its groups; the YAML comments stay the one place that
describes an option. Nothing here imports torch: --help and tab completion must stay fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

RESOLVER = "oml_exp.groups"
SENTENCE = re.compile(r"(.+?\.)(?:\s|$)")


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, groups)


def groups(*, _root_) -> str:
    """Each group with its options, this run's choice starred. Hydra puts the help text through string.Template,
    so a `$` of a comment is doubled."""
    loader = GlobalHydra.instance().config_loader()
    folders = [Path(s.path) for s in loader.get_sources() if s.scheme() == "file"]
    chosen = _root_.hydra.runtime.choices
    blocks = [_group(name, loader.get_group_options(name), chosen.get(name), folders)
              for name in sorted(loader.list_groups("")) if name != "hydra"]
    return "\n".join(blocks).replace("$", "$$")


def _group(name: str, options: list[str], chosen: str | None, folders: list[Path]) -> str:
    width = max(len(o) for o in options)
    lines = [f"  {'*' if o == chosen else ' '} {o.ljust(width)}  {first_sentence(_file(folders, name, o))}".rstrip()
             for o in sorted(options)]
    return "\n".join([f"{name}:", *lines])


def _file(folders: list[Path], group: str, option: str) -> Optional[Path]:
    """The option's YAML file where the search path finds it first (None for an option from the ConfigStore)."""
    return next((p for p in (f / group / f"{option}.yaml" for f in folders) if p.is_file()), None)


def first_sentence(path: Optional[Path]) -> str:
    """The first sentence of the comment a YAML file opens with (past a `# @package` line); empty without one."""
    comment = []
    for line in path.read_text().splitlines() if path else []:
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    match = SENTENCE.match(text)
    return match.group(1) if match else text
