"""`Section`: the base of every part of the configuration, a frozen record of keyword fields.

A section is what a frozen, keyword-only dataclass would be (mypy reads it as one, through
`dataclass_transform`): its fields are its `opt(...)` class attributes in order, each with
its default or required; it is built by keyword, cannot be changed after, and compares,
hashes and prints by its fields. `fields(cls)` lists them, `replace(obj, **changes)` makes
a changed copy.

Why not `dataclasses`: a dataclass is made by compiling and running six generated functions
per class at import time; for the 27 classes of the configuration that was 20 ms of the
start of every `maildesk` command (issue 15 asks an operator's command to answer in under
100 ms). Here the methods are written once and shared, and a class costs a loop over its
attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T", bound="Section")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field: its name and `type` (the annotation, as written), its default (or
    `default_factory`, or neither: required), and `metadata` (for the configuration file:
    the converter and the TOML key)."""

    __slots__ = ("name", "type", "default", "default_factory", "metadata")

    def __init__(self, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
                 metadata: dict[str, Any] | None = None) -> None:
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.metadata = metadata or {}

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          metadata: dict[str, Any] | None = None) -> Any:
    """A field with a default, a factory for one, or neither (required)."""
    return Field(default, default_factory, metadata)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field, Field))
class Section:
    """Subclass it and declare fields as `name: type = field(...)` (or a plain default)."""

    __fields__: tuple[Field, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own: dict[str, Field] = {f.name: f for f in cls.__fields__}  # inherited first, in order
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if "ClassVar" in str(annotation):  # of the class, as on a dataclass
                continue
            value = cls.__dict__.get(name, MISSING)
            f = value if isinstance(value, Field) else Field(default=value)
            f.name, f.type = name, annotation
            own[name] = f
            if isinstance(value, Field):  # the class attribute is the default, as on a dataclass
                if f.default is MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, f.default)
        cls.__fields__ = tuple(own.values())

    def __init__(self, **values: Any) -> None:
        put = object.__setattr__
        for f in self.__fields__:
            if f.name in values:
                put(self, f.name, values.pop(f.name))
            elif f.default is not MISSING:
                put(self, f.name, f.default)
            elif f.default_factory is not MISSING:
                put(self, f.name, f.default_factory())
            else:
                raise TypeError(f"{type(self).__name__}() missing required keyword argument: {f.name!r}")
        if values:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(values))!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in self.__fields__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__fields__)
        return f"{type(self).__name__}({inner})"


def fields(obj: Section | type[Section]) -> tuple[Field, ...]:
    """The fields of a section (class or instance), in declaration order, inherited first."""
    return obj.__fields__


def replace(obj: T, **changes: Any) -> T:
    """A copy of `obj` with `changes`, built (and so checked) like a new one."""
    return type(obj)(**({f.name: getattr(obj, f.name) for f in obj.__fields__} | changes))
