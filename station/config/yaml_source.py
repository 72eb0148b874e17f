"""Reading YAML with positions: plain data plus the 1-based line where every key was written.

`YamlReader` composes nodes with a safe loader and builds the containers itself, so it can record
each key's line, expand `${VAR}` / `${VAR:-default}` from the environment, report duplicate keys
(which YAML would silently drop) and word YAML syntax errors for operators. It knows nothing about
what the data means.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from station.config.errors import ConfigError, Issue, Loc, dotted_name, show_value

__all__ = ["ENV_NAME", "YamlReader"]

#: A valid environment variable name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


#: Deeper than this is not a station config; the composer recurses, so it must stop somewhere.
MAX_DEPTH = 100
#: Values after aliases and merge keys are expanded: far beyond any bench, far below a bomb.
MAX_VALUES = 100_000


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type information
    """SafeLoader used only to compose nodes and construct scalars; we build containers."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep (a station config needs a handful)",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class YamlReader:
    """Turns YAML text into plain data plus `lines`: location tuple -> 1-based line."""

    def __init__(self, text: str, display: str, file: Path) -> None:
        self.text = text
        self.display = display
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.raw: dict[Loc, str] = {}
        self.issues: list[Issue] = []
        self.root_line = 1
        self._flattened: set[int] = set()
        self._merging: set[int] = set()
        self._values = 0
        #: Every `${NAME}` expanded, as (line, location, NAME): lets the caller refuse
        #: variables that must never be copied into the file (the API key's).
        self.expansions: list[tuple[int, Loc, str]] = []

    def read(self) -> Any:
        try:
            loader = _Loader(self.text)
        except yaml.reader.ReaderError as exc:  # refused up front: a control character
            line = self.text.count("\n", 0, exc.position) + 1
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            raise ConfigError(
                f"{self.display}:{line}: invalid YAML: control character #x{code:02X} is not "
                "allowed in YAML text; remove it",
                path=self.file,
                line=line,
            ) from None
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            self.root_line = node.start_mark.line + 1
            self.lines[()] = self.root_line
            return self._build(loader, node, (), set())
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(self.display, self.file, exc) from None
        except yaml.YAMLError as exc:  # e.g. a reader error on a control character
            raise ConfigError(f"{self.display}: invalid YAML: {exc}", path=self.file) from None
        finally:
            loader.dispose()

    def _build(self, loader: _Loader, node: yaml.Node, loc: Loc, stack: set[int]) -> Any:
        if id(node) in stack:
            raise ConfigError(
                f"{self.display}:{node.start_mark.line + 1}: {dotted_name(loc)}: "
                f"an alias refers to the mapping that contains it",
                path=self.file,
                line=node.start_mark.line + 1,
                field=dotted_name(loc),
            )
        self._values += 1
        if self._values > MAX_VALUES:
            raise self._located(
                node,
                loc,
                f"aliases (*name) and merge keys (<<) expand to more than {MAX_VALUES} values; "
                "a station config never needs that many: is an alias repeated by mistake?",
            )
        if isinstance(node, yaml.ScalarNode):
            try:
                value = loader.construct_object(node, deep=True)
            except ValueError as exc:  # a 5000-digit number, a date like 2024-13-45
                reason = str(exc).split(";")[0]
                raise self._located(
                    node, loc, f"cannot read {show_value(node.value)}: {reason}"
                ) from None
            self.raw[loc] = node.value
            if isinstance(value, str):
                value = self._expand(value, loc, node.start_mark.line + 1)
            return value
        stack = stack | {id(node)}
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
            raise ConfigError(
                f"{self.display}:{line}:{column}: invalid YAML: YAML tags ({node.tag}) are not "
                f"supported; use plain values and ${{VAR}} for the environment",
                path=self.file,
                line=line,
            )
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                self.lines.setdefault((*loc, index), child.start_mark.line + 1)
                items.append(self._build(loader, child, (*loc, index), stack))
            return items
        if isinstance(node, yaml.MappingNode):
            self._flatten(loader, node, loc)
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    self.issues.append((line, loc, "keys must be plain names, not lists or maps"))
                    continue
                key = key_node.value
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                result[key] = self._build(loader, value_node, (*loc, key), stack)
            return result
        return loader.construct_object(node, deep=True)  # pragma: no cover - no other node kinds

    def _flatten(self, loader: _Loader, node: yaml.MappingNode, loc: Loc) -> None:
        """Resolve `<<: *anchor` merge keys in place, merged mappings first, so that no merge
        chain can grow past MAX_VALUES (PyYAML would expand a merge bomb without limit)."""
        if id(node) in self._flattened:
            return
        if id(node) in self._merging:
            raise self._located(node, loc, "a merge key (<<) merges the mapping that contains it")
        self._merging.add(id(node))
        self._check_duplicates(node, loc)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else []
                for sub in [value_node, *merged]:
                    if isinstance(sub, yaml.MappingNode):
                        self._flatten(loader, sub, loc)
        loader.flatten_mapping(node)
        self._merging.discard(id(node))
        self._flattened.add(id(node))
        if len(node.value) > MAX_VALUES:
            raise self._located(
                node,
                loc,
                f"merge keys (<<) expand to more than {MAX_VALUES} keys; a station config never "
                "needs that many: is a merge repeated by mistake?",
            )

    def _located(self, node: yaml.Node, loc: Loc, message: str) -> ConfigError:
        line = node.start_mark.line + 1
        field = dotted_name(loc)
        where = f"{self.display}:{line}: {field}: " if field else f"{self.display}:{line}: "
        return ConfigError(where + message, path=self.file, line=line, field=field or None)

    def _check_duplicates(self, node: yaml.MappingNode, loc: Loc) -> None:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first:
                self.issues.append(
                    (
                        line,
                        (*loc, key_node.value),
                        f"duplicate key '{key_node.value}' (also at line "
                        f"{first[key_node.value]}); YAML would silently keep only the last one, "
                        f"so remove or rename one of them",
                    )
                )
            else:
                first[key_node.value] = line

    def _expand(self, value: str, loc: Loc, line: int) -> str:
        if "$" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "$${":
                return "${"
            body = match.group(1)
            if body is None:
                self.issues.append(
                    (line, loc, "'${' is not closed with '}' (write $${ for a literal ${)")
                )
                return token
            name, has_default, default = body.partition(":-")
            if not ENV_NAME.fullmatch(name):
                self.issues.append(
                    (
                        line,
                        loc,
                        f"'${{{body}}}' is not a valid variable reference "
                        f"(use ${{NAME}} or ${{NAME:-default}}; $${{ for a literal ${{)",
                    )
                )
                return token
            self.expansions.append((line, loc, name))
            current = os.environ.get(name)
            if current:
                return current
            if has_default:
                return default
            if current is None:
                self.issues.append(
                    (
                        line,
                        loc,
                        f"environment variable {name} is not set "
                        f"(set it, or give a default: ${{{name}:-value}})",
                    )
                )
            return ""

        return _VAR.sub(substitute, value)


