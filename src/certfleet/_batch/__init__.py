"""``verify --each``: thousands of leaves verified as one batch, each as :meth:`Verifier.verify` would.

Private to certfleet: the command line (``cli/_each.py``) runs it; the core never imports it.

- :mod:`~certfleet._batch.options`: ``verify``'s options, read without Typer.
- :mod:`~certfleet._batch.files`: a leaf file read, verified and made a record, in groups.
- :mod:`~certfleet._batch.verifier`: :class:`BatchVerifier`, :meth:`Verifier.verify`'s steps over
  a group of leaves at a time, with what they need from each leaf read from its DER
  (:mod:`certfleet.leafscan`).
- :mod:`~certfleet._batch.executor`: who runs the chunks: this process, or it and a forked child.
- :mod:`~certfleet._batch.runner`: a batch's chunks, lines and tally.
"""
