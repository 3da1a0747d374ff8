"""AMDGPU target IDs: parsing, formatting, ELF ``e_flags`` decoding and code-object
compatibility with an agent's ISA (exact processors and LLVM generic families).

A target ID is ``[amdgcn-amd-amdhsa--]<processor>[:sramecc±][:xnack±]``. Exact processors
are ``gfxABC`` (major A, minor B, stepping C in hex: gfx90a is 9.0.10) or ``gfx1ABC`` (major
1A: gfx1100 is 11.0.0); generic ones are ``gfxN-generic`` or ``gfxN-M-generic``. Pure
functions and frozen values; thread-safe.
"""

from __future__ import annotations

import enum
import re

import attrs

from hal_core import IncompatibleError, InvalidArgumentError

__all__ = [
    "Feature",
    "TargetKind",
    "TargetId",
    "HSA_ISA_PREFIX",
    "ELF_MACH_TO_PROCESSOR",
    "GENERIC_FAMILY",
    "library_candidates",
    "target_from_e_flags",
    "compatibility_problem",
    "check_compatible",
]

HSA_ISA_PREFIX = "amdgcn-amd-amdhsa--"


class Feature(enum.Enum):
    """A target feature's state: ANY (not specified, works either way), UNSUPPORTED (the
    processor has no such feature), OFF (``-``) or ON (``+``)."""

    ANY = "any"
    UNSUPPORTED = "unsupported"
    OFF = "off"
    ON = "on"


class TargetKind(enum.Enum):
    EXACT = "exact"
    GENERIC = "generic"


_EXACT = re.compile(r"^gfx([0-9]{1,2})([0-9])([0-9a-f])$")
_GENERIC = re.compile(r"^gfx([0-9]{1,2})(?:-([0-9]))?-generic$")


