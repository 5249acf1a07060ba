"""Usage reports: rows of usage grouped by metadata or time, as objects, CSV or JSON.

``usage_report(records, group_by=("model",), since=..., until=...)`` takes
usage records from any usage log (``MemoryUsageLog.records()``,
``treasurer.reports.read(path)`` for a :class:`~treasurer.SqliteUsageLog`
file) and returns :class:`ReportRow` s, the most expensive first.
"""

from ._ops.reports import KEYS, ReportRow, columns, to_json, usage_report, write_csv
from ._ops.sqlite_log import read

__all__ = ["KEYS", "ReportRow", "columns", "read", "to_json", "usage_report", "write_csv"]
