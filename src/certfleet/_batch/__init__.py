"""``verify --each``: thousands of leaves verified as one batch, each as :meth:`Verifier.verify` would.

Private to certfleet: the command line runs it; the core never imports it.

- :mod:`~certfleet._batch.verifier`: :class:`BatchVerifier`, :meth:`Verifier.verify`'s steps over
  a group of leaves at a time, with what they need from each leaf read from its DER
  (:mod:`certfleet.leafscan`).
"""
