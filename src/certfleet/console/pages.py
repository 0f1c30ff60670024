"""The server-rendered pages behind the login. Plain HTML forms; every change goes through the
library and is audited. The pages that need no login are in :mod:`certfleet.console.public`."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from certfleet.certinfo import describe
from certfleet.console import flows
from certfleet.console.accounts import Actor
from certfleet.console.app import SESSION_COOKIE, authenticate, console_of, form_text, read_form, render
from certfleet.console.clients import CONTENT_TYPES, PLACEHOLDERS, qr_svg
from certfleet.console.service import ConsoleAction
from certfleet.errors import CertfleetError, InputError

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(authenticate)])

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


def actor_of(request: Request) -> Actor:
    actor: Actor = request.state.actor
    return actor


def done_messages(request: Request) -> list[tuple[str, str]]:
    code = request.query_params.get("done", "")
    if code in DONE:
        return [("good", DONE[code].format(request.query_params.get("name", "")[:80]))]
    return []


def refusal(exc: CertfleetError) -> list[tuple[str, str]]:
    """Why a form was refused, shown above it: the error's line and its hint."""
    return [("bad", f"{exc}" + (f" — {exc.hint}" if exc.hint else ""))]


def redirect(path: str, done: str | None = None, name: str = "", anchor: str = "") -> RedirectResponse:
    if done:
        path = f"{path}?done={done}&name={quote(name[:80])}"
    return RedirectResponse(path + (f"#{quote(anchor)}" if anchor else ""), status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    console = console_of(request)
    await asyncio.to_thread(console.accounts.logout, request.cookies.get(SESSION_COOKIE, ""))
    await asyncio.to_thread(console.audit, actor_of(request), ConsoleAction.LOGOUT, {})
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request) -> Response:
    console = console_of(request)
    refresh = request.query_params.get("refresh") == "1"
    report, warnings = await asyncio.gather(console.status(refresh=refresh), console.client_warnings(refresh=refresh))
    views = report.lineages
    now = console.now()
    timelines = {v.name: console.timeline(v.active, now) for v in views if v.active is not None}
    bootstrap = console.tls is not None and any(s.label == "bootstrap" for s in console.tls.served)
    return render(
        request,
        "dashboard.html",
        {
            "title": "Dashboard",
            "here": "dashboard",
            "views": views,
            "timelines": timelines,
            "warnings": warnings,
            "bootstrap": bootstrap,
            "messages": done_messages(request),
        },
    )


@router.get("/certificates/{sha256}", response_class=HTMLResponse)
async def certificate(request: Request, sha256: str) -> Response:
    console = console_of(request)
    cert, chain, lineage = await asyncio.to_thread(console.find_certificate, sha256)
    picture, verification = await asyncio.to_thread(console.chain_picture, cert, chain)
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
            "pem": flows.pem_text(cert),
            "now": console.now(),
        },
    )


@router.get("/certificates/{sha256}.pem")
async def certificate_pem(request: Request, sha256: str) -> Response:
    console = console_of(request)
    cert, _, _ = await asyncio.to_thread(console.find_certificate, sha256)
    return Response(
        flows.pem_text(cert),
        media_type="application/x-pem-file",
        headers={"content-disposition": f'attachment; filename="{describe(cert).sha256[:16]}.pem"'},
    )


# -- nodes ------------------------------------------------------------------------------------------


@router.get("/nodes", response_class=HTMLResponse)
async def nodes(request: Request) -> Response:
    console = console_of(request)
    specs = await asyncio.to_thread(console.store.nodes)
    memberships = {n.name: await asyncio.to_thread(console.store.node_lineages, n.name) for n in specs}
    return render(
        request,
        "nodes.html",
        {
            "title": "Nodes",
            "here": "nodes",
            "nodes": specs,
            "memberships": memberships,
            "messages": done_messages(request),
        },
    )


@router.get("/nodes/new", response_class=HTMLResponse)
async def node_new(request: Request) -> Response:
    console = console_of(request)
    return render(request, "node_form.html", await flows.node_form_context(console, None))


@router.get("/nodes/{name}/edit", response_class=HTMLResponse)
async def node_edit(request: Request, name: str) -> Response:
    console = console_of(request)
    spec = await asyncio.to_thread(console.store.node, name)
    return render(request, "node_form.html", await flows.node_form_context(console, spec))


