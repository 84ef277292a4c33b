"""Local SIMULATORS of Argo CD and Vault, for running the project with no cluster.

They follow ../shared/contracts and are checked against it by tests. Nothing in plugins/
imports them.
"""
