"""The fleet: nodes, their targets and transports, and deploying one version to many nodes."""
