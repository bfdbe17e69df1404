"""The config's YAML loader: PyYAML's safe loader, made strict and bounded.

- Integers are ASCII decimal only: YAML 1.1 reads ``017`` as octal 15, ``0x50`` as 80, ``1_000``
  as 1000 and ``1:30`` as 90; here they stay strings (and a port written so is refused as one).
  An integer of more than limits.YAML_INT_DIGITS digits is an error, before ``int()`` sees it.
- A key written twice in one mapping is an error (PyYAML keeps the last).
- Nesting deeper than limits.YAML_DEPTH, and documents of more than limits.YAML_NODES nodes with
  every alias counted at its full size (an alias bomb), are refused while the document is
  composed: before anything is expanded or constructed. A recursive alias is refused too.
- Whatever a tag makes the constructors raise (``!!bool maybe``, ``!!float x``, ``!!timestamp
  x``; ``!!python/*`` is unknown to the safe loader) is a YAMLError, never a traceback.

Events come from libyaml (C) when PyYAML has it, else from PyYAML's own parser; the composing
(where the limits are counted) and the constructing are PyYAML's Python code in both.
Imported only where the config is parsed (the hook's fast path reads configcache).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from . import limits
from .errors import InputError

INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
MERGE = "tag:yaml.org,2002:merge"
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")


class _Resolver(Resolver):
    """YAML 1.1's implicit types, but integers and floats only in plain decimal."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (INT, FLOAT)]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Resolver.add_implicit_resolver(INT, re.compile(rf"^{_DECIMAL.pattern}$"), list("-+0123456789"))
_Resolver.add_implicit_resolver(
    FLOAT,
    re.compile(
        r"^[-+]?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


class _Constructor(SafeConstructor):
    def construct_strict_int(self, node: Node) -> int:
        value = self.construct_scalar(node)  # type: ignore[arg-type]
        text = str(value).strip()
        if not _DECIMAL.fullmatch(text):
            raise ConstructorError(None, None, f"expected a decimal integer, got {text[:40]!r}", node.start_mark)
        if len(text.lstrip("+-")) > limits.YAML_INT_DIGITS:
            raise ConstructorError(
                None, None, f"an integer of {len(text)} digits (at most {limits.YAML_INT_DIGITS})", node.start_mark
            )
        return int(text)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                try:
                    first = seen.get(key)
                except TypeError:
                    raise ConstructorError(None, None, "a key that is not a scalar", key_node.start_mark) from None
                if first is not None:
                    raise ConstructorError(
                        "in a mapping",
                        first.start_mark,
                        f"duplicate key {str(key)[:40]!r} (keys must be unique)",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep)  # type: ignore[arg-type,no-any-return]


_Constructor.add_constructor(INT, _Constructor.construct_strict_int)  # type: ignore[type-var]


class _Composer(Composer):
    """Counts nesting and expanded nodes while composing: nothing is expanded to count them."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._depth = 0
        self._sizes: dict[int, int] = {}
        self._where = ""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):  # type: ignore[attr-defined]
            event = self.peek_event()  # type: ignore[attr-defined]
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:  # its own ancestor, still composing
                raise InputError(
                    "invalid config", "a recursive alias", where=f"{self._where}: line {event.start_mark.line + 1}"
                )
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        self._depth += 1
        if self._depth > limits.YAML_DEPTH.value:
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            raise limits.YAML_DEPTH.exceeded(self._depth, f"{self._where}: line {mark.line + 1}")
        try:
            node: Node | None = super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._size(node)
        return node

    def _size(self, node: Node | None) -> int:
        if isinstance(node, ScalarNode):
            return 1
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            return 1
        size = 1
        for child in children:
            size += self._sizes[id(child)]
        limits.YAML_NODES.check(size, f"{self._where}: line {node.start_mark.line + 1}")
        return size


try:
    from yaml.cyaml import CParser as _Events  # type: ignore[attr-defined]

    class _Loader(_Composer, _Events, _Constructor, _Resolver):  # type: ignore[misc]
        def __init__(self, stream: bytes) -> None:
            _Events.__init__(self, stream)
            _Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)

except ImportError:  # PyYAML without libyaml: its own reader, scanner and parser
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _Composer, _Constructor, _Resolver):  # type: ignore[misc,no-redef]
        def __init__(self, stream: bytes) -> None:
            Reader.__init__(self, stream)  # type: ignore[no-untyped-call]
            Scanner.__init__(self)  # type: ignore[no-untyped-call]
            Parser.__init__(self)  # type: ignore[no-untyped-call]
            _Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)


def load(data: bytes, where: str) -> object:
    """The one YAML document in ``data``; YAMLError for bad YAML, InputError for a limit."""
    loader = _Loader(data)
    loader._where = where
    try:
        return loader.get_single_data()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # a tag's constructor
        raise yaml.YAMLError(f"a value its tag cannot make: {type(exc).__name__}: {str(exc)[:120]}") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
