"""The certfleet console: an HTTPS panel and JSON API over the store, and client deployment links.

Layers, each importing only those before it: ``settings``; ``services/`` (what the console does,
over the store and the library: accounts, clients, the fleet, imports, deploy jobs, status);
``core`` (the services of one application); ``deps`` (typed request dependencies), ``templating``,
``middleware``; ``routes/`` (public, pages, api, metrics); ``app`` (builds the application);
``server`` (``certfleet serve``). This file imports none of them.
"""
