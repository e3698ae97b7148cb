"""Pluggable components: a YAML file of a config group names a class by `_target_` and sets only what differs from
its defaults; the class, a dataclass, holds the parameters with their types, defaults and checks (`__post_init__`).

    typed(node, "strategy")   the full parameters, typed: for store keys and the run's saved config
    build(node, "strategy")   the object, checks run: what a stage calls

Adding a strategy (or another component) is one module with its class and one YAML file naming it.
"""

from __future__ import annotations

import dataclasses
import importlib

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, ValidationError

from oml_exp.errors import ConfigError

TARGET = "_target_"


def expanded(cfg: DictConfig) -> DictConfig:
    """A copy of the run config with each component typed in full (the strategy, each picked regularizer and
    attack), so stages, store keys and the saved config see every parameter, defaults included."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.strategy = typed(cfg.strategy, "strategy")
        for group, other in (("regularizer", "averaging"), ("attack", "sft")):
            for name, node in (cfg.get(group) or {}).items():
                if not (isinstance(node, DictConfig) and TARGET in node):
                    raise ConfigError(f"{group}.{name} is set but that {group} is not picked; pick it: "
                                      f"{group}={name} (several: {group}=[{other},{name}])")
                cfg[group][name] = typed(node, f"{group}.{name}")
    return cfg


def component_class(node: DictConfig, where: str) -> type:
    target = node.get(TARGET) if isinstance(node, DictConfig) else None
    if not target:
        raise ConfigError(f"{where} names no class (_target_); pick one of the files in conf/{where.split('.')[0]}/")
    found = locate(str(target), where)
    if not dataclasses.is_dataclass(found):
        raise ConfigError(f"{where}._target_={target!r} is not a component class (a dataclass of its parameters)")
    return found


def locate(target: str, where: str, fix: str = "check the module path"):
    """The class or function `target` ("package.module.Name") names, imported now so that a typo fails before any
    stage runs."""
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):  # ValueError: no module part at all
        found = None
    if not callable(found):
        raise ConfigError(f"{where}._target_={target!r} names nothing importable; {fix}")
    return found


def typed(node: DictConfig, where: str) -> DictConfig:
    """The node merged onto its class's schema: every parameter with its default and type, `_target_` first."""
    return OmegaConf.create({TARGET: node[TARGET], **OmegaConf.to_container(_merged(node, where), resolve=True)})


def build(node: DictConfig, where: str):
    """The component object (nested dataclasses included), its checks run."""
    return OmegaConf.to_object(_merged(node, where))


def _merged(node: DictConfig, where: str) -> DictConfig:
    cls = component_class(node, where)
    params = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != TARGET}
    schema = OmegaConf.structured(cls)
    try:
        return OmegaConf.merge(schema, params)
    except ConfigKeyError as err:
        raise ConfigError(f"{where}.{err.key} is not a parameter of {cls.__name__}; its parameters: "
                          f"{', '.join(schema.keys())}") from None
    except ValidationError as err:
        raise ConfigError(f"{where}.{err.full_key}: {str(err.msg).splitlines()[0]}") from None
