"""``.env`` is read the way Compose and dotenv read it, and what they would disagree on is an error.

A double-quoted password kept its quotes, so the backend got a password PostgreSQL did not
know; a key given twice was silently accepted (which one wins differs between tools).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from unit_helpers import MakeHost, run_cli

from pixsim_host.envfile import parse_env, read_secrets, write_secrets
from pixsim_host.errors import HostError

SECRETS = "POSTGRES_PASSWORD={pg}\nREDIS_PASSWORD=redis-secret-1\nSECRET_KEY=key-secret-123\n"


@pytest.mark.parametrize(("line", "value"), [
    ('POSTGRES_PASSWORD="pg-secret"', "pg-secret"),
    ('POSTGRES_PASSWORD="a\\"b\\\\c\\nd"  # a comment', 'a"b\\c\nd'),
    ("POSTGRES_PASSWORD='lit\\n\"$x'", 'lit\\n"$x'),
    ("export POSTGRES_PASSWORD=plain   # comment", "plain"),
    ("POSTGRES_PASSWORD = spaced ", "spaced"),
    ("POSTGRES_PASSWORD=a#b", "a#b"),
    ('POSTGRES_PASSWORD="two\nlines"', "two\nlines"),
])
def test_quoting_rules_of_compose_and_dotenv(line: str, value: str) -> None:
    text = SECRETS.replace("POSTGRES_PASSWORD={pg}\n", line + "\n")
    assert parse_env(text, ".env")["POSTGRES_PASSWORD"] == value


@pytest.mark.parametrize(("text", "message"), [
    ("A=1\n# note\nA=2\n", ".env sets A twice (lines 1 and 3); keep the right one and remove the other"),
    ("A=1\nexport A=1\n", ".env sets A twice (lines 1 and 2); keep the right one and remove the other"),
    ('A="never closed\n', ".env line 1: the double quote is never closed; fix or restore the file"),
    ("A='never closed\n", ".env line 1: the single quote is never closed; fix or restore the file"),
    ('A="x" y\n', ".env line 1 has text after the closing quote; fix or restore the file"),
    ("A=pa$word\n", ".env line 1: a value with $ outside single quotes, which Compose would replace "
                    "by a variable; put the value in single quotes ('...')"),
    ("not a line\n", ".env line 1 is not KEY=VALUE; fix or restore the file"),
])
def test_what_the_tools_would_disagree_on_is_one_error(text: str, message: str) -> None:
    with pytest.raises(HostError) as caught:
        parse_env(text, ".env")
    assert str(caught.value) == message


def test_errors_never_echo_a_value() -> None:
    with pytest.raises(HostError) as caught:
        parse_env("SECRET_KEY=s3cr3t-value\nSECRET_KEY='s3cr3t-value'\n", ".env")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("value", ["plain-token_1", "with space # and hash", "it's", 'q"uote\nnl',
                                   "dollar $X"])
def test_written_values_read_back_unchanged(tmp_path: Path, value: str) -> None:
    path = tmp_path / ".env"
    values = {"POSTGRES_PASSWORD": value, "REDIS_PASSWORD": "r" * 10, "SECRET_KEY": "k" * 10}
    write_secrets(path, values, "host-id")
    assert read_secrets(path) == values
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_duplicated_key_in_a_hosts_env_is_one_error(make_host: MakeHost) -> None:
    host = make_host()
    env = host / ".env"
    text = env.read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("REDIS_PASSWORD="))
    env.write_text(text + line + "\n", encoding="utf-8")
    result = run_cli("config", "show", "--dir", str(host))
    assert result.returncode == 1, str(result)
    assert result.stderr.startswith(".env sets REDIS_PASSWORD twice", len("Error: ")), str(result)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert line.split("=", 1)[1] not in result.output

