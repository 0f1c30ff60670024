"""A batch: its leaf files in chunks, run by an executor; one output line per leaf, and a tally.

Above about a hundred leaves, and with two cores or more, one forked child shares the work
(:func:`~certfleet._batch.executor.executor_for`): both processes take chunks of leaves from one
queue, so neither waits long for the other, and the output keeps the order of the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from certfleet._batch.executor import Executor, Output, executor_for
from certfleet._batch.files import check_leaf_files
from certfleet.errors import ExitCode

if TYPE_CHECKING:
    from certfleet._batch.verifier import BatchVerifier

__all__ = ["exit_code", "run_batch", "summary"]


def run_batch(
    paths: Sequence[str],
    verifier: BatchVerifier,
    *,
    limit: int,
    name: str | None = None,
    passwords: Sequence[bytes] = (),
    as_json: bool = False,
    executor: Executor | None = None,
) -> Output:
    """Every file of ``paths`` checked as a leaf of its own: a line per file, in order, and the tally.

    ``limit`` bounds each file, in bytes; ``name`` is checked for every leaf (None: each leaf's own
    first name); ``passwords`` open encrypted files; ``executor`` runs the chunks (None:
    :func:`~certfleet._batch.executor.executor_for` the batch's size).
    """

    def check(chunk: Sequence[str]) -> Output:
        lines: list[str] = []
        valid = invalid = 0
        errors: list[str] = []
        for result in check_leaf_files(verifier, chunk, name, passwords, limit=limit):
            if result.error is not None:
                errors.append(f"{result.file}: {result.error}")
            elif result.valid:
                valid += 1
            else:
                invalid += 1
            lines.append(result.json_line() if as_json else result.line())
        lines.append("")
        return Output("\n".join(lines), valid, invalid, tuple(errors))

    outputs = (executor if executor is not None else executor_for(len(paths))).run(paths, check)
    return Output(
        "".join(output.text for output in outputs),
        sum(output.valid for output in outputs),
        sum(output.invalid for output in outputs),
        tuple(error for output in outputs for error in output.errors),
    )


def summary(output: Output) -> str:
    """The human view's last line."""
    errors = f", {len(output.errors)} unreadable" if output.errors else ""
    leaves = output.valid + output.invalid + len(output.errors)  # each file is one of the three
    count = "1 leaf" if leaves == 1 else f"{leaves} leaves"
    return f"{count}: {output.valid} valid, {output.invalid} invalid{errors}"


def exit_code(output: Output) -> ExitCode:
    if output.errors:
        return ExitCode.BAD_INPUT
    return ExitCode.PROBLEMS if output.invalid else ExitCode.OK
