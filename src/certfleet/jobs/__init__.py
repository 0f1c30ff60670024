"""Jobs and workers: work recorded in the store (today: one node of a deployment each), taken by
``certfleet worker`` processes of a zone under a lease. See ``docs/workers.md``."""
