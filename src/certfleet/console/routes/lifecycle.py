"""The certificate's life in pages: generate the CSR, import the CA's answer, deploy it (or only
plan the deploy), roll back to an earlier version, export a version for a server certfleet does
not reach, and the trust anchors imports trust. Each form that makes something answers with a
redirect to the page that shows it (post/redirect/get), so reloading a page never makes a second
key, a second import or a second deploy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from certfleet.certinfo import describe
from certfleet.console.core import Console
from certfleet.console.deps import AdminDep, ConsoleDep, FormDep, OperatorDep, ViewerDep, checked_csrf, form_text
from certfleet.console.routes import forms
from certfleet.console.routes.answers import confirm_page, confirmed, done_messages, page_status, redirect, refusal
from certfleet.console.routes.api import Id
from certfleet.console.services.audit import Actor
from certfleet.console.services.exports import FORMATS
from certfleet.console.services.imports import ImportPreview
from certfleet.console.services.jobs import JobKind
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, InputError
from certfleet.names import DEFAULT_NAME_LIMIT

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])


def _attachment(name: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{name}"'}


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


@router.post("/csr")
def csr_generate(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    values = forms.csr_values(form)
    try:
        result = console.fleet.request_csr(actor, values)
    except CertfleetError as exc:
        lineage = values.lineage if values.lineage and actor.allows(values.lineage) else None
        ctx = forms.csr_form_context(console, actor, lineage, values=values if lineage else None)
        ctx["messages"] = refusal(exc)
        return render(request, "csr.html", ctx, status_code=page_status(exc))
    # the key is made: reloading the page this leads to shows the same CSR, never a new key
    return RedirectResponse(f"/csr/{result.lineage}/{result.version.number}", status_code=303)


# before the page: "{number}" would take "1.csr" and refuse it
@router.get("/csr/{lineage}/{number}.csr")
def csr_download(lineage: str, number: Id, console: ConsoleDep, actor: ViewerDep) -> Response:
    console.fleet.check_lineage(actor, lineage)
    return Response(
        console.fleet.csr_pem(lineage, number),
        media_type="application/pkcs10",
        headers=_attachment(f"{lineage}-{number}.csr"),
    )


@router.get("/csr/{lineage}/{number}", response_class=HTMLResponse)
def csr_ready(request: Request, lineage: str, number: Id, console: ConsoleDep, actor: ViewerDep) -> Response:
    console.fleet.check_lineage(actor, lineage)
    version, info = console.fleet.csr_info(lineage, number)
    return render(
        request,
        "csr_done.html",
        {
            "title": "CSR ready",
            "here": "csr",
            "lineage": lineage,
            "version": version,
            "info": info,
            "limit": DEFAULT_NAME_LIMIT,
            "nodes": console.fleet.lineage(lineage).nodes,
            "csr": console.fleet.csr_pem(lineage, number).decode("ascii"),
        },
    )


# -- import ---------------------------------------------------------------------------------------------


def _import_context(console: Console, actor: Actor, lineage: str | None) -> dict[str, Any]:
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


def _findings(request: Request, console: Console, preview: ImportPreview | None, **shown: Any) -> HTMLResponse:
    result = shown["result"]
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
            "files": shown["files"],
        },
    )


@router.post("/import")
def import_preview(request: Request, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    """Read the upload and show what it holds, without saving anything."""
    lineage = form_text(form, "lineage", 64)
    try:
        console.fleet.check_lineage(actor, lineage)
        inputs = forms.read_uploads(form.getlist("files"), limit=console.settings.upload_limit)
        password = form_text(form, "password", 1024)
        force = form_text(form, "force", 8) == "yes"
        result, preview = console.imports.preview(
            actor, lineage, inputs, [password.encode()] if password else [], force=force
        )
    except CertfleetError as exc:
        ctx = _import_context(console, actor, lineage or None)
        ctx["messages"] = refusal(exc)
        return render(request, "import.html", ctx, status_code=page_status(exc))
    if preview is not None:  # waits for its confirmation: its own page, which a reload shows again
        return RedirectResponse(f"/import/{preview.id}", status_code=303)
    return _findings(request, console, None, result=result, files=[name for name, _ in inputs])


@router.get("/import/{preview_id}", response_class=HTMLResponse)
def import_findings(request: Request, preview_id: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    preview = console.imports.get(actor, preview_id)
    return _findings(request, console, preview, result=preview.result, files=[name for name, _ in preview.inputs])


@router.post("/import/{preview_id}/confirm")
def import_confirm(preview_id: str, console: ConsoleDep, actor: OperatorDep) -> Response:
    preview = console.imports.confirm(actor, preview_id)
    return redirect("/", "imported", preview.lineage, anchor=f"lineage-{preview.lineage}")


# -- deploy, dry run, rollback ------------------------------------------------------------------------


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


def _chosen_nodes(form: FormData) -> list[str]:
    chosen = [v for v in form.getlist("nodes") if isinstance(v, str)][:200]
    if not chosen:
        raise InputError("choose at least one node")
    return chosen


@router.post("/deploy")
def deploy_start(console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    """Deploy the active version, or with the dry-run button only plan it."""
    dry_run = form_text(form, "action", 20) == JobKind.DRY_RUN.value
    lineage = console.fleet.check_lineage(actor, form_text(form, "lineage", 64))
    job = console.jobs.start(actor, lineage, _chosen_nodes(form), dry_run=dry_run)
    return RedirectResponse(f"/deploy/jobs/{job.id}", status_code=303)


@router.get("/deploy/jobs/{job_id}", response_class=HTMLResponse)
def deploy_job(request: Request, job_id: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    job = console.jobs.get(job_id)
    console.fleet.check_lineage(actor, job.lineage)
    title = {
        JobKind.DEPLOY: f"Deploy {job.lineage}",
        JobKind.DRY_RUN: f"Dry run of {job.lineage}",
        JobKind.ROLLBACK: f"Rollback of {job.lineage}",
    }[job.kind]
    return render(request, "deploy_job.html", {"title": title, "here": "deploy", "job": job})


@router.get("/rollback", response_class=HTMLResponse)
def rollback_form(request: Request, console: ConsoleDep, actor: OperatorDep) -> Response:
    lineage = console.fleet.check_lineage(actor, request.query_params.get("lineage", ""))
    record = console.fleet.lineage(lineage)
    issued = console.fleet.issued(lineage)
    earlier = [v for v in issued if not v.active]
    if record.active is None or not earlier:
        raise InputError(
            f"lineage {lineage} has no earlier version to roll back to",
            hint="the History page lists its versions",
        )
    try:
        to = int(request.query_params.get("to", ""))
    except ValueError:
        to = next((v.number for v in earlier if v.number < record.active.number), earlier[0].number)
    return render(
        request,
        "rollback.html",
        {
            "title": f"Roll back {lineage}",
            "here": "deploy",
            "record": record,
            "earlier": earlier,
            "to": to,
            "nodes": console.fleet.nodes(lineage),
        },
    )


@router.post("/rollback")
def rollback_start(console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    """Deploy an earlier version; to every node, it also becomes the active one."""
    lineage = console.fleet.check_lineage(actor, form_text(form, "lineage", 64))
    try:
        to = int(form_text(form, "to", 10))
    except ValueError as exc:
        raise InputError("choose the version to roll back to") from exc
    chosen = _chosen_nodes(form)
    every = {n.name for n in console.fleet.nodes(lineage)}
    job = console.jobs.rollback(actor, lineage, [] if set(chosen) >= every else chosen, to=to)
    return RedirectResponse(f"/deploy/jobs/{job.id}", status_code=303)


# -- export ---------------------------------------------------------------------------------------------


def _export_context(console: Console, lineage: str, version: int | None) -> dict[str, Any]:
    issued = console.fleet.issued(lineage)
    if not issued:
        raise InputError(f"lineage {lineage} has no certificate to export yet", hint="import the CA's answer first")
    chosen = version if version is not None else next((v.number for v in issued if v.active), issued[0].number)
    return {
        "title": f"Export {lineage}",
        "here": "history",
        "lineage": lineage,
        "issued": issued,
        "version": chosen,
        "formats": FORMATS,
    }


@router.get("/export", response_class=HTMLResponse)
def export_form(request: Request, console: ConsoleDep, actor: AdminDep) -> Response:
    lineage = console.fleet.check_lineage(actor, request.query_params.get("lineage", ""))
    version = request.query_params.get("version", "")
    return render(
        request, "export.html", _export_context(console, lineage, int(version) if version.isdigit() else None)
    )


@router.post("/export")
def export_download(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    """The version's key and chain as a file to save: nothing is made in the console, so the
    answer is the download itself. The key leaves the store: an admin's."""
    lineage = console.fleet.check_lineage(actor, form_text(form, "lineage", 64))
    number = form_text(form, "version", 10)
    version = int(number) if number.isdigit() else None
    password = form_text(form, "password", 1024)
    try:
        if password != form_text(form, "password2", 1024):
            raise InputError("the two passwords differ", hint="type the same password twice")
        download = console.exports.download(
            actor,
            lineage,
            version=version,
            fmt=form_text(form, "format", 20),
            password=password,
            legacy=form_text(form, "legacy", 10) == "on",
        )
    except CertfleetError as exc:
        ctx = _export_context(console, lineage, version)
        ctx["messages"] = refusal(exc)
        return render(request, "export.html", ctx, status_code=page_status(exc))
    return Response(download.data, media_type=download.media_type, headers=_attachment(download.filename))