_YAML_PLAIN = [
    ("found character '\\t'", "a tab character; YAML indentation must use spaces"),
    (
        "mapping values are not allowed here",
        "unexpected ':'; a value that contains ': ' must be quoted, or the indentation is off",
    ),
    (
        "could not find expected ':'",
        "expected 'key: value'; check the indentation and that the key is followed by ':'",
    ),
    ("expected <block end>", "this line's indentation does not line up with the lines above it"),
    (
        "found unexpected end of stream",
        "the file ends inside a quoted string or a [..]/{..}; close the quote or bracket",
    ),
    (
        "expected ',' or '}'",
        "inside {...}: separate items with ', ' and close with '}' "
        "(quote values that contain {, }, [, ], ',' or ${VAR})",
    ),
    (
        "expected ',' or ']'",
        "inside [...]: separate items with ', ' and close with ']' "
        "(quote values that contain {, }, [, ] or ',')",
    ),
    ("expected a single document", "only one YAML document is allowed (remove the second '---')"),
    ("found undefined alias", "an alias (*name) refers to an anchor (&name) that is not defined"),
    (
        "could not determine a constructor for the tag",
        "YAML tags (!name) are not supported; use plain values and ${VAR} for the environment",
    ),
]


_YAML_NOUNS = {
    "flow mapping": "{...}",
    "flow sequence": "[...]",
    "block mapping": "mapping",
    "block collection": "mapping",
    "quoted scalar": "quoted string",
    "plain scalar": "value",
}


def _yaml_error(display: str, file: Path, exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    text = f"{problem} {exc.context or ''}"
    plain = next((words for needle, words in _YAML_PLAIN if needle in text), problem)
    context_mark = exc.context_mark
    other_line = context_mark is not None and context_mark.line != (mark.line if mark else -1)
    if exc.context and exc.context.startswith("while ") and context_mark and other_line:
        what = exc.context.split()[-1]
        for words, plain_words in _YAML_NOUNS.items():
            if exc.context.endswith(words):
                what = plain_words
        plain += f" (in the {what} that starts at line {context_mark.line + 1})"
    if mark is None:
        return ConfigError(f"{display}: invalid YAML: {plain}", path=file)
    line, column = mark.line + 1, mark.column + 1
    return ConfigError(f"{display}:{line}:{column}: invalid YAML: {plain}", path=file, line=line)
