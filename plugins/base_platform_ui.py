"""Airflow plugin: the "BASE Platform" page, mounted by the api-server at /base-platform and
linked from the navigation. The app itself is base_platform.ui.app."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from base_platform.ui.app import create_app


class BasePlatformUIPlugin(AirflowPlugin):
    name = "base_platform_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/base-platform", "name": "BASE Platform"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "BASE Platform",
            "href": "/base-platform/",
            "destination": "nav",
            "url_route": "base-platform",
        }
    ]
