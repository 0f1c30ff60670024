"""Credentials files of the DNS solvers (RFC 2136 TSIG, lexicon): read as KEY = VALUE lines,
refused in one line when others may read them or a line is not KEY = VALUE."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.acme.challenges._base import read_secret_settings
from certfleet.acme.challenges.rfc2136 import read_credentials
from certfleet.errors import InputError


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "creds.ini"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_keys_lower_cased_comments_and_sections_skipped(tmp_path: Path) -> None:
    path = _file(tmp_path, '[dns]\n# a comment\n; another\nAuth_Token = "s3cret"\n\nzone = example.test\n')
    assert read_secret_settings(str(path), "the lexicon credentials") == {
        "auth_token": "s3cret",
        "zone": "example.test",
    }


def test_a_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "token = x\n", mode=0o644)
    with pytest.raises(InputError, match=r"the lexicon credentials .* are readable by others") as refused:
        read_secret_settings(str(path), "the lexicon credentials")
    assert refused.value.hint == f"chmod 600 {path}"


def test_a_line_without_equals_is_refused_and_a_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not KEY = VALUE"):
        read_secret_settings(str(_file(tmp_path, "token x\n")), "the lexicon credentials")
    with pytest.raises(InputError, match="cannot read the RFC 2136 credentials"):
        read_credentials(str(tmp_path / "absent.ini"))


def test_rfc2136_keys_may_carry_certbots_prefix(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = 5353\ndns_rfc2136_name = key.\n"
        "dns_rfc2136_secret = c2VjcmV0\n",
    )
    creds = read_credentials(str(path))
    assert (creds.server, creds.port, creds.key_name, creds.secret) == ("127.0.0.1", 5353, "key.", "c2VjcmV0")
    assert "c2VjcmV0" not in repr(creds)
