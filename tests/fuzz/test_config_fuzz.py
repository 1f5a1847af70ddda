"""Fuzzing the configuration loader: `config.parse` returns a Config or raises ConfigError.

An operator's typo must never end in a traceback: whatever the text, `parse` gives a
`Config`, or a `ConfigError` whose every line starts with where the problem is (a YAML path,
or the file's name for text that is not YAML) followed by ": " and what is wrong. Inputs:
YAML-ish text (fragments of YAML syntax, tabs, anchors, tags, NULs, deep nesting, huge
numbers) and mutations of config/relay.example.yaml, both of its text (lines cut, repeated,
re-indented, characters inserted) and of its tree (a node replaced by a value of another
type, removed, or joined by an unknown key).

Budgets: 200 examples of YAML-ish text, 300 of example mutations (tree and text).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from relay import config
from relay.errors import ConfigError
from tests.fuzz import budget

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "config" / "relay.example.yaml").read_text()
EXAMPLE = yaml.safe_load(EXAMPLE_TEXT)
BASE = Path("/etc/relay")
SOURCE = "relay.yaml"


@pytest.fixture(autouse=True)
def example_secrets(monkeypatch):
    """The variables the example names are set, so that mutations reach every validator."""
    for name in ("BREVO_SMTP_KEY", "RELAY_WEBHOOK_TOKEN", "RELAY_UNSUB_SECRET"):
        monkeypatch.setenv(name, "0123456789abcdef0123456789abcdef")


def parse_or_config_error(text: str) -> None:
    """The property: a Config, or a ConfigError of "<where>: <what>" lines; nothing else."""
    try:
        result = config.parse(text, BASE, SOURCE)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) for e in exc.errors), exc.errors
        for error in exc.errors:
            where, sep, what = error.partition(": ")
            assert sep and where.strip() and what.strip(), error
    else:
        assert isinstance(result, config.Config)


def test_the_example_itself_parses(example_secrets):
    assert isinstance(config.parse(EXAMPLE_TEXT, BASE, SOURCE), config.Config)


_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "25MB", "1e999", "nan", ".inf", "5x", "100/0s", "0/min",
                     "-5%", "200%", "0.0.0.0", "::1", "[::1]:99999", "127.0.0.1:x", "/dev/null",
                     "relative/path", "a\x00b", "\ud800", "~", "null", "yes", "on",
                     "starttls", "implicit", "none", "feedback", "enforce", "inject"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10) | st.integers(), inner,
                                                  max_size=3)), max_leaves=8)


def _paths(node, prefix=()):
    """Every (path, node) of a YAML tree, the root included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutated_example_tree(draw) -> str:
    """The example with 1 to 4 of its nodes replaced, removed, or given an unknown sibling."""
    tree = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p, _ in _paths(tree) if p]
        if not paths:
            break
        depth = draw(st.integers(1, max(map(len, paths))))   # shallow nodes as often as deep
        path = draw(st.sampled_from([p for p in paths if len(p) == depth] or paths))
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        how = draw(st.sampled_from(["replace", "replace", "remove", "sibling"]))
        if how == "replace":
            parent[path[-1]] = draw(_value)
        elif how == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(_value)
        else:
            parent.append(draw(_value))
    return yaml.safe_dump(tree, allow_unicode=True)


@st.composite
def mutated_example_text(draw) -> str:
    """The example's text with lines cut, repeated, re-indented or characters inserted."""
    lines = EXAMPLE_TEXT.splitlines()
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["cut", "repeat", "indent", "dedent", "insert"]))
        if how == "cut":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "indent":
            lines[i] = draw(st.sampled_from([" ", "  ", "\t", "    "])) + lines[i]
        elif how == "dedent":
            lines[i] = lines[i].lstrip()
        else:
            at = draw(st.integers(0, len(lines[i])))
            piece = draw(st.sampled_from([":", "- ", "{", "[", "'", '"', "&a ", "*a", "!!python/object ",
                                          "\x00", "#", "%", "|", ">", "\t", "? "]) | st.text(max_size=5))
            lines[i] = lines[i][:at] + piece + lines[i][at:]
        if not lines:
            break
    return "\n".join(lines) + "\n"


_yaml_piece = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["server:", "\n", "  ", "- ", ": ", "listeners:", "port: ", "name: x",
                     "tls: none", "{", "}", "[", "]", ",", "&anchor ", "*anchor", "<<: *anchor",
                     "!!binary ", "!!python/name:os.system ", "!!set ", "? ", "---\n", "...\n",
                     "%YAML 1.2\n", "\t", "\x00", "\ufeff", "9" * 400, "[" * 60, "{a: " * 60,
                     "domains:", "routes:", "users:", "limits:", "max_message_size: ",
                     "'", '"', "|", ">", "#"]))


@budget(200)
@given(text=st.lists(_yaml_piece, max_size=30).map("".join))
def test_yaml_ish_text_gives_a_config_or_a_config_error(text):
    """Any text: a Config or a ConfigError of where-and-what lines."""
    parse_or_config_error(text)


@budget(300)
@given(text=st.one_of(mutated_example_tree(), mutated_example_text()))
def test_mutations_of_the_example_give_a_config_or_a_config_error(text):
    """The example with nodes of the wrong type, missing, unknown, or its text damaged."""
    parse_or_config_error(text)


@pytest.mark.parametrize("text", ["server: [1]", "domains: [acme.fr]", "routes: brevo",
                                  "domains: {acme.fr: brevo}", "domains: {acme.fr: {dkim: x}}",
                                  "routes: {brevo: [1]}", "server: {tls: [1]}"])
def test_sections_of_the_wrong_type_are_config_errors(text):
    """Regression: a section that is not a mapping (`server: [1]`, `domains: [acme.fr]`,
    `domains: {acme.fr: brevo}`) raised AttributeError while resolving relative paths, a
    traceback instead of the path at fault. Now it is a ConfigError naming it."""
    with pytest.raises(ConfigError) as error:
        config.parse(text, BASE, SOURCE)
    section = text.split(":")[0]
    assert any(e.startswith(section) and "should be a valid" in e for e in error.value.errors), \
        error.value.errors
