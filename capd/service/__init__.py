"""The service layer: typed requests in, domain results (or CapdError) out.

Every front door (``capd.api``) and the worker desk call it; it calls the domain's pure
rules and the store.
"""

from capd.service.core import GuardLike, Service, ip_allowed, random_task_id, result_of
from capd.service.messages import (
    Balance,
    BalanceRequest,
    CreateTaskRequest,
    Credentials,
    Parsed,
    QueueStatsRequest,
    ReportKind,
    ReportRequest,
    ResultState,
    SpendingHour,
    SpendingStatsRequest,
    TaskCreated,
    TaskResult,
    TaskResultRequest,
    parse_task_id,
)

__all__ = [
    "Balance", "BalanceRequest", "CreateTaskRequest", "Credentials", "GuardLike", "Parsed",
    "QueueStatsRequest", "ReportKind", "ReportRequest", "ResultState", "Service",
    "SpendingHour", "SpendingStatsRequest", "TaskCreated", "TaskResult", "TaskResultRequest",
    "ip_allowed", "parse_task_id", "random_task_id", "result_of",
]
