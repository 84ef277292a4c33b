"""The one place where Argo CD errors become Airflow's failure or retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from base_platform.argocd.actions import ActionError
from base_platform.argocd.hooks import ArgoCDAPIError


@contextmanager
def airflow_errors(what: str = "") -> Iterator[None]:
    """A refusal or a permanent API error fails the task at once: retrying cannot fix it, and
    the hook already retried what can be. Anything else raises as is, for Airflow's retries."""
    prefix = f"{what}: " if what else ""
    try:
        yield
    except ActionError as exc:
        raise AirflowFailException(f"{prefix}{exc}") from exc
    except ArgoCDAPIError as exc:
        if exc.is_permanent:
            raise AirflowFailException(f"{prefix}{exc}") from exc
        raise
