"""``certfleet verify --each``'s face: verify's inputs read, the batch run, its lines printed.

:func:`certfleet.cli.main` reads the options without Typer (``certfleet._batch.options``) and
comes here; so does the Typer command (``cli/_core.py``) for whatever it was left. The batch
itself (leaf files, the verifier's steps, the processes that share them) is in
:mod:`certfleet._batch`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from certfleet._batch.files import EachResult, check_leaf_file
from certfleet._batch.options import EachOptions
from certfleet.cli._inputs import MAX_INPUT_BYTES, load_trust_files, load_untrusted_files, parse_at, passwords
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet._batch.executor import Executor

# EachOptions, EachResult and check_leaf_file for the Typer command's module
__all__ = ["EachOptions", "EachResult", "check_leaf_file", "run_each"]


def run_each(options: EachOptions, *, executor: Executor | None = None) -> ExitCode:
    """Verify every file of ``options`` as a leaf of its own; print one line per leaf, in order.

    ``executor`` runs the batch's chunks; None chooses by the batch's size and the machine.
    """
    from certfleet._batch.runner import exit_code, run_batch, summary
    from certfleet._batch.verifier import BatchVerifier
    from certfleet.verify import parse_name

    when = parse_at(options.at)
    store = load_trust_files(options.trust, options.trust_only, options.system_trust)
    pw = passwords(options.password, options.password_file)
    intermediates = load_untrusted_files(options.untrusted, pw)
    if options.name is not None:
        parse_name(options.name)  # a bad --name is one error, not one per leaf
    verifier = BatchVerifier(store, intermediates, at=when, reuse_proven=True)
    output = run_batch(
        options.files,
        verifier,
        limit=MAX_INPUT_BYTES,
        name=options.name,
        passwords=pw,
        as_json=options.as_json,
        executor=executor,
    )
    out = sys.stdout
    out.write(output.text)
    if output.errors:
        from rich.text import Text

        from certfleet.cli._common import console_err

        for line in output.errors:
            console_err.print(Text.assemble(("error:", "bold red"), f" {line}"), highlight=False, soft_wrap=True)
    if not options.as_json:
        out.write(summary(output) + "\n")
    out.flush()
    return exit_code(output)