@attrs.frozen
class TargetId:
    """A parsed target. ``minor``/``stepping`` are None for generic targets that do not
    name them; ``generic_version`` is the code object's generic version (0: unknown/none)."""

    kind: TargetKind
    processor: str
    major: int
    minor: int | None
    stepping: int | None
    sramecc: Feature = Feature.ANY
    xnack: Feature = Feature.ANY
    generic_version: int = 0

    @classmethod
    def parse(cls, text: str) -> "TargetId":
        """INVALID_ARGUMENT naming the text and the problem for anything malformed."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"target ID must be a str, got {type(text).__name__}")
        body = text.strip()
        if body.startswith(HSA_ISA_PREFIX):
            body = body[len(HSA_ISA_PREFIX) :]
        elif body.startswith("amdgcn-"):
            raise InvalidArgumentError(
                f"target ID {text!r} has an unknown triple; expected {HSA_ISA_PREFIX!r} "
                "followed by a processor such as gfx1100"
            )
        processor, *features = body.split(":")
        processor = processor.lower()
        sramecc = xnack = Feature.ANY
        seen: set[str] = set()
        for feature in features:
            if len(feature) < 2 or feature[-1] not in "+-":
                raise InvalidArgumentError(
                    f"target ID {text!r}: feature {feature!r} must be 'sramecc+', 'sramecc-', "
                    "'xnack+' or 'xnack-'"
                )
            name, state = feature[:-1], Feature.ON if feature[-1] == "+" else Feature.OFF
            if name not in ("sramecc", "xnack"):
                raise InvalidArgumentError(
                    f"target ID {text!r}: unknown feature {name!r} (known: sramecc, xnack)"
                )
            if name in seen:
                raise InvalidArgumentError(f"target ID {text!r} names {name!r} twice")
            seen.add(name)
            if name == "sramecc":
                sramecc = state
            else:
                xnack = state
        m = _EXACT.match(processor)
        if m:
            return cls(
                TargetKind.EXACT,
                processor,
                int(m.group(1)),
                int(m.group(2)),
                int(m.group(3), 16),
                sramecc,
                xnack,
            )
        m = _GENERIC.match(processor)
        if m:
            minor = int(m.group(2)) if m.group(2) is not None else None
            return cls(
                TargetKind.GENERIC,
                processor,
                int(m.group(1)),
                minor,
                None,
                sramecc,
                xnack,
                generic_version=1,
            )
        raise InvalidArgumentError(
            f"target ID {text!r}: processor {processor!r} is neither an exact gfx name "
            "(gfx90a, gfx942, gfx1100) nor a generic family (gfx11-generic, gfx9-4-generic)"
        )

    def format(self) -> str:
        """Canonical short form, e.g. ``gfx942:sramecc+:xnack-`` (ANY features omitted)."""
        out = self.processor
        for name, state in (("sramecc", self.sramecc), ("xnack", self.xnack)):
            if state is Feature.ON:
                out += f":{name}+"
            elif state is Feature.OFF:
                out += f":{name}-"
        return out

    @property
    def hsa_isa_name(self) -> str:
        """The HSA ISA spelling, ``amdgcn-amd-amdhsa--<format()>``."""
        return HSA_ISA_PREFIX + self.format()

    def __str__(self) -> str:
        return self.format()


# EF_AMDGPU_MACH values (LLVM's ELF.h); generic targets are 0x51 and up.
ELF_MACH_TO_PROCESSOR: dict[int, str] = {
    0x2C: "gfx900",
    0x2D: "gfx902",
    0x2E: "gfx904",
    0x2F: "gfx906",
    0x30: "gfx908",
    0x31: "gfx909",
    0x32: "gfx90c",
    0x3F: "gfx90a",
    0x40: "gfx940",
    0x4B: "gfx941",
    0x4C: "gfx942",
    0x4F: "gfx950",
    0x33: "gfx1010",
    0x34: "gfx1011",
    0x35: "gfx1012",
    0x42: "gfx1013",
    0x36: "gfx1030",
    0x37: "gfx1031",
    0x38: "gfx1032",
    0x39: "gfx1033",
    0x3E: "gfx1034",
    0x3D: "gfx1035",
    0x45: "gfx1036",
    0x41: "gfx1100",
    0x46: "gfx1101",
    0x47: "gfx1102",
    0x44: "gfx1103",
    0x43: "gfx1150",
    0x4A: "gfx1151",
    0x55: "gfx1152",
    0x48: "gfx1200",
    0x4E: "gfx1201",
    0x51: "gfx9-generic",
    0x52: "gfx10-1-generic",
    0x53: "gfx10-3-generic",
    0x54: "gfx11-generic",
    0x59: "gfx12-generic",
    0x5F: "gfx9-4-generic",
}

EF_AMDGPU_MACH_MASK = 0xFF
_XNACK_V4_MASK = 0x300
_SRAMECC_V4_MASK = 0xC00
_V4_FEATURE = {
    0x000: Feature.UNSUPPORTED,
    0x100: Feature.ANY,
    0x200: Feature.OFF,
    0x300: Feature.ON,
}
_XNACK_V3 = 0x100
_SRAMECC_V3 = 0x200
# ELF EI_ABIVERSION for ELFOSABI_AMDGPU_HSA: 1 = code object v3, 2 = v4, 3 = v5, 4 = v6.
ABI_VERSION_V3 = 1

#: The generic family an exact agent processor runs (processors absent run only exact or
#: their own name, e.g. gfx908 and gfx90a).
GENERIC_FAMILY: dict[str, str] = {
    **{p: "gfx9-generic" for p in ("gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c")},
    **{p: "gfx9-4-generic" for p in ("gfx940", "gfx941", "gfx942", "gfx950")},
    **{p: "gfx10-1-generic" for p in ("gfx1010", "gfx1011", "gfx1012", "gfx1013")},
    **{
        p: "gfx10-3-generic"
        for p in ("gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036")
    },
    **{
        p: "gfx11-generic"
        for p in ("gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151", "gfx1152")
    },
    **{p: "gfx12-generic" for p in ("gfx1200", "gfx1201")},
}


def library_candidates(agent: TargetId) -> tuple[str, ...]:
    """The target names a prebuilt library is looked up under for a GPU whose ISA is
    ``agent``, most specific first, as IREE selects device libraries: the full target ID
    (``gfx942:sramecc+:xnack-``), the bare processor, then its LLVM generic family with the
    same features and bare (``gfx11-generic``). A concrete code object beats a generic one
    when both ship. Duplicates are dropped."""
    names = [agent.format(), agent.processor]
    family = GENERIC_FAMILY.get(agent.processor)
    if family is not None:
        names += [attrs.evolve(agent, processor=family).format(), family]
    return tuple(dict.fromkeys(names))


def target_from_e_flags(e_flags: int, abi_version: int) -> TargetId:
    """The target an AMDGPU ELF's ``e_flags`` declare. INVALID_ARGUMENT for an unknown
    machine value."""
    mach = e_flags & EF_AMDGPU_MACH_MASK
    processor = ELF_MACH_TO_PROCESSOR.get(mach)
    if processor is None:
        raise InvalidArgumentError(
            f"ELF e_flags {e_flags:#x}: EF_AMDGPU_MACH {mach:#x} names no known AMDGPU "
            "processor; rebuild the code object for a supported target"
        )
    base = TargetId.parse(processor)
    if abi_version <= ABI_VERSION_V3:
        xnack = Feature.ON if e_flags & _XNACK_V3 else Feature.ANY
        sramecc = Feature.ON if e_flags & _SRAMECC_V3 else Feature.ANY
    else:
        xnack = _V4_FEATURE[e_flags & _XNACK_V4_MASK]
        sramecc = _V4_FEATURE[(e_flags & _SRAMECC_V4_MASK) >> 2]
    generic_version = (e_flags >> 24) & 0xFF if base.kind is TargetKind.GENERIC else 0
    return attrs.evolve(base, xnack=xnack, sramecc=sramecc, generic_version=generic_version)


def _feature_problem(name: str, code: Feature, agent: Feature) -> str | None:
    if code in (Feature.ON, Feature.OFF) and agent is not code:
        want = "+" if code is Feature.ON else "-"
        have = {Feature.ON: "+", Feature.OFF: "-"}.get(agent, f" {agent.value}")
        return f"the code object needs {name}{want} but the agent has {name}{have}"
    return None


def compatibility_problem(code: TargetId, agent: TargetId) -> str | None:
    """None when a code object built for ``code`` runs on an agent whose ISA is ``agent``;
    otherwise a sentence saying why not."""
    if agent.kind is not TargetKind.EXACT:
        return f"agent ISA {agent.format()} is not an exact processor"
    if code.kind is TargetKind.EXACT:
        if (code.major, code.minor, code.stepping) != (agent.major, agent.minor, agent.stepping):
            return f"processor {code.processor} differs from the agent's {agent.processor}"
    else:
        if code.generic_version < 1:
            return f"generic code object {code.processor} has no generic version (must be >= 1)"
        family = GENERIC_FAMILY.get(agent.processor)
        if family is not None:
            if family != code.processor:
                return (
                    f"generic family {code.processor} does not cover {agent.processor} "
                    f"(its family is {family})"
                )
        elif code.major != agent.major or (code.minor is not None and code.minor != agent.minor):
            return f"generic family {code.processor} does not cover {agent.processor}"
    for name, c, a in (
        ("sramecc", code.sramecc, agent.sramecc),
        ("xnack", code.xnack, agent.xnack),
    ):
        problem = _feature_problem(name, c, a)
        if problem:
            return problem
    return None


def check_compatible(code: TargetId, agent: TargetId, what: str = "code object") -> None:
    """INCOMPATIBLE naming both targets when ``code`` cannot run on ``agent``."""
    problem = compatibility_problem(code, agent)
    if problem is not None:
        raise IncompatibleError(
            f"{what} targets {code.hsa_isa_name} but the agent's ISA is {agent.hsa_isa_name}: "
            f"{problem}; rebuild it for {agent.processor} (or its generic family "
            f"{GENERIC_FAMILY.get(agent.processor, agent.processor)})"
        )
