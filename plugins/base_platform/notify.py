"""Notifications through an Airflow notifier: a generic webhook with a Teams-style card.

The target is an HTTP connection (its host may be the whole webhook URL), so the URL, which
often embeds a token, lives in Airflow's secrets, never in code or logs. Usable as a task
callback (``on_failure_callback=WebhookNotifier(...)``) or called from a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseNotifier, Context

MAX_TEXT = 20_000  # Teams cards are capped at ~28 KB


class WebhookNotifier(BaseNotifier):
    """POST a MessageCard (title, text, colour) to the webhook behind ``http_conn_id``."""

    template_fields: Sequence[str] = ("title", "text")

    def __init__(self, *, http_conn_id: str, title: str, text: str, colour: str = "0076D7") -> None:
        super().__init__()
        self.http_conn_id = http_conn_id
        self.title = title
        self.text = text
        self.colour = colour

    def payload(self) -> dict[str, Any]:
        text = self.text if len(self.text) <= MAX_TEXT else self.text[:MAX_TEXT] + "\n… (truncated)"
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": self.title,
            "themeColor": self.colour,
            "title": self.title,
            "text": text,
        }

    def notify(self, context: Context) -> None:
        hook = HttpHook(method="POST", http_conn_id=self.http_conn_id)
        hook.run(endpoint="", json=self.payload(), extra_options={"check_response": True, "timeout": 30})
