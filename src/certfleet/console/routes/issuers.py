"""Issuing in pages: the issuers (an ACME account added with its External Account Binding and the
CA's terms, its key rolled over, deactivated, removed), each lineage's issuers, solvers, profile and
preferred chain, "issue now" and its preflight followed name by name, and revocation.

As everywhere in the console, a form that changes something answers with a redirect to the page
that shows it (post/redirect/get); rolling a key over, deactivating, removing and revoking ask
first, on a page of their own. The EAB HMAC key is never shown again, not even on a refused form.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from certfleet.acme.model import RevocationReason
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
from certfleet.console.routes.answers import confirm_page, confirmed, page_status, redirect, refusal
from certfleet.console.routes.api import ERRORS, Id
from certfleet.console.routes.forms import read_uploads
from certfleet.console.services.audit import Actor
from certfleet.console.services.issue_jobs import IssueJobKind
from certfleet.console.services.issuers import (
    IssuerValues,
    PolicyValues,
    describe_issuer,
    solver_choices,
)
from certfleet.console.templating import render
from certfleet.errors import CertfleetError, InputError

__all__ = ["api_router", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])
api_router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)], responses=ERRORS)

# messages shown after a change, by code: never text taken from the request
DONE = {
    "issuer-added": "Issuer {} added: the CA opened the account.",
    "manual-added": "Issuer {} added: CSR out, package in.",
    "rolled-over": "Issuer {}: the CA now knows the new account key.",
    "deactivated": "Issuer {}: the account is deactivated at the CA.",
    "removed": "Issuer {} removed.",
    "policy-saved": "How {} is issued is saved.",
    "revoked": "Version {} revoked: it is never activated or deployed again.",
}
MAX_ISSUER_ROWS = 8
# a CA's terms are a link only with these schemes (Pebble's are a data: text); anything else is text
LINKABLE = ("https://", "http://", "data:text/plain,")
MAX_NAME_ROWS = 100


def _done(request: Request) -> list[tuple[str, str]]:
    code = request.query_params.get("done", "")
    if code in DONE:
        return [("good", DONE[code].format(request.query_params.get("name", "")[:80]))]
    return []


def _lines(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace(",", "\n").splitlines() if part.strip())[:20]


# -- issuers --------------------------------------------------------------------------------------------


def _issuer_values(form: FormData, *, limit: int) -> IssuerValues:
    bundle = tuple(read_uploads(form.getlist("ca_bundle"), limit=limit, what="")) if _has_file(form) else ()
    return IssuerValues(
        name=form_text(form, "name", 64).strip(),
        directory=form_text(form, "directory", 1024).strip(),
        eab_kid=form_text(form, "eab_kid", 1024),
        eab_hmac=form_text(form, "eab_hmac", 1024),
        contact=_lines(form_text(form, "contact", 4000)),
        agree_tos=form_text(form, "agree_tos", 8) == "on",
        profile=form_text(form, "profile", 64).strip(),
        ca_bundle=bundle,
        caa_identities=_lines(form_text(form, "caa_identity", 2000)),
        manual=form_text(form, "kind", 10) == "manual",
    )


def _has_file(form: FormData) -> bool:
    return any(getattr(item, "filename", "") for item in form.getlist("ca_bundle"))


def _issuers_context(
    request: Request, console: Console, actor: Actor, values: IssuerValues | None = None, info: Any = None
) -> dict[str, Any]:
    return {
        "title": "Issuers",
        "here": "issuers",
        "issuers": console.issuers.issuers(actor),
        "lineages": console.fleet.visible_lineages(actor),
        "v": values or IssuerValues(),
        "info": info,
        "linkable": LINKABLE,
        "messages": _done(request),
    }


@router.get("/issuers", response_class=HTMLResponse)
def issuers(request: Request, console: ConsoleDep, actor: ViewerDep) -> Response:
    return render(request, "issuers.html", _issuers_context(request, console, actor))


@router.post("/issuers")
def issuer_add(request: Request, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    """Add an issuer; the "Read the directory" button only shows what the CA's directory says
    (its terms, whether it wants EAB, its profiles), nothing stored."""
    values: IssuerValues | None = None
    try:
        values = _issuer_values(form, limit=console.settings.upload_limit)
        if form_text(form, "action", 20) == "lookup":
            info = console.issuers.directory(values.directory, values.ca_bundle)
            return render(request, "issuers.html", _issuers_context(request, console, actor, values.shown(), info))
        issuer = console.issuers.add(actor, values)
    except CertfleetError as exc:
        ctx = _issuers_context(request, console, actor, values.shown() if values else None)
        ctx["messages"] = refusal(exc)
        return render(request, "issuers.html", ctx, status_code=page_status(exc))
    return redirect(f"/issuers/{issuer.name}", "issuer-added" if issuer.is_acme else "manual-added", issuer.name)


@router.get("/issuers/{name}", response_class=HTMLResponse)
def issuer(request: Request, name: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    record, lineages = console.issuers.issuer(actor, name)
    return render(
        request,
        "issuer.html",
        {
            "title": f"Issuer {record.name}",
            "here": "issuers",
            "issuer": record,
            "rows": describe_issuer(record),
            "lineages": lineages,
            "linkable": LINKABLE,
            "messages": _done(request),
        },
    )


_ISSUER_ACTIONS = {
    "rollover": (
        "Roll over the account key",
        "Change the account key of {} at the CA?",
        [
            "A new key is made and sealed in the store beside the current one, then the CA is told.",
            "If the CA's answer never comes, both keys are kept: rolling over again asks the CA which one it holds.",
        ],
        "Roll the key over",
    ),
    "deactivate": (
        "Deactivate the account",
        "Deactivate the account of {} at the CA, for good?",
        [
            "The CA will refuse every request signed by this account from now on; this cannot be undone.",
            "Certificates it issued stay valid. The issuer stays listed, marked deactivated.",
        ],
        "Deactivate it",
    ),
    "remove": (
        "Remove the issuer",
        "Forget issuer {} and its account key?",
        [
            "The account stays at the CA: deactivate it first if it is to end.",
            "Refused while a lineage lists the issuer.",
        ],
        "Remove it",
    ),
}


def _issuer_confirm(request: Request, console: Console, actor: Actor, name: str, what: str) -> Response:
    record, _ = console.issuers.issuer(actor, name)
    title, question, details, button = _ISSUER_ACTIONS[what]
    return confirm_page(
        request,
        title=title,
        question=question.format(record.name),
        details=list(details),
        action=f"/issuers/{record.name}/{what}",
        button=button,
        back=f"/issuers/{record.name}",
    )


@router.get("/issuers/{name}/rollover", response_class=HTMLResponse)
def issuer_rollover_confirm(request: Request, name: str, console: ConsoleDep, actor: AdminDep) -> Response:
    return _issuer_confirm(request, console, actor, name, "rollover")


@router.post("/issuers/{name}/rollover")
def issuer_rollover(name: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/issuers/{name}/rollover", status_code=303)
    record = console.issuers.rollover(actor, name)
    return redirect(f"/issuers/{record.name}", "rolled-over", record.name)


@router.get("/issuers/{name}/deactivate", response_class=HTMLResponse)
def issuer_deactivate_confirm(request: Request, name: str, console: ConsoleDep, actor: AdminDep) -> Response:
    return _issuer_confirm(request, console, actor, name, "deactivate")


@router.post("/issuers/{name}/deactivate")
def issuer_deactivate(name: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/issuers/{name}/deactivate", status_code=303)
    record = console.issuers.deactivate(actor, name)
    return redirect(f"/issuers/{record.name}", "deactivated", record.name)


@router.get("/issuers/{name}/remove", response_class=HTMLResponse)
def issuer_remove_confirm(request: Request, name: str, console: ConsoleDep, actor: AdminDep) -> Response:
    return _issuer_confirm(request, console, actor, name, "remove")


@router.post("/issuers/{name}/remove")
def issuer_remove(name: str, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    if not confirmed(form):
        return RedirectResponse(f"/issuers/{name}/remove", status_code=303)
    record = console.issuers.remove(actor, name)
    return redirect("/issuers", "removed", record.name)


# -- a lineage's issuers, solvers, profile, chain --------------------------------------------------------


def _acme_context(request: Request, console: Console, actor: Actor, lineage: str) -> dict[str, Any]:
    acme = console.issuers.lineage(actor, lineage)
    known = [i.name for i, _ in console.issuers.issuers(actor)]
    chosen = list(acme.policy.issuers)
    rows = min(MAX_ISSUER_ROWS, max(len(known), len(chosen) + 1, 1))
    return {
        "title": f"Issuing {lineage}",
        "here": "issuers",
        "lineage": lineage,
        "acme": acme,
        "known_issuers": known,
        "issuer_rows": [chosen[i] if i < len(chosen) else "" for i in range(rows)],
        "choices": solver_choices(acme.nodes),
        "other_rules": "\n".join(str(r) for r in acme.other_rules),
        "reasons": [r.value for r in RevocationReason],
        "jobs": console.issue_jobs.recent(lineage),
        "messages": _done(request),
    }


@router.get("/lineages/{lineage}/acme", response_class=HTMLResponse)
def lineage_acme(request: Request, lineage: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    console.fleet.check_lineage(actor, lineage)
    return render(request, "lineage_acme.html", _acme_context(request, console, actor, lineage))


def _policy_values(form: FormData) -> PolicyValues:
    issuers = tuple(v.strip() for v in form.getlist("issuer") if isinstance(v, str) and v.strip())
    names = [v for v in form.getlist("solver_name") if isinstance(v, str)][:MAX_NAME_ROWS]
    choices = [v for v in form.getlist("solver_choice") if isinstance(v, str)][:MAX_NAME_ROWS]
    specs = [v for v in form.getlist("solver_spec") if isinstance(v, str)][:MAX_NAME_ROWS]
    if not len(names) == len(choices) == len(specs):
        raise InputError("the solver rows of the form are incomplete", hint="reload the page and try again")
    if any(len(v) > 1024 for v in (*names, *choices, *specs)):
        raise InputError("a solver's setting is longer than 1024 characters")
    return PolicyValues(
        issuers=issuers[:MAX_ISSUER_ROWS],
        per_name=tuple(zip(names, choices, specs, strict=True)),
        other_rules=form_text(form, "other_rules", 20_000),
        profile=form_text(form, "profile", 64),
        preferred_chain=form_text(form, "preferred_chain", 256),
        reuse_key=form_text(form, "reuse_key", 8) == "on",
    )


@router.post("/lineages/{lineage}/acme")
def lineage_acme_save(
    request: Request, lineage: str, console: ConsoleDep, actor: OperatorDep, form: FormDep
) -> Response:
    """Save the lineage's issuers in order, a solver per name, profile and preferred chain; a hook
    command is an admin's to set."""
    console.fleet.check_lineage(actor, lineage)
    try:
        console.issuers.set_policy(actor, lineage, _policy_values(form))
    except CertfleetError as exc:
        ctx = _acme_context(request, console, actor, lineage)
        ctx["messages"] = refusal(exc)
        return render(request, "lineage_acme.html", ctx, status_code=page_status(exc))
    return redirect(f"/lineages/{lineage}/acme", "policy-saved", lineage)


