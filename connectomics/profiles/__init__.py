"""Datastack profiles: what the toolkit needs to know of a CAVE datastack, as data.

One TOML file per datastack in this folder (``<name>.toml``): the materialization version used
by default, the table of each role (``nucleus``, ``cell_types``, ``mtypes``, ``proofreading``,
``synapses``), the voxel size of the tables' positions (nm), the standard-transform frame whose y
axis is depth below the pia, and the type vocabulary (excitatory, inhibitory and other labels of
the cell-type table, m-types, proofreading strategies). Each file cites where its names come
from. Adding a datastack means adding a file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, released on PyPI before it joined the standard library
    import tomli as tomllib

#: Table roles a profile may name; ``mtypes`` is optional (V1DD has none).
ROLES: tuple[str, ...] = ("nucleus", "cell_types", "mtypes", "proofreading", "synapses")
#: standard_transform frames by the name a profile gives (positions in nm -> um, y = depth).
TRANSFORMS: tuple[str, ...] = ("minnie65", "v1dd")


class ProfileError(ValueError):
    """An unknown profile, a malformed profile file, or a role the profile does not name."""


@dataclass(frozen=True)
class DatastackProfile:
    """One datastack's tables, units, depth frame and vocabulary (see the module docstring)."""

    name: str
    default_version: int
    tables: dict[str, str]
    voxel_nm: tuple[float, float, float]
    transform: str
    excitatory: tuple[str, ...] = ()
    inhibitory: tuple[str, ...] = ()
    other_types: tuple[str, ...] = ()
    mtypes: tuple[str, ...] = ()
    axon_strategies: tuple[str, ...] = ()
    dendrite_strategies: tuple[str, ...] = ()

    def table(self, role: str) -> str:
        """The table of ``role``; a role this profile does not name is a :class:`ProfileError`."""
        if role not in ROLES:
            raise ProfileError(f"unknown table role {role!r}; roles: {', '.join(ROLES)}")
        if role not in self.tables:
            raise ProfileError(f"datastack profile {self.name!r} names no {role} table "
                               f"(it has: {', '.join(f'{r}={t}' for r, t in self.tables.items())})")
        return self.tables[role]

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Every cell-type label of the vocabulary (excitatory, inhibitory, other)."""
        return self.excitatory + self.inhibitory + self.other_types

    def ei_of(self, label: str) -> str:
        """``"E"``, ``"I"`` or ``"U"`` (a label of no class or outside the vocabulary)."""
        return "E" if label in self.excitatory else "I" if label in self.inhibitory else "U"

    def frame_um(self, xyz_nm: np.ndarray) -> np.ndarray:
        """Positions (n, 3) in nm -> (n, 3) um in the datastack's standard-transform frame, where
        column 1 is the depth below the pia."""
        import standard_transform

        make = {"minnie65": standard_transform.minnie_transform, "v1dd": standard_transform.v1dd_transform}
        xyz = np.asarray(xyz_nm, dtype=float).reshape(-1, 3)
        if not len(xyz):
            return xyz
        return np.asarray(make[self.transform](resolution="nm").apply(xyz), dtype=float)

    def to_dict(self) -> dict:
        return {"name": self.name, "default_version": self.default_version, "tables": dict(self.tables),
                "voxel_nm": list(self.voxel_nm), "transform": self.transform}


def known_profiles() -> list[str]:
    """Names of the profiles shipped in this package, sorted."""
    return sorted(p.name[:-len(".toml")] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name: str) -> DatastackProfile:
    """The profile of datastack ``name``; an unknown name is a :class:`ProfileError` listing the
    known ones, a malformed file one naming the file and field."""
    known = known_profiles()
    if name not in known:
        raise ProfileError(f"unknown datastack profile {name!r}; known profiles: {', '.join(known)} "
                           f"(add connectomics/profiles/{name}.toml to support it)")
    where = f"connectomics/profiles/{name}.toml"
    try:
        raw = tomllib.loads(resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: not valid TOML ({e})") from None
    try:
        tables = {str(k): str(v) for k, v in raw["tables"].items()}
        vocab = raw.get("vocabulary", {})
        profile = DatastackProfile(
            name=str(raw["name"]), default_version=int(raw["default_version"]), tables=tables,
            voxel_nm=tuple(float(v) for v in raw["voxel_nm"]), transform=str(raw["transform"]),
            excitatory=tuple(vocab.get("excitatory", ())), inhibitory=tuple(vocab.get("inhibitory", ())),
            other_types=tuple(vocab.get("other", ())), mtypes=tuple(vocab.get("mtypes", ())),
            axon_strategies=tuple(vocab.get("axon_strategies", ())),
            dendrite_strategies=tuple(vocab.get("dendrite_strategies", ())),
        )
    except KeyError as e:
        raise ProfileError(f"{where}: missing field {e.args[0]!r}") from None
    if profile.name != name:
        raise ProfileError(f"{where}: field 'name' is {profile.name!r}, not {name!r}")
    unknown = sorted(set(tables) - set(ROLES))
    if unknown:
        raise ProfileError(f"{where}: [tables] has unknown role(s) {unknown}; roles: {', '.join(ROLES)}")
    for role in ("cell_types", "synapses"):
        profile.table(role)
    if len(profile.voxel_nm) != 3 or min(profile.voxel_nm) <= 0:
        raise ProfileError(f"{where}: voxel_nm must be 3 positive numbers, got {list(profile.voxel_nm)}")
    if profile.transform not in TRANSFORMS:
        raise ProfileError(f"{where}: transform {profile.transform!r}; known: {', '.join(TRANSFORMS)}")
    return profile
