"""Typed configs with dotted ``key=value`` overrides (OmegaConf underneath).

Each command's config is a dataclass of dataclasses with defaults; presets and the
command line override it by dotted keys (``train.steps=200``). Unknown keys and
badly typed values are refused with one sentence that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lab.errors import LabError

C = TypeVar("C")


def flat_keys(cfg) -> list[str]:
    """Every dotted key a config accepts, e.g. ``train.steps``."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{k}" for k in flat_keys(value)]
        else:
            keys.append(f.name)
    return keys


def _unknown_key_error(cfg, key: str) -> LabError:
    section = key.rsplit(".", 1)[0] if "." in key else ""
    keys = flat_keys(cfg)
    siblings = [k for k in keys if section and k.startswith(section + ".")]
    if siblings:
        return LabError(f"Unknown config key '{key}'; valid keys under '{section}': "
                        f"{', '.join(k[len(section) + 1:] for k in siblings)}.")
    return LabError(f"Unknown config key '{key}'; valid keys: {', '.join(keys)}.")


def apply_overrides(cfg: C, overrides: dict | list[str] | None) -> C:
    """A copy of ``cfg`` with overrides applied (a dict of dotted keys, or ``key=value`` strings)."""
    if not overrides:
        return cfg
    if isinstance(overrides, dict):
        items = [(k, v, False) for k, v in overrides.items()]
    else:
        items = []
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep:
                raise LabError(f"Override '{text}' needs the form key=value, e.g. train.steps=200.")
            items.append((key.strip(), value, value != ""))
    valid = set(flat_keys(cfg))
    for key, _, _ in items:
        if key not in valid:
            raise _unknown_key_error(cfg, key)
    base = OmegaConf.structured(cfg)
    try:
        for key, value, parse in items:  # command-line text is parsed (YAML scalars); values are taken as given
            patch = OmegaConf.from_dotlist([f"{key}={value}"]) if parse else OmegaConf.create(_nest(key, value))
            base = OmegaConf.merge(base, patch)
        return OmegaConf.to_object(base)
    except ConfigKeyError as err:
        raise _unknown_key_error(cfg, str(err.full_key)) from err
    except ValidationError as err:
        raise LabError(f"Config key '{err.full_key}' got {err.value!r}, which is not a valid "
                       f"{getattr(err.ref_type, '__name__', err.ref_type) or 'value'} for it.") from err
    except OmegaConfBaseException as err:
        raise LabError(f"Cannot apply overrides ({err}).") from err


def _nest(key: str, value) -> dict:
    head, _, rest = key.partition(".")
    return {head: _nest(rest, value) if rest else value}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict) -> C:
    """Rebuild a config from ``to_dict`` output (keys this version no longer has are ignored)."""
    default = cls()
    known = set(flat_keys(default))
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and any(kk.startswith(key + ".") for kk in known):
                walk(key + ".", v)
            elif key in known:
                flat[key] = v

    walk("", data)
    return apply_overrides(default, flat)