# -- trust anchors --------------------------------------------------------------------------------------


@router.get("/trust", response_class=HTMLResponse)
def trust(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "trust.html", _trust_context(request, console))


def _trust_context(request: Request, console: Console) -> dict[str, Any]:
    return {
        "title": "Trust anchors",
        "here": "trust",
        "anchors": [(a, describe(a.cert)) for a in console.trust.anchors()],
        "messages": done_messages(request),
    }


@router.post("/trust")
def trust_add(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    try:
        inputs = forms.read_uploads(
            form.getlist("files"), limit=console.settings.upload_limit, what="the CA's root certificate"
        )
        added = console.trust.add(actor, inputs)
    except CertfleetError as exc:
        ctx = _trust_context(request, console)
        ctx["messages"] = refusal(exc)
        return render(request, "trust.html", ctx, status_code=page_status(exc))
    subjects = ", ".join(describe(a.cert).common_name or a.subject for a, _ in added)
    return redirect("/trust", "anchor-added" if any(new for _, new in added) else "anchor-known", subjects)


@router.get("/trust/{sha256}/remove", response_class=HTMLResponse)
def trust_remove_confirm(request: Request, sha256: str, console: ConsoleDep, actor: AdminDep) -> Response:
    anchor = console.trust.anchor(sha256)
    return confirm_page(
        request,
        title="Remove a trust anchor",
        question=f"Stop trusting {anchor.subject}?",
        details=[
            f"SHA-256 {anchor.fingerprint}",
            "Imports and checks no longer accept chains that end at this root; what is deployed stays as it is.",
        ],
        action=f"/trust/{anchor.fingerprint}/remove",
        button="Stop trusting it",
        back="/trust",
    )


@router.post("/trust/{sha256}/remove")
def trust_remove(sha256: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/trust/{sha256}/remove", status_code=303)
    anchor = console.trust.remove(actor, sha256)
    return redirect("/trust", "anchor-removed", describe(anchor.cert).common_name or anchor.subject)
