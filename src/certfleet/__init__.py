"""certfleet: one web certificate, every server.

The public API is the names below; everything else is internal and may change. Submodules load on
first use so that ``import certfleet`` (and every CLI start) stays cheap.

    >>> from certfleet import read_pool, load_trust, build_chain
    >>> pool = read_pool([("pkg.zip", data)], passwords=[b"secret"])
    >>> result = build_chain(pool, load_trust(), now=now)
    >>> result.to_dict()["complete"]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "CertfleetError": "errors",
    "EnvError": "errors",
    "ExitCode": "errors",
    "FormatError": "errors",
    "InputError": "errors",
    "LimitError": "errors",
    "NetworkError": "errors",
    "OperationFailed": "errors",
    "PasswordError": "errors",
    "StoreBusyError": "errors",
    "StoreError": "errors",
    "Problem": "problems",
    "ProblemCode": "problems",
    "Severity": "problems",
    "CertInfo": "certinfo",
    "describe": "certinfo",
    "fingerprint": "certinfo",
    "Pool": "formats",
    "read_bytes": "formats",
    "read_pool": "formats",
    "NamePlan": "names",
    "coverage": "names",
    "normalize_name": "names",
    "plan": "names",
    "KeySpec": "keys",
    "generate_key": "keys",
    "key_matches": "keys",
    "Inspection": "inspection",
    "inspect": "inspection",
    "OutputFormat": "export",
    "write_bundle": "export",
    "Subject": "csr",
    "build_csr": "csr",
    "TrustStore": "trust",
    "load_trust": "trust",
    "HttpFetcher": "aia",
    "ChainResult": "chain",
    "build_chain": "chain",
    "Verification": "verify",
    "Verifier": "verify",
    "verify_chain": "verify",
    "lint": "lint",
    "ProbeResult": "probe",
    "probe": "probe",
    "Store": "store",
}

__all__ = [
    "CertInfo",
    "CertfleetError",
    "ChainResult",
    "EnvError",
    "ExitCode",
    "FormatError",
    "HttpFetcher",
    "InputError",
    "Inspection",
    "KeySpec",
    "LimitError",
    "NamePlan",
    "NetworkError",
    "OperationFailed",
    "OutputFormat",
    "PasswordError",
    "Pool",
    "ProbeResult",
    "Problem",
    "ProblemCode",
    "Severity",
    "Store",
    "StoreBusyError",
    "StoreError",
    "Subject",
    "TrustStore",
    "Verification",
    "Verifier",
    "build_chain",
    "build_csr",
    "coverage",
    "describe",
    "fingerprint",
    "generate_key",
    "inspect",
    "key_matches",
    "lint",
    "load_trust",
    "normalize_name",
    "plan",
    "probe",
    "read_bytes",
    "read_pool",
    "verify_chain",
    "write_bundle",
]

if TYPE_CHECKING:
    from certfleet.aia import HttpFetcher
    from certfleet.certinfo import CertInfo, describe, fingerprint
    from certfleet.chain import ChainResult, build_chain
    from certfleet.csr import Subject, build_csr
    from certfleet.errors import (
        CertfleetError,
        EnvError,
        ExitCode,
        FormatError,
        InputError,
        LimitError,
        NetworkError,
        OperationFailed,
        PasswordError,
        StoreBusyError,
        StoreError,
    )
    from certfleet.export import OutputFormat, write_bundle
    from certfleet.formats import Pool, read_bytes, read_pool
    from certfleet.inspection import Inspection, inspect
    from certfleet.keys import KeySpec, generate_key, key_matches
    from certfleet.lint import lint
    from certfleet.names import NamePlan, coverage, normalize_name, plan
    from certfleet.probe import ProbeResult, probe
    from certfleet.problems import Problem, ProblemCode, Severity
    from certfleet.store import Store
    from certfleet.trust import TrustStore, load_trust
    from certfleet.verify import Verification, Verifier, verify_chain


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"certfleet.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
