"""ACME: certfleet obtains certificates itself, from any ACME CA (External Account Binding
included), and proves control of each name where the name really lives (a node's webroot, a DNS
zone).

The protocol is certbot's ``acme`` library (``ClientV2``); what it lacks (account key change) is
built on its JOSE support. This package's ``__init__`` imports nothing, so that the store can use
:mod:`certfleet.acme.model` without loading the protocol: import the modules themselves
(``certfleet.acme.accounts``, ``certfleet.acme.issue``, ``certfleet.acme.preflight``).
"""
