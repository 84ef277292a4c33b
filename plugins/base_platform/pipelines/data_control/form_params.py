"""What data_control's requests look like, for the trigger forms (checked when a run is triggered)
and for the functions (checked again when called from Python). Light: the DAG files import it."""

from __future__ import annotations

import re

POINT = re.compile(r"^(\d+|\d{4}-\d{2}-\d{2}T\S+)$")  # a snapshot id, or an ISO timestamp with its zone
SIZE = re.compile(r"^(?:(?P<rows>[1-9]\d*)|(?P<percent>\d{1,2}(?:\.\d+)?|100)%)$")  # 1000 rows, or 5%
SPLITS = ("train", "validation", "test")
SPLIT_CHOICES = ("80/10/10", "70/15/15", "60/20/20", "90/5/5", "98/1/1")  # percent, in SPLITS order