@router.post("/lineages/{lineage}/issue")
def lineage_issue(request: Request, lineage: str, console: ConsoleDep, actor: OperatorDep, form: FormDep) -> Response:
    """Issue now (or, with the preflight button, only check): its progress on a page of its own."""
    console.fleet.check_lineage(actor, lineage)
    preflight = form_text(form, "action", 20) == IssueJobKind.PREFLIGHT.value
    try:
        job = console.issue_jobs.start(actor, lineage, preflight_only=preflight)
    except CertfleetError as exc:
        ctx = _acme_context(request, console, actor, lineage)
        ctx["messages"] = refusal(exc)
        return render(request, "lineage_acme.html", ctx, status_code=page_status(exc))
    return RedirectResponse(f"/issue/jobs/{job.id}", status_code=303)


@router.get("/issue/jobs/{job_id}", response_class=HTMLResponse)
def issue_job(request: Request, job_id: str, console: ConsoleDep, actor: ViewerDep) -> Response:
    job = console.issue_jobs.get(job_id)
    console.fleet.check_lineage(actor, job.lineage)
    title = f"Preflight of {job.lineage}" if job.kind is IssueJobKind.PREFLIGHT else f"Issuing {job.lineage}"
    return render(request, "issue_job.html", {"title": title, "here": "issuers", "job": job, "d": job.to_dict()})


