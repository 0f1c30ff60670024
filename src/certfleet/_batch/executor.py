"""Who runs a batch's chunks: this process alone, or this process and one forked child.

The runner hands an :class:`Executor` its items (the leaf files) and the work for one chunk of
them; the executor cuts the chunks, runs them, and gives back their :class:`Output`, in order.
Tests give their own executor, or wrap one, instead of patching ``os.fork``.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Sequence
from typing import IO, NamedTuple, NoReturn, Protocol

__all__ = ["PARALLEL_MIN_ITEMS", "Executor", "ForkExecutor", "InProcessExecutor", "Output", "executor_for"]

# below this many leaves a second process costs more to start than it saves
PARALLEL_MIN_ITEMS = 128
# items per chunk of the shared queue: enough chunks for both processes to end together
_CHUNK_ITEMS = 64
_MIN_CHUNK_ITEMS = 8
# the queue of chunks is written whole into a pipe before anyone reads it: one page at most
_MAX_CHUNKS = 1024
_TOKEN = 4  # bytes per chunk number in the queue


# A NamedTuple rather than a dataclass: every batch makes this type as it starts, and a frozen
# dataclass takes a millisecond to make, a hundred leaves' worth of a run's start.
class Output(NamedTuple):
    """What the work on some items gave: its text (a line per item), and how many of the items
    were valid, invalid or errors (each error a line to show apart)."""

    text: str
    valid: int = 0
    invalid: int = 0
    errors: tuple[str, ...] = ()


Work = Callable[[Sequence[str]], Output]


class Executor(Protocol):
    def run(self, items: Sequence[str], work: Work) -> list[Output]:
        """``work`` over consecutive chunks of ``items``, each item in exactly one: their outputs, in order."""
        ...


class InProcessExecutor:
    """Every chunk in this process, one after another; ``chunk`` items each (None: one chunk of all)."""

    def __init__(self, chunk: int | None = None) -> None:
        self.chunk = chunk

    def run(self, items: Sequence[str], work: Work) -> list[Output]:
        size = self.chunk or len(items) or 1
        return [work(items[start : start + size]) for start in range(0, len(items), size)]


class ForkExecutor:
    """Chunks shared with one forked child.

    Both processes take chunks (``chunk`` items each; None: a size for the batch) from one queue,
    a pipe holding every chunk's number, until it is empty, so one slowed by other work on the
    machine simply takes fewer; the child hands its results back through an anonymous file. Fork
    shares the loaded modules and the verifier, which a spawned worker would build again. When
    no second process is to be had (``fork`` fails), or the child dies, this process does what
    is left. ``fork`` is :func:`os.fork` unless a test gives another.
    """

    def __init__(self, chunk: int | None = None, *, fork: Callable[[], int] | None = None) -> None:
        self.chunk = chunk
        self._fork = fork

    def run(self, items: Sequence[str], work: Work) -> list[Output]:
        if not items:
            return []
        size = self.chunk or min(_CHUNK_ITEMS, max(_MIN_CHUNK_ITEMS, len(items) // 32))
        size = max(size, -(-len(items) // _MAX_CHUNKS))
        count = -(-len(items) // size)

        def job(index: int) -> Output:
            return work(items[index * size : (index + 1) * size])

        queue, feed = os.pipe()
        spill = _anonymous_file()
        try:
            try:
                os.write(feed, b"".join(i.to_bytes(_TOKEN, "big") for i in range(count)))
            finally:
                os.close(feed)
            gc.freeze()  # else the child's garbage collector writes to, and so copies, every page it scans
            try:
                try:
                    pid: int | None = (self._fork or os.fork)()
                except OSError:  # no second process to be had (a limit on processes): this one does all
                    pid = None
                if pid == 0:
                    _child(queue, spill, job)
                try:
                    done = _take(queue, job)
                except BaseException:
                    if pid is not None:
                        import signal

                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    raise
                status = os.waitpid(pid, 0)[1] if pid is not None else -1
            finally:
                gc.unfreeze()
            if status == 0:
                spill.seek(0)
                done.update(_read_chunks(spill))
            # a child that died (killed, out of memory) left chunks undone: do them here
            for index in range(count):
                if index not in done:
                    done[index] = job(index)
        finally:
            os.close(queue)
            spill.close()
        return [done[index] for index in range(count)]


def _take(queue: int, job: Callable[[int], Output]) -> dict[int, Output]:
    done: dict[int, Output] = {}
    # a read of a few bytes from a pipe is atomic: each chunk number goes to one process
    while token := os.read(queue, _TOKEN):
        index = int.from_bytes(token, "big")
        done[index] = job(index)
    return done


def _child(queue: int, spill: IO[bytes], job: Callable[[int], Output]) -> NoReturn:
    code = 1
    try:
        for index, output in _take(queue, job).items():
            body = output.text.encode("utf-8", "surrogateescape")
            header = json.dumps([index, output.valid, output.invalid, output.errors, len(body)])
            spill.write(header.encode() + b"\n" + body)
        spill.flush()
        code = 0
    finally:
        # never return into the parent's code, nor run its exit handlers or flush its buffers
        os._exit(code)


def _anonymous_file() -> IO[bytes]:
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("certfleet-each"), "w+b")
    import tempfile

    return tempfile.TemporaryFile()


def _read_chunks(spill: IO[bytes]) -> dict[int, Output]:
    out: dict[int, Output] = {}
    while header := spill.readline():
        index, valid, invalid, errors, length = json.loads(header)
        text = spill.read(length).decode("utf-8", "surrogateescape")
        out[index] = Output(text, valid, invalid, tuple(errors))
    return out


def executor_for(count: int, *, min_items: int = PARALLEL_MIN_ITEMS) -> Executor:
    """The executor for a batch of ``count`` items: a forked child shares it when it is worth a
    second process (``min_items`` or more, two cores or more), else this process does it all."""
    if count < min_items or not hasattr(os, "fork"):
        return InProcessExecutor()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return ForkExecutor() if cpus >= 2 else InProcessExecutor()
