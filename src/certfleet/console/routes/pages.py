"""The server-rendered pages behind the login: the dashboard, certificates, nodes, history and
audit, API tokens and client deployment. Plain HTML forms; every change goes through a service and
is audited. The certificate's life (CSR, import, deploy, rollback, export, trust anchors) is in
:mod:`certfleet.console.routes.lifecycle`; the pages that need no login in
:mod:`certfleet.console.routes.public`."""

from __future__ import annotations

import asyncio
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends, Request
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
from certfleet.console.roles import Role, parse_role
from certfleet.console.routes import forms
from certfleet.console.routes.answers import confirm_page, confirmed, done_messages, page_status, redirect, refusal
from certfleet.console.routes.api import Id
from certfleet.console.services.audit import action_kinds
from certfleet.console.services.certificates import pem_text
from certfleet.console.services.clients import CONTENT_TYPES, PLACEHOLDERS, ClientLink, qr_svg
from certfleet.console.services.status import node_counts, page_number, page_of
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, ConflictError, NotFoundError

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])

DEFAULT_TEMPLATE = """{
  "server": "${host}",
  "port": ${port},
  "username": "${username}",
  "display_name": "${display_name}",
  "ca_pin_sha256": "${ca_pin_sha256}",
  "names": "${names}"
}
"""
# what a page after a redirect asks the reveals for
_TOKEN, _LINK = "api-token", "client-link"


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
    here = console.served_for(request.url.hostname)
    # every lineage shows the same page of its nodes; the counts are over all of them
    number = page_number(request.query_params.get("page"))
    return render(
        request,
        "dashboard.html",
        {
            "title": "Dashboard",
            "here": "dashboard",
            "views": report.lineages,
            "node_pages": {v.name: page_of(v.nodes, number) for v in report.lineages},
            "counts": {v.name: node_counts(v.nodes) for v in report.lineages},
            "timelines": timelines,
            "warnings": warnings,
            "host": request.url.hostname or "",
            "bootstrap": here is not None and here.bootstrap,
            "served_names": console.certificates.served_names(),
            "rollback": {v.name for v in report.lineages if len(console.fleet.issued(v.name)) > 1},
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
    page = page_of(console.fleet.visible_nodes(actor), page_number(request.query_params.get("page")))
    return render(
        request,
        "nodes.html",
        {
            "title": "Nodes",
            "here": "nodes",
            "nodes": page.items,
            "page": page,
            "memberships": console.fleet.memberships(page.items),
            "messages": done_messages(request),
            "wide": True,
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
        return render(request, "node_form.html", ctx, status_code=page_status(exc))
    return redirect("/nodes", "node-saved", spec.name)


@router.get("/nodes/{name}/remove", response_class=HTMLResponse)
def node_remove_confirm(request: Request, name: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    spec = console.fleet.visible_node(actor, name, change=True)
    lineages = console.fleet.node_lineages(name)
    details = [
        f"It leaves lineage {lineage}: the next certificate of {lineage} no longer covers its names."
        for lineage in lineages
    ]
    details.append("The files certfleet deployed on it stay where they are, and it keeps serving them.")
    return confirm_page(
        request,
        title=f"Remove node {spec.name}",
        question=f"Remove node {spec.name} ({', '.join(spec.names)})?",
        details=details,
        action=f"/nodes/{spec.name}/remove",
        button="Remove the node",
        back="/nodes",
    )


@router.post("/nodes/{name}/remove")
def node_remove(name: str, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/nodes/{name}/remove", status_code=303)
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
            "active_of": {name: any(v.active for v in items) for name, items in versions.items()},
            "deployments": console.fleet.visible_deployments(actor, None, 100),
            "wide": True,
        },
    )


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    query = request.query_params
    try:
        number = int(query.get("page", "1"))
    except ValueError:
        number = 1
    page = console.audit.page(kind=query.get("kind", ""), text=query.get("q", ""), number=number, scope=actor.lineages)
    return render(
        request,
        "audit.html",
        {"title": "Audit", "here": "audit", "page": page, "kinds": action_kinds(), "wide": True},
    )


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
    # a new token comes here after its form's redirect, once: shown in this response only
    new = console.reveals.take(actor.account_id, _TOKEN, request.query_params.get("new", ""), tuple)
    return render(
        request,
        "tokens.html",
        {
            **_tokens_context(console, actor),
            "new_token": new[0] if new else "",
            "new_token_name": new[1] if new else "",
            "messages": done_messages(request),
        },
    )


@router.post("/tokens")
def token_create(console: ConsoleDep, actor: ViewerDep, form: FormDep) -> Response:
    try:
        days_text = form_text(form, "days", 10).strip()
        days = int(days_text) if days_text else None
    except ValueError:
        days = 0
    role_text = form_text(form, "role", 20).strip()
    token, info = console.tokens.create(
        actor, form_text(form, "name", 200), role=parse_role(role_text) if role_text else None, days=days
    )
    # never stored in clear, never in a URL: the page after the redirect takes it, sealed, from the store
    return redirect("/tokens", query={"new": console.reveals.put(actor.account_id, _TOKEN, (token, info.name))})


@router.get("/tokens/{token_id}/revoke", response_class=HTMLResponse)
def token_revoke_confirm(request: Request, token_id: Id, console: ConsoleDep, actor: ViewerDep) -> Response:
    found = next((t for t in console.tokens.visible(actor) if t.id == token_id and not t.revoked_at), None)
    if found is None:
        return redirect("/tokens")
    return confirm_page(
        request,
        title=f"Revoke token {found.name}",
        question=f"Revoke the API token {found.name} of {found.username}?",
        details=["Whatever uses it (a monitoring system, a script) is refused from the next request on."],
        action=f"/tokens/{token_id}/revoke",
        button="Revoke the token",
        back="/tokens",
    )


@router.post("/tokens/{token_id}/revoke")
def token_revoke(token_id: Id, console: ConsoleDep, actor: ViewerDep, form: FormDep) -> Response:
    if not any(t.id == token_id for t in console.tokens.visible(actor)):
        raise NotFoundError(f"no API token with id {token_id}")
    if not confirmed(form):
        return RedirectResponse(f"/tokens/{token_id}/revoke", status_code=303)
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
    ctx = _clients_context(request, console)
    # a new link comes here after its form's redirect, once: its URL is shown in this response only
    link = console.reveals.take(actor.account_id, _LINK, request.query_params.get("link", ""), ClientLink)
    if link is not None:
        ctx.update({"link": link, "qr": Markup(qr_svg(link.url))})  # noqa: S704 (segno's own SVG markup)
    return render(request, "clients.html", ctx)


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


@router.get("/clients/users/{user_id}/remove", response_class=HTMLResponse)
def client_user_remove_confirm(request: Request, user_id: Id, console: ConsoleDep, actor: OperatorDep) -> Response:
    user = next((u for u in console.clients.users() if u.id == user_id), None)
    if user is None:
        return redirect("/clients")
    return confirm_page(
        request,
        title=f"Remove client user {user.username}",
        question=f"Remove {user.username} from the client profile {user.profile}?",
        details=["Their deployment link stops working; a client already configured keeps its settings."],
        action=f"/clients/users/{user_id}/remove",
        button="Remove the user",
        back="/clients",
    )


@router.post("/clients/users/{user_id}/remove")
def client_user_remove(user_id: Id, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    if not any(u.id == user_id for u in console.clients.users()):
        raise NotFoundError(f"no client user with id {user_id}")
    if not confirmed(form):
        return RedirectResponse(f"/clients/users/{user_id}/remove", status_code=303)
    return redirect("/clients", "user-removed", console.clients.remove_user(actor, user_id))


@router.post("/clients/users/{user_id}/link")
def client_link(user_id: Id, console: ConsoleDep, actor: OperatorDep) -> Response:
    link = console.clients.new_link(actor, user_id)
    return redirect("/clients", query={"link": console.reveals.put(actor.account_id, _LINK, link)}, anchor="new-link")