# -- revocation -----------------------------------------------------------------------------------------


@router.get("/lineages/{lineage}/versions/{number}/revoke", response_class=HTMLResponse)
def revoke_confirm(request: Request, lineage: str, number: Id, console: ConsoleDep, actor: AdminDep) -> Response:
    console.fleet.check_lineage(actor, lineage)
    version = console.issuers.version(lineage, number)
    if not version.revocable:
        raise InputError(
            f"version {number} of {lineage} "
            + ("is revoked already" if version.revoked else "has no certificate to revoke")
        )
    return render(
        request,
        "revoke.html",
        {
            "title": f"Revoke version {number} of {lineage}",
            "here": "issuers",
            "lineage": lineage,
            "version": version,
            "reasons": [r.value for r in RevocationReason],
        },
    )


@router.post("/lineages/{lineage}/versions/{number}/revoke")
def revoke_version(lineage: str, number: Id, console: ConsoleDep, actor: AdminDep, form: FormDep) -> Response:
    """Revoke at the CA that issued it, and mark it for good; only the confirmation page's answer does."""
    console.fleet.check_lineage(actor, lineage)
    if not confirmed(form):
        return RedirectResponse(f"/lineages/{lineage}/versions/{number}/revoke", status_code=303)
    console.issuers.revoke(actor, lineage, number, form_text(form, "reason", 40))
    return redirect(f"/lineages/{lineage}/acme", "revoked", f"{number} of {lineage}")