@router.post("/nodes")
async def node_save(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    values = flows.node_form_values(form)
    try:
        spec = await asyncio.to_thread(flows.save_node, console, actor_of(request), values)
    except CertfleetError as exc:
        ctx = await flows.node_form_context(console, None, values=values)
        ctx["messages"] = refusal(exc)
        return render(request, "node_form.html", ctx, status_code=400)
    return redirect("/nodes", "node-saved", spec.name)


@router.post("/nodes/{name}/remove")
async def node_remove(request: Request, name: str) -> Response:
    console = console_of(request)
    await asyncio.to_thread(console.as_actor(actor_of(request)).remove_node, name)
    return redirect("/nodes", "node-removed", name)


# -- history and audit --------------------------------------------------------------------------------


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request) -> Response:
    console = console_of(request)
    records = await asyncio.to_thread(console.store.lineages)
    versions = {r.name: await asyncio.to_thread(console.store.versions, r.name) for r in records}
    deployments = await asyncio.to_thread(console.history, None, 100)
    return render(
        request,
        "history.html",
        {"title": "History", "here": "history", "versions": versions, "deployments": deployments},
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit(request: Request) -> Response:
    console = console_of(request)
    entries = await asyncio.to_thread(lambda: console.store.audit_log(limit=500))
    return render(request, "audit.html", {"title": "Audit", "here": "audit", "entries": entries})


# -- API tokens ---------------------------------------------------------------------------------------


@router.get("/tokens", response_class=HTMLResponse)
async def tokens(request: Request) -> Response:
    console = console_of(request)
    items = await asyncio.to_thread(console.accounts.api_tokens)
    return render(
        request,
        "tokens.html",
        {"title": "API tokens", "here": "tokens", "tokens": items, "messages": done_messages(request)},
    )


@router.post("/tokens", response_class=HTMLResponse)
async def token_create(request: Request) -> Response:
    console = console_of(request)
    actor = actor_of(request)
    form = await read_form(request)
    token, info = await asyncio.to_thread(console.create_token, actor, form_text(form, "name", 200))
    items = await asyncio.to_thread(console.accounts.api_tokens)
    # shown in this response only; never stored in clear, never in a redirect URL
    return render(
        request,
        "tokens.html",
        {"title": "API tokens", "here": "tokens", "tokens": items, "new_token": token, "new_token_name": info.name},
    )


@router.post("/tokens/{token_id}/revoke")
async def token_revoke(request: Request, token_id: int) -> Response:
    console = console_of(request)
    name = await asyncio.to_thread(console.revoke_token, actor_of(request), token_id)
    return redirect("/tokens", "token-revoked", name)


# -- client deployment --------------------------------------------------------------------------------


async def _clients_context(request: Request) -> dict[str, Any]:
    console = console_of(request)
    profiles, users, warnings = await asyncio.gather(
        asyncio.to_thread(console.clients.profiles),
        asyncio.to_thread(console.clients.users),
        console.client_warnings(),
    )
    return {
        "title": "Clients",
        "here": "clients",
        "profiles": profiles,
        "users": users,
        "warnings": warnings,
        "content_types": CONTENT_TYPES,
        "placeholders": PLACEHOLDERS,
        "default_template": DEFAULT_TEMPLATE,
        "default_host": request.headers.get("host", "")[:300],
        "messages": done_messages(request),
    }


@router.get("/clients", response_class=HTMLResponse)
async def clients(request: Request) -> Response:
    return render(request, "clients.html", await _clients_context(request))


@router.post("/clients/profiles")
async def client_profile_save(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    try:
        hours = int(form_text(form, "link_hours", 10) or "72")
    except ValueError:
        hours = 0
    try:
        prof = await asyncio.to_thread(
            lambda: console.save_profile(
                actor_of(request),
                form_text(form, "name", 200),
                hostname=form_text(form, "hostname", 400),
                template=form_text(form, "template", 70_000),
                content_type=form_text(form, "content_type", 200),
                link_hours=hours,
            )
        )
    except CertfleetError as exc:
        ctx = await _clients_context(request)
        ctx["messages"] = refusal(exc)
        return render(request, "clients.html", ctx, status_code=400)
    return redirect("/clients", "profile-saved", prof.name)


@router.post("/clients/users")
async def client_user_add(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    try:
        user = await asyncio.to_thread(
            lambda: console.add_client_user(
                actor_of(request),
                form_text(form, "profile", 200),
                form_text(form, "username", 200),
                display_name=form_text(form, "display_name", 400),
                email=form_text(form, "email", 400),
            )
        )
    except CertfleetError as exc:
        ctx = await _clients_context(request)
        ctx["messages"] = refusal(exc)
        return render(request, "clients.html", ctx, status_code=400)
    return redirect("/clients", "user-added", user.username)


@router.post("/clients/users/{user_id}/remove")
async def client_user_remove(request: Request, user_id: int) -> Response:
    console = console_of(request)
    name = await asyncio.to_thread(console.remove_client_user, actor_of(request), user_id)
    return redirect("/clients", "user-removed", name)


@router.post("/clients/users/{user_id}/link", response_class=HTMLResponse)
async def client_link(request: Request, user_id: int) -> Response:
    console = console_of(request)
    actor = actor_of(request)
    link = await asyncio.to_thread(console.new_client_link, actor, user_id)
    ctx = await _clients_context(request)
    from markupsafe import Markup

    ctx.update({"link": link, "qr": Markup(qr_svg(link.url))})  # noqa: S704 (segno's own SVG markup)
    return render(request, "clients.html", ctx)


# -- generate CSR ---------------------------------------------------------------------------------------


@router.get("/csr", response_class=HTMLResponse)
async def csr_form(request: Request) -> Response:
    console = console_of(request)
    lineage = request.query_params.get("lineage") or None
    if lineage is None:
        records = await asyncio.to_thread(console.store.lineages)
        lineage = records[0].name if len(records) == 1 else None
    return render(request, "csr.html", await flows.csr_form_context(console, lineage))


@router.post("/csr", response_class=HTMLResponse)
async def csr_generate(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    values = flows.csr_form_values(form)
    try:
        result = await asyncio.to_thread(flows.generate_csr, console, actor_of(request), values)
    except CertfleetError as exc:
        ctx = await flows.csr_form_context(console, values.lineage or None)
        ctx["messages"] = refusal(exc)
        return render(request, "csr.html", ctx, status_code=400)
    return render(
        request,
        "csr_done.html",
        {"title": "CSR ready", "here": "csr", "result": result, "csr": result.csr_pem.decode("ascii")},
    )


@router.get("/csr/{lineage}/{number}.csr")
async def csr_download(request: Request, lineage: str, number: int) -> Response:
    return Response(
        await asyncio.to_thread(flows.csr_pem, console_of(request), lineage, number),
        media_type="application/pkcs10",
        headers={"content-disposition": f'attachment; filename="{lineage}-{number}.csr"'},
    )


# -- import ---------------------------------------------------------------------------------------------


async def _import_context(request: Request, lineage: str | None) -> dict[str, Any]:
    console = console_of(request)
    records = await asyncio.to_thread(console.store.lineages)
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
async def import_form(request: Request) -> Response:
    return render(request, "import.html", await _import_context(request, request.query_params.get("lineage")))


@router.post("/import", response_class=HTMLResponse)
async def import_preview(request: Request) -> Response:
    """Read the upload and show what it holds, without saving anything."""
    console = console_of(request)
    actor = actor_of(request)
    form = await read_form(request)
    lineage = form_text(form, "lineage", 64)
    try:
        inputs = await flows.read_uploads(form, limit=console.settings.upload_limit)
        password = form_text(form, "password", 1024)
        passwords = [password.encode()] if password else []
        result = await asyncio.to_thread(
            flows.import_findings, console, lineage, inputs, passwords, save=False, actor=actor
        )
    except CertfleetError as exc:
        ctx = await _import_context(request, lineage or None)
        ctx["messages"] = refusal(exc)
        return render(request, "import.html", ctx, status_code=413 if "too large" in str(exc) else 400)
    preview = (
        flows.keep_preview(console, actor, lineage=lineage, inputs=inputs, passwords=passwords, result=result)
        if result.accepted
        else None
    )
    picture, _ = await asyncio.to_thread(console.chain_picture, result.chain.leaf, list(result.chain.chain[1:]))
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
async def import_confirm(request: Request, preview_id: str) -> Response:
    console = console_of(request)
    actor = actor_of(request)
    preview = flows.take_preview(console, actor, preview_id)
    result = await asyncio.to_thread(
        flows.import_findings, console, preview.lineage, preview.inputs, preview.passwords, save=True, actor=actor
    )
    if not result.accepted:  # the store changed since the preview
        raise InputError("the import was refused: " + "; ".join(p.message for p in result.problems))
    return redirect("/", "imported", preview.lineage, anchor=f"lineage-{preview.lineage}")


# -- deploy ---------------------------------------------------------------------------------------------


@router.get("/deploy", response_class=HTMLResponse)
async def deploy_form(request: Request) -> Response:
    console = console_of(request)
    records = [r for r in await asyncio.to_thread(console.store.lineages) if r.active is not None]
    lineage = request.query_params.get("lineage") or (records[0].name if records else "")
    members = await asyncio.to_thread(console.store.nodes, lineage) if lineage in {r.name for r in records} else []
    jobs = sorted(console.jobs.values(), key=lambda j: j.started_at, reverse=True)[:10]
    return render(
        request,
        "deploy.html",
        {
            "title": "Deploy",
            "here": "deploy",
            "lineages": records,
            "lineage": lineage,
            "nodes": members,
            "jobs": jobs,
        },
    )


@router.post("/deploy")
async def deploy_start(request: Request) -> Response:
    from certfleet.console.jobs import start_deploy

    console = console_of(request)
    actor = actor_of(request)
    form = await read_form(request)
    lineage = form_text(form, "lineage", 64)
    chosen = [v for v in form.getlist("nodes") if isinstance(v, str)][:200]
    if not chosen:
        raise InputError("choose at least one node to deploy to")
    job = await asyncio.to_thread(
        start_deploy,
        console.as_actor(actor),
        lineage,
        chosen,
        job_id=console.new_id(),
        account_id=actor.account_id,
        clock=console.now,
    )
    console.add_job(job)
    return RedirectResponse(f"/deploy/jobs/{job.id}", status_code=303)


@router.get("/deploy/jobs/{job_id}", response_class=HTMLResponse)
async def deploy_job(request: Request, job_id: str) -> Response:
    console = console_of(request)
    job = console.jobs.get(job_id)
    if job is None:
        raise InputError("no such deploy", hint="deploys are listed on the deploy page while the console runs")
    return render(request, "deploy_job.html", {"title": f"Deploy {job.lineage}", "here": "deploy", "job": job})
