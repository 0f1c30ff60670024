"""The server-rendered pages behind the login. Plain HTML forms; every change goes through a
service and is audited. The pages that need no login are in :mod:`certfleet.console.routes.public`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from anyio import from_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from certfleet.certinfo import describe
from certfleet.console.deps import (
    SESSION_COOKIE,
    ConsoleDep,
    FormDep,
    OperatorDep,
    ViewerDep,
    checked_csrf,
    client_address,
    form_text,
)
from certfleet.console.pictures import timeline_svg
from certfleet.console.roles import Forbidden, Role, parse_role
from certfleet.console.routes import forms
from certfleet.console.services.certificates import pem_text
from certfleet.console.services.clients import CONTENT_TYPES, PLACEHOLDERS, qr_svg
from certfleet.console.services.throttle import LoginThrottled
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, ConflictError, InputError

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])
# ids in paths are database integers: past what every backend stores is a 422, never a 500
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]

DEFAULT_TEMPLATE = """{
  "server": "${host}",
  "port": ${port},
  "username": "${username}",
  "display_name": "${display_name}",
  "certificate_sha256": "${fingerprint}"
}
"""

# messages shown after a change, by code: never text taken from the request
DONE = {
    "node-saved": "Node {} saved.",
    "node-removed": "Node {} removed.",
    "token-revoked": "Token {} revoked.",
    "profile-saved": "Client profile {} saved.",
    "user-added": "Client user {} added.",
    "user-removed": "Client user {} removed.",
    "imported": "Certificate imported into {} and made active.",
    "activated": "Version activated for {}.",
}


def done_messages(request: Request) -> list[tuple[str, str]]:
    code = request.query_params.get("done", "")
    if code in DONE:
        return [("good", DONE[code].format(request.query_params.get("name", "")[:80]))]
    return []


def refusal(exc: CertfleetError) -> list[tuple[str, str]]:
    """Why a form was refused, shown above it: the error's line and its hint."""
    return [("bad", f"{exc}" + (f" — {exc.hint}" if exc.hint else ""))]


def _page_status(exc: CertfleetError) -> int:
    """The status of a form shown again with why it was refused (the API's statuses)."""
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, LoginThrottled):
        return 429
    return 403 if isinstance(exc, Forbidden) else 400


def redirect(path: str, done: str | None = None, name: str = "", anchor: str = "") -> RedirectResponse:
    if done:
        path = f"{path}?done={done}&name={quote(name[:80])}"
    return RedirectResponse(path + (f"#{quote(anchor)}" if anchor else ""), status_code=303)