# -- JSON: what the pages poll, and the issuers ----------------------------------------------------------


@api_router.get("/issue/jobs/{job_id}", summary="An issue's progress, name by name")
def issue_job_json(console: ConsoleDep, actor: ViewerDep, job_id: str) -> dict[str, Any]:
    job = console.issue_jobs.get(job_id)
    console.fleet.check_lineage(actor, job.lineage)
    return job.to_dict()


@api_router.get("/issuers", summary="The issuers, and the lineages that list each")
def issuers_json(console: ConsoleDep, actor: ViewerDep) -> list[dict[str, Any]]:
    return [{**i.to_dict(), "lineages": lins} for i, lins in console.issuers.issuers(actor)]


@api_router.get("/lineages/{name}/acme", summary="How a lineage is issued, and who issued each version")
def lineage_acme_json(console: ConsoleDep, actor: ViewerDep, name: str) -> dict[str, Any]:
    lineage = console.fleet.check_lineage(actor, name)
    acme = console.issuers.lineage(actor, lineage)
    return {
        **acme.policy.to_dict(),
        "names": [{"name": n.name, "solver": str(n.rule) if n.rule else None, "where": n.where} for n in acme.names],
        "versions": [
            {"number": v.number, "state": v.state, "active": v.active, "issuer": v.issuer, "revoked": v.revoked}
            for v in acme.versions
        ],
    }


class IssuerIn(BaseModel):
    name: str = Field(max_length=64, examples=["le"])
    directory: str = Field("", max_length=1024, examples=["https://acme-v02.api.letsencrypt.org/directory"])
    manual: bool = Field(False, description="a CA without ACME: CSR out, package in")
    eab_kid: str = Field("", max_length=512, description="External Account Binding key id")
    eab_hmac: str = Field(
        "", max_length=512, repr=False, description="EAB HMAC key (base64url): used once, never stored"
    )
    contact: list[str] = Field(default_factory=list, max_length=20, examples=[["mailto:pki@example.com"]])
    agree_tos: bool = Field(False, description="agree to the CA's terms of service")
    profile: str = Field("", max_length=64)
    ca_bundle: str = Field("", max_length=65536, description="PEM roots of a private ACME server's own HTTPS")
    caa_identities: list[str] = Field(default_factory=list, max_length=20)

    def values(self) -> IssuerValues:
        bundle = (("ca_bundle", self.ca_bundle.encode("utf-8")),) if self.ca_bundle.strip() else ()
        return IssuerValues(
            self.name, self.directory, self.eab_kid, self.eab_hmac, tuple(self.contact), self.agree_tos,
            self.profile, bundle, tuple(self.caa_identities), self.manual,
        )  # fmt: skip


