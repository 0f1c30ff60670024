"""The job queue: the Jobs page (``/jobs``) and ``/api/v1/jobs``, what ``certfleet jobs`` lists:
every job, newest first, with who holds a running one and until when, what each did, and each
zone's open jobs counted (a zone whose queued jobs grow old is one no worker serves)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from certfleet.console.deps import API_PREFIX, ConsoleDep, ViewerDep, checked_csrf
from certfleet.console.routes.api import ERRORS, MAX_ID, Id
from certfleet.console.services.queue import JobFilter
from certfleet.console.services.status import page_number
from certfleet.console.templating import render
from certfleet.errors import InputError

__all__ = ["api", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])
api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)], responses=ERRORS)

JSON = dict[str, Any]
MAX_LIMIT = 1000


def _deployment(text: str | None) -> int | None:
    """A ``deployment`` filter: empty for none, else a deployment's id."""
    if text is None or not text.strip():
        return None
    try:
        number = int(text.strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_ID:
        raise InputError("the deployment to filter by is a deployment's number (the History page lists them)")
    return number


def _filter(open_text: str | None, deployment: str | None) -> JobFilter:
    open_only = (open_text or "").lower() in ("1", "true", "on", "yes")
    return JobFilter(open_only=open_only, deployment=_deployment(deployment))


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    query = request.query_params
    wanted = _filter(query.get("open"), query.get("deployment"))
    page = console.queue.page(actor, wanted, page_number(query.get("page")))
    return render(
        request,
        "jobs.html",
        {
            "title": "Jobs",
            "here": "jobs",
            "page": page,
            "wanted": wanted,
            "zones": console.queue.zones(actor),
            "wide": True,
        },
    )


@api.get("/jobs", summary="The job queue, newest first, and each zone's open jobs")
def jobs_list(
    console: ConsoleDep,
    actor: ViewerDep,
    open_only: Annotated[bool, Query(alias="open", description="only queued and running jobs")] = False,
    deployment: str | None = None,
    limit: int = 100,
) -> JSON:
    wanted = _filter("1" if open_only else "", deployment)
    listed = console.queue.newest(actor, wanted, max(1, min(limit, MAX_LIMIT)))
    return {"jobs": [j.to_dict() for j in listed], "zones": [z.to_dict() for z in console.queue.zones(actor)]}


@api.get("/jobs/{job_id}", summary="One job of the queue")
def job_one(console: ConsoleDep, actor: ViewerDep, job_id: Id) -> JSON:
    data: JSON = console.queue.get(actor, job_id).to_dict()
    return data
