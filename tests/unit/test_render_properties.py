"""Property: no user-supplied text can change the structure of a rendered file.

Arbitrary names, descriptions and public URLs either fail validation with a clear
message (a HostError, never another exception) or reach the rendered file exactly as
given, as its reader sees them: ``yaml.safe_load`` plus Compose's ``$$`` -> ``$`` for
compose.yaml, a dotenv reader (Vite's) for frontend.env. Everything else in the file
stays exactly as rendered for a plain value.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from unit_helpers import compose_unescape

from pixsim_host.config import HostConfig, parse_config, slugify
from pixsim_host.errors import ConfigError, HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host

HOST_ID = "5f0c2a4e-8d1b-4c3e-9a7f-2b6d8e1c4a90"

# Fragments that mean something to YAML, Jinja2, Compose, dotenv or a shell, plus
# unicode that parsers treat specially (line separators, BOM, NEL, zero-width space).
TRICKY = [
    "'", '"', ":", ": ", " #", "#", "\n", "\r\n", "\r", "\t", "{{", "}}", "{%", "%}", "{#",
    "$", "$$", "${X}", "$X", "${X:-y}", "${X:?e}", "\\", "\\n", "- ", "? ", "---", "...",
    "&a", "*a", "!!python/object/apply:os.system", "!", "|", ">", "%", "@", "`", ",", "[",
    "]", "{", "}", "~", "null", "true", "no", "0x1f", "1e3", "<<", "😀", "🏳️‍🌈", "é",
    "中文", "\u200b", "\u2028", "\u2029", "\x85", "\ufeff", "\x00", "\x1b", "\x7f", " ",
]
tricky_text = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=14
).map("".join)
any_text = st.one_of(st.text(), tricky_text)
# Printable tricky text wrapped in letters passes the name rules, so the property is
# exercised on many values that render, not only on values that are refused.
printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
printable_tricky = st.lists(
    st.one_of(st.sampled_from([t for t in TRICKY if t.isprintable() or t.strip(" ") == ""]),
              st.text(printable, max_size=4)),
    max_size=8,
).map(lambda parts: "a" + "".join(parts) + "z")
name_text = st.one_of(any_text, printable_tricky)
url_text = st.one_of(
    st.text(),
    st.builds(lambda scheme, rest: scheme + rest,
              st.sampled_from(["http://", "https://"]), tricky_text),
    st.builds(lambda host, rest: f"https://{host}/{rest}",
              st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
              tricky_text.map(lambda text: "".join(c for c in text if not c.isspace()))),
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostDir:
    # An empty host directory: no template overrides, so the packaged templates render.
    return HostDir(tmp_path_factory.mktemp("host"))


def _config(**values: Any) -> HostConfig:
    return parse_config({"host_id": HOST_ID, **values}, source="the test values")


def _compose(host: HostDir, config: HostConfig) -> dict[str, Any]:
    data = yaml.safe_load(render_host(host, config).files["compose.yaml"])
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def plain_compose(host: HostDir) -> dict[str, Any]:
    """compose.yaml for plain values, rendered once: rendering is deterministic
    (test_render.py), and each example compares against it."""
    return _compose(host, _config(name="plain", description="plain"))


def _label_sets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    sections = [*doc["services"].values(), *doc["networks"].values(), *doc["volumes"].values()]
    return [section["labels"] for section in sections]


def _assert_clear_rejection(exc: HostError, keys: tuple[str, ...]) -> None:
    assert exc.message.strip() and "Traceback" not in exc.message
    if isinstance(exc, ConfigError):
        assert exc.problems
        for problem in exc.problems:
            assert problem.startswith(tuple(f"{key}: " for key in keys)), problem


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=name_text, description=st.one_of(any_text, printable_tricky))
@example(name="{{ host.host_id }}", description="${SECRET_KEY} $$ $X")
@example(name="x: y\n  evil: true", description="a\nb: c\n- d")
@example(name='Bob\'s "host" #1', description="#!/bin/sh\n`rm -rf /`")
@example(name="😀 Ωmega 中文", description="\u2028\u2029\x85\ufeff")
def test_names_and_descriptions_reach_compose_unchanged(
    host: HostDir, plain_compose: dict[str, Any], name: str, description: str
) -> None:
    baseline = plain_compose
    try:
        config = _config(name=name, description=description)
        doc = _compose(host, config)
    except HostError as exc:
        _assert_clear_rejection(exc, ("name", "description"))
        return

    env = doc["services"]["backend"]["environment"]
    assert compose_unescape(env["SERVER_NAME"]) == name
    assert compose_unescape(env["SERVER_DESCRIPTION"]) == description
    for labels in _label_sets(doc):
        assert compose_unescape(labels["org.pixsim-host.host-name"]) == name
    assert doc["name"] == f"pixsim-{slugify(name)}"

    # Apart from those values, the document is the plain one, key for key.
    expected = copy.deepcopy(baseline)
    expected["name"] = doc["name"]
    expected_env = expected["services"]["backend"]["environment"]
    expected_env["SERVER_NAME"], expected_env["SERVER_DESCRIPTION"] = (
        env["SERVER_NAME"], env["SERVER_DESCRIPTION"])
    for labels in _label_sets(expected):
        labels["org.pixsim-host.host-name"] = env["SERVER_NAME"]
    expected["x-pixsim-labels"]["org.pixsim-host.host-name"] = env["SERVER_NAME"]
    assert doc == expected
    assert set(doc) == set(baseline)
    assert set(doc["services"]) == {"db", "redis", "backend", "worker"}
    for service in doc["services"]:
        assert set(doc["services"][service]["environment"]) == set(
            baseline["services"][service]["environment"])


# A line as Vite's dotenv reader sees it. Values we write are single-quoted, so they are
# literal to dotenv; but Vite then runs dotenv-expand over the unquoted value, which
# expands '$NAME' and treats '\' as an escape, so neither may appear in a value.
# JavaScript also ends a line at \r, U+2028 and U+2029, so no line may contain them.
_DOTENV_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)='([^'$\\]*)'$")
_JS_LINE_BREAKS = re.compile("[\r\u2028\u2029]")


@pytest.fixture(scope="module")
def plain_frontend_env(host: HostDir) -> str:
    """frontend.env for plain values, rendered once (see plain_compose)."""
    return render_host(host, _config(name="plain")).files["frontend.env"]


def _read_frontend_env(text: str) -> tuple[dict[str, str], list[str]]:
    assert text.endswith("\n")
    values, comments = {}, []
    for line in text[:-1].split("\n"):
        assert not _JS_LINE_BREAKS.search(line), f"a JavaScript line break in {line!r}"
        if line.startswith("#"):
            comments.append(line)
            continue
        match = _DOTENV_LINE.match(line)
        assert match, f"not a literal dotenv line: {line!r}"
        values[match.group(1)] = match.group(2)
    return values, comments


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=url_text, name=name_text)
@example(url="https://pixsim.example.org/a'b", name="x")
@example(url="https://pixsim.example.org/${HOME}", name="x")
@example(url="https://pixsim.example.org/a\\", name="x")
@example(url="https://pixsim.example.org/#frag", name="x #y")
@example(url="https://pixsim.example.org/\u2028", name="x")
@example(url="https://例え.jp:8443/api/", name="x")
def test_public_urls_reach_frontend_env_unchanged(host: HostDir, plain_frontend_env: str,
                                                 url: str, name: str) -> None:
    baseline, base_comments = _read_frontend_env(plain_frontend_env)
    try:
        config = _config(name=name, backend={"public_url": url})
        text = render_host(host, config).files["frontend.env"]
    except HostError as exc:
        _assert_clear_rejection(exc, ("name", "backend.public_url"))
        return
    values, comments = _read_frontend_env(text)
    assert config.backend.public_url == url.rstrip("/")
    url = config.backend.public_url
    assert url is not None
    # The WebSocket URL the main app would derive from it: same place, ws(s) scheme.
    ws = ("wss://" + url[len("https://"):]) if url.startswith("https://") else "ws://" + url[len("http://"):]
    assert values == {"VITE_BACKEND_URL": url, "VITE_WS_URL": ws + "/api/v1/ws/generations"}
    assert set(values) == set(baseline)
    assert len(comments) == len(base_comments)


def test_the_property_tests_see_both_outcomes(host: HostDir) -> None:
    # Guard against a vacuous property: valid tricky values render, invalid ones are refused.
    tricky = 'a: b # {{ c }} ${D} $$ \'e\' "f" 😀'
    doc = _compose(host, _config(name=tricky, description=tricky + "\nline two"))
    assert compose_unescape(doc["services"]["backend"]["environment"]["SERVER_NAME"]) == tricky
    with pytest.raises(ConfigError) as raised:
        _config(name="two\nlines")
    assert raised.value.problems == ["name: must not contain control characters or line breaks"]


def test_a_host_dir_path_is_not_needed_on_disk(tmp_path: Path) -> None:
    # Rendering reads nothing from the host directory but its template overrides.
    files = render_host(HostDir(tmp_path / "missing"), _config(name="x")).files
    assert set(files) == {"compose.yaml", "frontend.env"}
