"""The autopilot's pages and API: the schedule (each lineage's next renewal and why, "renew now"
and the passes started here), and the alerts (destinations shown masked, a test message, the
alerts open and sent). Viewers read both; operators renew now and send test messages; only
admins add or remove a destination (its URL may carry a password or a token: it is sealed in the
store and only ever shown masked). Forms answer with a redirect (post/redirect/get)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from certfleet.autopilot.alerts import Event
from certfleet.console.core import Console
from certfleet.console.deps import (
    API_PREFIX,
    AdminDep,
    ConsoleDep,
    FormDep,
    OperatorDep,
    ViewerDep,
    checked_csrf,
    form_text,
)
from certfleet.console.routes.answers import confirm_page, confirmed, done_messages, page_status, redirect, refusal
from certfleet.console.routes.api import ERRORS, Id
from certfleet.console.services.audit import Actor
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, InputError

__all__ = ["api", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])
api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)], responses=ERRORS)
JSON = dict[str, Any]


# -- the schedule ---------------------------------------------------------------------------------------


def _schedule_context(request: Request, console: Console, actor: Actor) -> dict[str, Any]:
    return {
        "title": "Schedule",
        "here": "schedule",
        "entries": console.autopilot.schedule(actor),
        "jobs": console.autopilot.recent(actor),
        "messages": done_messages(request),
    }


@router.get("/schedule", response_class=HTMLResponse)
def schedule(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "schedule.html", _schedule_context(request, console, actor))


@router.post("/schedule/{lineage}/renew")
def renew_now(request: Request, lineage: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    """The pass ``certfleet renew --lineage LINEAGE --force`` runs; its page follows it."""
    console.fleet.check_lineage(actor, lineage)
    try:
        job = console.autopilot.renew_now(actor, lineage)
    except CertfleetError as exc:  # a pass runs already, or the lineage is gone: said above the schedule
        ctx = _schedule_context(request, console, actor)
        ctx["messages"] = refusal(exc)
        return render(request, "schedule.html", ctx, status_code=page_status(exc))
    return RedirectResponse(f"/schedule/runs/{job.id}", status_code=303)


@router.get("/schedule/runs/{job_id}", response_class=HTMLResponse)
def renew_job(request: Request, job_id: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    job = console.autopilot.job(actor, job_id)
    return render(request, "schedule_run.html", {"title": f"Renewing {job.lineage}", "here": "schedule", "job": job})


# -- alerts ---------------------------------------------------------------------------------------------


def _alerts_context(request: Request, console: Console, actor: Actor) -> dict[str, Any]:
    tested = console.autopilot.test_result(actor, request.query_params.get("tested", "")[:40])
    return {
        "title": "Alerts",
        "here": "alerts",
        "destinations": console.autopilot.destinations(),
        "settings": console.autopilot.settings(),
        "open": console.autopilot.open_alerts(actor),
        "sent": console.autopilot.sent(actor),
        "events": [e.value for e in Event],
        "tested": tested,
        "messages": done_messages(request),
    }


@router.get("/alerts", response_class=HTMLResponse)
def alerts(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "alerts.html", _alerts_context(request, console, actor))


@router.post("/alerts")
def alert_add(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    events = [v for v in form.getlist("events") if isinstance(v, str)][: len(Event)]
    try:
        added = console.autopilot.add(actor, form_text(form, "url", 4096), events)
    except CertfleetError as exc:  # the URL is never shown again, not even refused
        ctx = _alerts_context(request, console, actor)
        ctx["messages"] = refusal(exc)
        return render(request, "alerts.html", ctx, status_code=page_status(exc))
    return redirect("/alerts", "alert-added", str(added.id))


def _settings_values(repeat: str, expiry: str) -> tuple[float | None, list[int]]:
    """The settings form's fields: hours (empty: unchanged), days left separated by commas or
    spaces (empty: two thirds and five sixths of the lifetime)."""
    try:
        hours = float(repeat) if repeat.strip() else None
        days = [int(d) for d in expiry.replace(",", " ").split()]
    except ValueError as exc:
        raise InputError(
            "give the repeat interval in hours and the expiry stages as days left",
            hint="e.g. 24, and 14, 3 (or nothing for two thirds and five sixths of the lifetime)",
        ) from exc
    return hours, days


@router.post("/alerts/settings")
def alert_settings(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    """The repeat interval and the expiry stages (``certfleet alert config``)."""
    try:
        hours, days = _settings_values(form_text(form, "repeat_hours", 20), form_text(form, "expiry_days", 100))
        console.autopilot.set_settings(actor, repeat_hours=hours, expiry_days=days)
    except CertfleetError as exc:
        ctx = _alerts_context(request, console, actor)
        ctx["messages"] = refusal(exc)
        return render(request, "alerts.html", ctx, status_code=page_status(exc))
    return redirect("/alerts", "alert-settings", "")


@router.post("/alerts/{number}/test")
def alert_test(number: Id, console: ConsoleDep, actor: OperatorDep) -> Response:
    """A test message through Apprise; the page it leads to says where it got."""
    result = console.autopilot.test(actor, number)
    return redirect("/alerts", query={"tested": result.id}, anchor="test-result")


@router.get("/alerts/{number}/remove", response_class=HTMLResponse)
def alert_remove_confirm(request: Request, number: Id, console: ConsoleDep, actor: AdminDep) -> Response:
    destination = console.autopilot.destination(number)
    return confirm_page(
        request,
        title="Remove an alert destination",
        question=f"Stop sending alerts to destination {destination.id}?",
        details=[destination.shown, "Its URL is deleted from the store; the alerts sent to it stay in the trail."],
        action=f"/alerts/{destination.id}/remove",
        button="Remove it",
        back="/alerts",
    )


@router.post("/alerts/{number}/remove")
def alert_remove(number: Id, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/alerts/{number}/remove", status_code=303)
    gone = console.autopilot.remove(actor, number)
    return redirect("/alerts", "alert-removed", str(gone.id))


# -- the same as JSON -------------------------------------------------------------------------------------


class AlertIn(BaseModel):
    url: str = Field(min_length=1, max_length=4096, description="an Apprise URL; sealed, only ever shown masked")
    events: list[Event] = Field(default_factory=list, max_length=len(Event), description="none: every event")


class AlertSettingsIn(BaseModel):
    repeat_hours: float | None = Field(None, gt=0, le=8760, description="send an open alert again after this")
    expiry_days: list[Annotated[int, Field(ge=1, le=3650)]] | None = Field(
        None, max_length=4, description="alert at these days left; [] for two thirds and five sixths of the lifetime"
    )


@api.get("/schedule", summary="Each lineage's next renewal and why, and the autopilot's last outcome")
def schedule_json(console: ConsoleDep, actor: ViewerDep) -> list[JSON]:
    return [e.to_dict() for e in console.autopilot.schedule(actor)]


@api.post("/lineages/{name}/renew", status_code=202, summary="Renew now: one forced pass over the lineage")
def renew_json(name: str, console: ConsoleDep, actor: OperatorDep) -> JSON:
    """Started: follow it at ``/api/v1/renewals/{id}``. 409 while another pass runs."""
    console.fleet.check_lineage(actor, name)
    data: JSON = console.autopilot.renew_now(actor, name).to_dict()
    return data


@api.get("/renewals/{job_id}", summary="A renewal's progress, then its report")
def renewal_json(job_id: str, console: ConsoleDep, actor: ViewerDep) -> JSON:
    data: JSON = console.autopilot.job(actor, job_id).to_dict()
    return data


@api.get("/alerts", summary="Alert destinations (masked), settings, alerts open and sent")
def alerts_json(console: ConsoleDep, actor: ViewerDep) -> JSON:
    auto = console.autopilot
    return {
        "destinations": [d.to_dict() for d in auto.destinations()],
        "settings": auto.settings().to_dict(),
        "open": [a.to_dict() for a in auto.open_alerts(actor)],
        "sent": [s.to_dict() for s in auto.sent(actor)],
    }


@api.post("/alerts", status_code=201, summary="Add an alert destination")
def alert_add_json(body: AlertIn, console: ConsoleDep, actor: AdminDep) -> JSON:
    return console.autopilot.add(actor, body.url, [e.value for e in body.events]).to_dict()


@api.put("/alerts/settings", summary="The repeat interval and the expiry stages")
def alert_settings_json(body: AlertSettingsIn, console: ConsoleDep, actor: AdminDep) -> JSON:
    settings = console.autopilot.set_settings(actor, repeat_hours=body.repeat_hours, expiry_days=body.expiry_days)
    return settings.to_dict()


@api.delete("/alerts/{number}", summary="Remove an alert destination")
def alert_remove_json(number: Id, console: ConsoleDep, actor: AdminDep) -> JSON:
    return console.autopilot.remove(actor, number).to_dict()


@api.post("/alerts/{number}/test", summary="Send a test message to a destination")
def alert_test_json(number: Id, console: ConsoleDep, actor: OperatorDep) -> JSON:
    """Where the message got: ``ok`` false, with each failed delivery's reason, when it did not."""
    return console.autopilot.test(actor, number).to_dict()
