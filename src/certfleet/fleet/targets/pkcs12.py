"""PKCS#12: ``live/certificate.pfx`` holding the key, the leaf and the chain, under a password.

Options: ``password_env`` (the name of an environment variable of the certfleet process that holds
the password; preferred, so the password is not stored with the node) or ``password``; ``legacy``
(3DES and SHA-1, for Windows Server 2016 and old Java; modern AES-256 otherwise);
``friendly_name`` (the alias keytool and Windows show); ``filename`` (default certificate.pfx).
"""

from __future__ import annotations

import os
from typing import ClassVar

from certfleet import export
from certfleet.certinfo import describe
from certfleet.errors import InputError
from certfleet.fleet.model import Material, TargetSpec
from certfleet.fleet.targets._base import (
    TargetFile,
    VersionedTarget,
    check_filename,
    option_bool,
    option_str,
)

__all__ = ["Pkcs12Target"]


class Pkcs12Target(VersionedTarget):
    kind = "pkcs12"
    options_allowed: ClassVar[frozenset[str]] = VersionedTarget.options_allowed | frozenset(
        {"password", "password_env", "legacy", "friendly_name", "filename"}
    )

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self.legacy = option_bool(self.options, "legacy")
        self.filename = check_filename(option_str(self.options, "filename", "certificate.pfx"), "filename")
        self.friendly_name = option_str(self.options, "friendly_name")
        self.password_env = option_str(self.options, "password_env")
        if self.password_env is not None and not self.password_env.replace("_", "").isalnum():
            raise InputError(f"password_env must name an environment variable: {self.password_env!r}")
        if self.password_env is None and option_str(self.options, "password") is None:
            raise InputError(
                "a pkcs12 target needs a password",
                hint="set its password_env option to the name of an environment variable holding it",
            )

    def _password(self) -> bytes:
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise InputError(
                    f"the environment variable {self.password_env} is not set",
                    hint=f"export {self.password_env}=... with the PKCS#12 password before deploying",
                )
            return value.encode()
        return (option_str(self.options, "password") or "").encode()

    def render(self, material: Material) -> tuple[TargetFile, ...]:
        name = self.friendly_name or describe(material.leaf).common_name or None
        data = export.pkcs12(
            material.key,
            material.leaf,
            material.chain,
            password=self._password(),
            legacy=self.legacy,
            friendly_name=name,
        )
        return (TargetFile(self.filename, data, secret=True),)
