"""The commands that make something new: key, csr.

Like the other command modules, this one parses the options, calls the library (``keys``,
``csr``, and ``export`` for the files) and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certfleet.cli import _render as views
from certfleet.cli._common import JsonOpt, PasswordFileOpt, PasswordOpt, app, emit
from certfleet.cli._inputs import read_pool_files, read_secret
from certfleet.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from certfleet.export import KeyWritten

PassphraseOpt = Annotated[
    str | None,
    typer.Option("--passphrase", metavar="PASSPHRASE", help="Encrypt the key with this passphrase (AES-256)."),
]
PassphraseFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", metavar="FILE", help="Read the passphrase from the first line of this file."),
]


# --- key ----------------------------------------------------------------------------------------


@app.command("key", epilog="Example: certfleet key --type ec:p256 --out www.example.com.key")
def key_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the key (mode 0600).")],
    type_: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384.")
    ] = "ec:p256",
    passphrase: PassphraseOpt = None,
    passphrase_file: PassphraseFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a new private key for a web certificate, written mode 0600 from the start."""
    from certfleet.export import write_key
    from certfleet.keys import generate_key, parse_key_spec

    spec = parse_key_spec(type_)
    secret = read_secret(passphrase, passphrase_file, "passphrase")
    result = write_key(out, generate_key(spec), password=secret, overwrite=force)
    emit(result, as_json, views.key_written)


# --- csr ----------------------------------------------------------------------------------------


@app.command(
    "csr",
    epilog=(
        "Example: certfleet csr --new-key ec:p256 --key-out www.key --name www.example.com "
        '--name mbg.example.com --subject "C=CA,ST=Ontario,L=Ottawa,O=Example Inc" --out www.csr'
    ),
)
def csr_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the CSR (PEM).")],
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", metavar="NAME", help="A DNS name or IP to cover (repeatable).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="FILE", help="An existing private key to make the CSR with.")
    ] = None,
    new_key: Annotated[
        str | None,
        typer.Option("--new-key", metavar="TYPE", help="Make a new key of this type (rsa:2048, ec:p256, ...)."),
    ] = None,
    key_out: Annotated[
        Path | None, typer.Option("--key-out", metavar="FILE", help="Where to write the new key (mode 0600).")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject", metavar="SUBJECT", help='Subject fields, e.g. "C=CA,ST=Ontario,L=Ottawa,O=Example,CN=..."'
        ),
    ] = None,
    country: Annotated[str | None, typer.Option("--country", metavar="CC", help="C: two letters.")] = None,
    state: Annotated[str | None, typer.Option("--state", metavar="TEXT", help="ST: state or province.")] = None,
    locality: Annotated[str | None, typer.Option("--locality", metavar="TEXT", help="L: city.")] = None,
    org: Annotated[str | None, typer.Option("--org", metavar="TEXT", help="O: organization.")] = None,
    cn: Annotated[str | None, typer.Option("--cn", metavar="NAME", help="CN (default: the first name).")] = None,
    passphrase: PassphraseOpt = None,
    passphrase_file: PassphraseFileOpt = None,
    password: PasswordOpt = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a certificate signing request (SHA-256) with every name as a subjectAltName."""
    import dataclasses

    from certfleet.csr import Subject, build_csr
    from certfleet.export import write_csr, write_key
    from certfleet.keys import generate_key, parse_key_spec

    if (key is None) == (new_key is None):
        raise InputError("give either --key KEY or --new-key TYPE --key-out KEY", hint="certfleet csr --help")
    if new_key is not None and key_out is None:
        raise InputError("--new-key needs --key-out: where to keep the new key", hint="e.g. --key-out www.key")
    subj = Subject.parse(subject) if subject else Subject()
    given = {"country": country, "state": state, "locality": locality, "organization": org, "common_name": cn}
    for field_name, value in given.items():
        if value is not None:
            if getattr(subj, field_name) is not None:
                raise InputError(f"the subject field {field_name} is given twice (in --subject and as an option)")
            subj = dataclasses.replace(subj, **{field_name: value})
    private_key: PrivateKeyTypes
    if key is not None:
        pool = read_pool_files([key], password, password_file)
        if not pool.keys:
            raise InputError("holds no private key", source=str(key), hint="give the key file")
        private_key = pool.keys[0].key
    else:
        assert new_key is not None and key_out is not None  # noqa: S101 (checked above)
        private_key = generate_key(parse_key_spec(new_key))
    csr = build_csr(private_key, list(name or []), subj)
    key_report: KeyWritten | None = None
    if new_key is not None and key_out is not None:
        secret = read_secret(passphrase, passphrase_file, "passphrase")
        key_report = write_key(key_out, private_key, password=secret)
    report = write_csr(out, csr, key=key_report)
    emit(report, as_json, views.csr_written)
