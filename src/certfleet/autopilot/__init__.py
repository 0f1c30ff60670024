"""The autopilot: every lineage renews, deploys and proves itself on time, and someone is told
when it cannot.

:mod:`certfleet.renewal` decides when (pure); :mod:`certfleet.autopilot.renew` is one pass over
the lineages (issue, import, deploy, prove, record); :mod:`certfleet.autopilot.alerts` tells
people through Apprise, once per event; :mod:`certfleet.autopilot.ledger` keeps each lineage's
renewal state and :mod:`certfleet.autopilot.lock` lets one pass run at a time;
:mod:`certfleet.autopilot.background` runs passes inside ``certfleet serve``.

This package's ``__init__`` imports nothing: import the modules themselves.
"""