class PolicyIn(BaseModel):
    issuers: list[str] = Field(default_factory=list, max_length=MAX_ISSUER_ROWS, description="in the order to try")
    solvers: list[str] = Field(
        default_factory=list,
        max_length=MAX_NAME_ROWS,
        description="PATTERN=http-01[:NODE] or PATTERN=dns-01:METHOD:SETTING (dns-01:hook: admin only)",
        examples=[["*.example.com=dns-01:rfc2136:/etc/certfleet/tsig.ini"]],
    )
    profile: str = Field("", max_length=64)
    preferred_chain: str = Field("", max_length=256)
    reuse_key: bool = False


class IssueIn(BaseModel):
    dry_run: bool = Field(False, description="only the preflight: nothing ordered, nothing stored")


class RevokeIn(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1)
    reason: str = Field(max_length=40, examples=["keyCompromise"])


class Confirm(BaseModel):
    confirm: bool = Field(description="true: deactivating an account cannot be undone")


@api_router.post("/issuers", status_code=201, summary="Open an ACME account at a CA (or add the manual CA); admin")
def issuer_add_json(body: IssuerIn, console: ConsoleDep, actor: AdminDep) -> dict[str, Any]:
    return console.issuers.add(actor, body.values()).to_dict()


@api_router.post("/issuers/{name}/rollover", summary="Change the account key at the CA; admin")
def issuer_rollover_json(name: str, console: ConsoleDep, actor: AdminDep) -> dict[str, Any]:
    return console.issuers.rollover(actor, name).to_dict()


@api_router.post("/issuers/{name}/deactivate", summary="Deactivate the account at the CA, for good; admin")
def issuer_deactivate_json(name: str, body: Confirm, console: ConsoleDep, actor: AdminDep) -> dict[str, Any]:
    if not body.confirm:
        raise InputError("deactivating an account cannot be undone", hint="send confirm: true")
    return console.issuers.deactivate(actor, name).to_dict()


@api_router.delete("/issuers/{name}", summary="Forget an issuer and its account key; admin")
def issuer_remove_json(name: str, console: ConsoleDep, actor: AdminDep) -> dict[str, Any]:
    return {"removed": console.issuers.remove(actor, name).to_dict()}


@api_router.put("/lineages/{name}/acme", summary="Set how a lineage is issued (the lists are replaced)")
def lineage_acme_set_json(name: str, body: PolicyIn, console: ConsoleDep, actor: OperatorDep) -> dict[str, Any]:
    lineage = console.fleet.check_lineage(actor, name)
    values = PolicyValues(
        issuers=tuple(body.issuers),
        other_rules="\n".join(body.solvers),
        profile=body.profile,
        preferred_chain=body.preferred_chain,
        reuse_key=body.reuse_key,
    )
    return console.issuers.set_policy(actor, lineage, values).to_dict()


@api_router.post("/lineages/{name}/issue", status_code=202, summary="Issue now, or only the preflight: a job")
def lineage_issue_json(name: str, body: IssueIn, console: ConsoleDep, actor: OperatorDep) -> dict[str, Any]:
    lineage = console.fleet.check_lineage(actor, name)
    return console.issue_jobs.start(actor, lineage, preflight_only=body.dry_run).to_dict()


@api_router.post("/lineages/{name}/revoke", summary="Revoke a version at its CA, for good; admin")
def lineage_revoke_json(name: str, body: RevokeIn, console: ConsoleDep, actor: AdminDep) -> dict[str, Any]:
    lineage = console.fleet.check_lineage(actor, name)
    return console.issuers.revoke(actor, lineage, body.version, body.reason).to_dict()