@router.post("/logout")
def logout(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    console.accounts.logout(actor, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    refresh = request.query_params.get("refresh") == "1"
    report, warnings = await asyncio.gather(
        console.status.report(refresh=refresh, scope=actor.lineages), console.status.client_warnings(refresh=refresh)
    )
    warn = console.settings.expiring_days
    timelines = {
        v.name: timeline_svg(v.active.not_before, v.active.not_after, report.checked_at, warn_days=warn)
        for v in report.lineages
        if v.active is not None and v.active.not_before is not None and v.active.not_after is not None
    }
    return render(
        request,
        "dashboard.html",
        {
            "title": "Dashboard",
            "here": "dashboard",
            "views": report.lineages,
            "timelines": timelines,
            "warnings": warnings,
            "bootstrap": console.serves_bootstrap(),
            "messages": done_messages(request),
        },
    )


# before the page: "{sha256}" alone would take "….pem" too
@router.get("/certificates/{sha256}.pem")
def certificate_pem(sha256: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    cert, _, lineage = console.certificates.find(sha256)
    if lineage is not None:
        console.fleet.check_lineage(actor, lineage)
    return Response(
        pem_text(cert),
        media_type="application/x-pem-file",
        headers={"content-disposition": f'attachment; filename="{describe(cert).sha256[:16]}.pem"'},
    )


@router.get("/certificates/{sha256}", response_class=HTMLResponse)
def certificate(request: Request, sha256: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    cert, chain, lineage = console.certificates.find(sha256)
    if lineage is not None:
        console.fleet.check_lineage(actor, lineage)
    picture, verification = console.certificates.chain_picture(cert, chain)
    info = describe(cert)
    return render(
        request,
        "certificate.html",
        {
            "title": f"Certificate {info.common_name or info.sha256[:16]}",
            "info": info,
            "lineage": lineage,
            "picture": picture,
            "verification": verification,
            "pem": pem_text(cert),
        },
    )


# -- nodes ------------------------------------------------------------------------------------------


@router.get("/nodes", response_class=HTMLResponse)
def nodes(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    specs = console.fleet.visible_nodes(actor)
    return render(
        request,
        "nodes.html",
        {
            "title": "Nodes",
            "here": "nodes",
            "nodes": specs,
            "memberships": console.fleet.memberships(specs),
            "messages": done_messages(request),
        },
    )


@router.get("/nodes/new", response_class=HTMLResponse)
def node_new(request: Request, console: ConsoleDep, actor: OperatorDep) -> Response:
    return render(request, "node_form.html", forms.node_form_context(console, actor, None))


@router.get("/nodes/{name}/edit", response_class=HTMLResponse)
def node_edit(request: Request, name: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    spec = console.fleet.visible_node(actor, name, change=True)
    return render(request, "node_form.html", forms.node_form_context(console, actor, spec))


@router.post("/nodes")
def node_save(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    values = forms.node_values(form)
    password = form_text(form, "password", 2000)

    def confirm() -> None:
        console.accounts.confirm_password(actor, password, address=client_address(request))

    try:
        spec, _ = console.fleet.save_node(actor, values, confirm=confirm)
    except CertfleetError as exc:
        conflict = isinstance(exc, ConflictError)
        ctx = forms.node_form_context(console, actor, None, values=values)
        if conflict:  # what is saved now, and the change that was refused, side by side
            ctx["conflict"] = True
            ctx["current"] = forms.node_now(console, values.original)
        ctx["messages"] = refusal(exc)
        return render(request, "node_form.html", ctx, status_code=_page_status(exc))
    return redirect("/nodes", "node-saved", spec.name)


@router.post("/nodes/{name}/remove")
def node_remove(name: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    console.fleet.remove_node(actor, name)
    return redirect("/nodes", "node-removed", name)


# -- history and audit --------------------------------------------------------------------------------


@router.get("/history", response_class=HTMLResponse)
def history(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    versions = {k: v for k, v in console.fleet.every_version().items() if actor.allows(k)}
    return render(
        request,
        "history.html",
        {
            "title": "History",
            "here": "history",
            "versions": versions,
            "deployments": console.fleet.visible_deployments(actor, None, 100),
        },
    )


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    entries = console.fleet.visible_audit(actor, limit=500)
    return render(request, "audit.html", {"title": "Audit", "here": "audit", "entries": entries})


# -- API tokens ---------------------------------------------------------------------------------------


def _tokens_context(console: ConsoleDep, actor: ViewerDep) -> dict[str, Any]:
    return {
        "title": "API tokens",
        "here": "tokens",
        "tokens": console.tokens.visible(actor),
        "roles": [r.value for r in Role if actor.may(r)],
        "role": actor.role.value,
        "now": console.clock(),
    }


@router.get("/tokens", response_class=HTMLResponse)
def tokens(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "tokens.html", {**_tokens_context(console, actor), "messages": done_messages(request)})


@router.post("/tokens", response_class=HTMLResponse)
def token_create(request: Request, console: ConsoleDep, actor: ViewerDep, form: FormDep) -> Response:
    try:
        days_text = form_text(form, "days", 10).strip()
        days = int(days_text) if days_text else None
    except ValueError:
        days = 0
    role_text = form_text(form, "role", 20).strip()
    token, info = console.tokens.create(
        actor, form_text(form, "name", 200), role=parse_role(role_text) if role_text else None, days=days
    )
    # shown in this response only; never stored in clear, never in a redirect URL
    return render(
        request,
        "tokens.html",
        {**_tokens_context(console, actor), "new_token": token, "new_token_name": info.name, "new_token_info": info},
    )


@router.post("/tokens/{token_id}/revoke")
def token_revoke(token_id: Id, console: ConsoleDep, actor: ViewerDep) -> Response:
    return redirect("/tokens", "token-revoked", console.tokens.revoke(actor, token_id))


# -- client deployment --------------------------------------------------------------------------------


def _clients_context(request: Request, console: ConsoleDep) -> dict[str, Any]:
    # the page runs in a worker thread; the probes of the client hosts run on the event loop
    warnings = from_thread.run(console.status.client_warnings)
    return {
        "title": "Clients",
        "here": "clients",
        "profiles": console.clients.profiles(),
        "users": console.clients.users(),
        "warnings": warnings,
        "content_types": CONTENT_TYPES,
        "placeholders": PLACEHOLDERS,
        "default_template": DEFAULT_TEMPLATE,
        "default_host": request.headers.get("host", "")[:300],
        "messages": done_messages(request),
    }


@router.get("/clients", response_class=HTMLResponse)
def clients(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "clients.html", _clients_context(request, console))


@router.post("/clients/profiles")
def client_profile_save(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    try:
        hours = int(form_text(form, "link_hours", 10) or "72")
    except ValueError:
        hours = 0
    try:
        profile = console.clients.save_profile(
            actor,
            form_text(form, "name", 200),
            hostname=form_text(form, "hostname", 400),
            template=form_text(form, "template", 70_000),
            content_type=form_text(form, "content_type", 200),
            link_hours=hours,
        )
    except CertfleetError as exc:
        ctx = _clients_context(request, console)
        ctx["messages"] = refusal(exc)
        return render(request, "clients.html", ctx, status_code=400)
    return redirect("/clients", "profile-saved", profile.name)


@router.post("/clients/users")
def client_user_add(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    try:
        user = console.clients.add_user(
            actor,
            form_text(form, "profile", 200),
            form_text(form, "username", 200),
            display_name=form_text(form, "display_name", 400),
            email=form_text(form, "email", 400),
        )
    except CertfleetError as exc:
        ctx = _clients_context(request, console)
        ctx["messages"] = refusal(exc)
        return render(request, "clients.html", ctx, status_code=400)
    return redirect("/clients", "user-added", user.username)


@router.post("/clients/users/{user_id}/remove")
def client_user_remove(user_id: Id, console: ConsoleDep, actor: OperatorDep) -> Response:
    return redirect("/clients", "user-removed", console.clients.remove_user(actor, user_id))


@router.post("/clients/users/{user_id}/link", response_class=HTMLResponse)
def client_link(request: Request, user_id: Id, console: ConsoleDep, actor: OperatorDep) -> Response:
    link = console.clients.new_link(actor, user_id)
    ctx = _clients_context(request, console)
    ctx.update({"link": link, "qr": Markup(qr_svg(link.url))})  # noqa: S704 (segno's own SVG markup)
    return render(request, "clients.html", ctx)


# -- generate CSR ---------------------------------------------------------------------------------------


@router.get("/csr", response_class=HTMLResponse)
def csr_form(request: Request, console: ConsoleDep, actor: OperatorDep) -> Response:
    lineage = request.query_params.get("lineage") or None
    if lineage is None:
        records = console.fleet.visible_lineages(actor)
        lineage = records[0].name if len(records) == 1 else None
    elif not actor.allows(lineage):
        lineage = None
    return render(request, "csr.html", forms.csr_form_context(console, actor, lineage))


@router.post("/csr", response_class=HTMLResponse)
def csr_generate(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    values = forms.csr_values(form)
    try:
        result = console.fleet.request_csr(actor, values)
    except CertfleetError as exc:
        ctx = forms.csr_form_context(console, actor, values.lineage if actor.allows(values.lineage) else None)
        ctx["messages"] = refusal(exc)
        return render(request, "csr.html", ctx, status_code=_page_status(exc))
    return render(
        request,
        "csr_done.html",
        {"title": "CSR ready", "here": "csr", "result": result, "csr": result.csr_pem.decode("ascii")},
    )


@router.get("/csr/{lineage}/{number}.csr")
def csr_download(lineage: str, number: Id, console: ConsoleDep, actor: ViewerDep) -> Response:
    console.fleet.check_lineage(actor, lineage)
    return Response(
        console.fleet.csr_pem(lineage, number),
        media_type="application/pkcs10",
        headers={"content-disposition": f'attachment; filename="{lineage}-{number}.csr"'},
    )


# -- import ---------------------------------------------------------------------------------------------


def _import_context(console: ConsoleDep, actor: OperatorDep, lineage: str | None) -> dict[str, Any]:
    records = console.fleet.visible_lineages(actor)
    if lineage is not None and not actor.allows(lineage):
        lineage = None
    if lineage is None and len(records) == 1:
        lineage = records[0].name
    return {
        "title": "Import",
        "here": "import",
        "lineages": records,
        "lineage": lineage or "",
        "limit_mib": console.settings.upload_limit // (1024 * 1024),
    }


@router.get("/import", response_class=HTMLResponse)
def import_form(request: Request, console: ConsoleDep, actor: OperatorDep) -> Response:
    return render(request, "import.html", _import_context(console, actor, request.query_params.get("lineage")))


@router.post("/import", response_class=HTMLResponse)
def import_preview(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    """Read the upload and show what it holds, without saving anything."""
    lineage = form_text(form, "lineage", 64)
    try:
        console.fleet.check_lineage(actor, lineage)
        inputs = forms.read_uploads(form.getlist("files"), limit=console.settings.upload_limit)
        password = form_text(form, "password", 1024)
        result, preview = console.imports.preview(actor, lineage, inputs, [password.encode()] if password else [])
    except CertfleetError as exc:
        ctx = _import_context(console, actor, lineage or None)
        ctx["messages"] = refusal(exc)
        return render(request, "import.html", ctx, status_code=413 if "too large" in str(exc) else 400)
    picture, _ = console.certificates.chain_picture(result.chain.leaf, list(result.chain.chain[1:]))
    return render(
        request,
        "import_preview.html",
        {
            "title": "Import: findings",
            "here": "import",
            "r": result,
            "leaf": describe(result.chain.leaf),
            "chain": [describe(c) for c in result.chain.chain[1:]],
            "root": describe(result.chain.root) if result.chain.root is not None else None,
            "picture": picture,
            "preview": preview,
            "files": [name for name, _ in inputs],
        },
    )


@router.post("/import/{preview_id}/confirm")
def import_confirm(preview_id: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    preview = console.imports.confirm(actor, preview_id)
    return redirect("/", "imported", preview.lineage, anchor=f"lineage-{preview.lineage}")


# -- deploy ---------------------------------------------------------------------------------------------


@router.get("/deploy", response_class=HTMLResponse)
def deploy_form(request: Request, console: ConsoleDep, actor: OperatorDep) -> Response:
    records = [r for r in console.fleet.visible_lineages(actor) if r.active is not None]
    lineage = request.query_params.get("lineage") or (records[0].name if records else "")
    members = console.fleet.nodes(lineage) if lineage in {r.name for r in records} else []
    return render(
        request,
        "deploy.html",
        {
            "title": "Deploy",
            "here": "deploy",
            "lineages": records,
            "lineage": lineage,
            "nodes": members,
            "jobs": [j for j in console.jobs.recent(10) if actor.allows(j.lineage)],
        },
    )


@router.post("/deploy")
def deploy_start(console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    lineage = console.fleet.check_lineage(actor, form_text(form, "lineage", 64))
    chosen = [v for v in form.getlist("nodes") if isinstance(v, str)][:200]
    if not chosen:
        raise InputError("choose at least one node to deploy to")
    job = console.jobs.start(actor, lineage, chosen)
    return RedirectResponse(f"/deploy/jobs/{job.id}", status_code=303)


@router.get("/deploy/jobs/{job_id}", response_class=HTMLResponse)
def deploy_job(request: Request, job_id: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    job = console.jobs.get(job_id)
    console.fleet.check_lineage(actor, job.lineage)
    return render(request, "deploy_job.html", {"title": f"Deploy {job.lineage}", "here": "deploy", "job": job})
