"""``/api/v1``: everything the pages do, as JSON. Results are the library's own ``to_dict()``.

Each route says the role it needs (see docs/console.md for the whole matrix); every error is
``{"error", "hint", "code"}`` with one of the statuses the OpenAPI description lists.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from certfleet.certinfo import describe
from certfleet.console.deps import (
    API_PREFIX,
    AdminDep,
    ConsoleDep,
    OperatorDep,
    ViewerDep,
    allow,
    checked_csrf,
    client_address,
)
from certfleet.console.roles import Role
from certfleet.console.routes.forms import read_uploads
from certfleet.console.services.certificates import pem_text
from certfleet.console.services.clients import qr_svg
from certfleet.console.services.exports import FORMATS
from certfleet.console.services.fleet import CsrValues, NodeValues
from certfleet.console.services.status import lineage_json

__all__ = ["ERRORS", "MAX_ID", "Id", "LineageName", "router"]

JSON = dict[str, Any]
# ids are database integers: anything past what every backend stores is refused up front (422)
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
# one name, one target: never a list hidden in a string (a space or a line break inside is an error)
OneName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s,]+$")]
OneTarget = Annotated[str, Field(min_length=1, max_length=4200, pattern=r"^[^\r\n]+$")]
LineageName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ErrorOut(BaseModel):
    error: str
    hint: str = ""
    code: str = ""


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("the request cannot be done as asked (the message says why)"),
    401: _error("no valid session or API token"),
    403: _error("the role or the lineages of the account or token do not allow it, or a CSRF token is missing"),
    404: _error("what the path names does not exist, or is not visible to this account"),
    409: _error("someone changed it meanwhile: read it again"),
    410: _error("used or expired"),
    413: _error("the request body is too large"),
    422: _error("the request does not match this description"),
    429: _error("too many attempts: wait as Retry-After says"),
    503: _error("the store is busy or unreadable; try again"),
}

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)], responses=ERRORS)


# -- models of what callers send ---------------------------------------------------------------------


class NodeIn(BaseModel):
    name: str = Field(max_length=64, examples=["main"])
    names: list[OneName] = Field(max_length=100, examples=[["collab.example.com"]])
    targets: list[OneTarget] = Field(max_length=20, description="KIND:PATH", examples=[["nginx:/etc/nginx/certfleet"]])
    transport: str = Field("local", max_length=512, description="local, or ssh://user@host[:port]; admin only")
    test_cmd: str | None = Field(None, max_length=4000, description="admin only")
    reload_cmd: str | None = Field(None, max_length=4000, description="admin only")
    probe: str | None = Field(None, max_length=300, examples=["collab.example.com:443"])
    known_hosts: str | None = Field(None, max_length=4000, description="SSH: the known_hosts file on this machine")
    identity: str | None = Field(None, max_length=4000, description="SSH: the private key file to log in with")
    webroot: str | None = Field(None, max_length=4000, description="http-01: the folder its web server publishes")
    lineages: list[LineageName] = Field(default_factory=list, max_length=50)
    version: int | None = Field(
        None, ge=1, le=MAX_ID, description="the node's version as last read: a change made since is a 409"
    )
    password: str | None = Field(
        None,
        max_length=1024,
        description="the account's password, asked again when a session (not a token) changes what the node runs",
    )

    def values(self, original: str) -> NodeValues:
        return NodeValues(
            name=self.name,
            names="\n".join(self.names),
            targets="\n".join(self.targets),
            transport=self.transport,
            test_cmd=self.test_cmd or "",
            reload_cmd=self.reload_cmd or "",
            probe=self.probe or "",
            known_hosts=self.known_hosts or "",
            identity=self.identity or "",
            webroot=self.webroot or "",
            lineages=tuple(self.lineages),
            original=original,
            version=self.version,
        )


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role | None = Field(None, description="at most the caller's own role; the caller's when left out")
    days: int | None = Field(None, ge=1, le=366, description="how long it lives (90 days when left out)")
    lineages: list[LineageName] | None = Field(
        None, max_length=100, description="the lineages it may reach (the caller's when left out)"
    )


class ProfileIn(BaseModel):
    name: str = Field(max_length=64)
    hostname: str = Field(max_length=300, description="host[:port] the clients connect to")
    template: str = Field(max_length=65536, description="settings with ${placeholders}")
    content_type: str = Field("application/json", max_length=100)
    link_hours: int = Field(72, ge=1, le=720)


class ClientUserIn(BaseModel):
    profile: str = Field(max_length=64)
    username: str = Field(max_length=128)
    display_name: str = Field("", max_length=200)
    email: str = Field("", max_length=254)


# -- who, what ------------------------------------------------------------------------------------------


@router.get("/me", summary="The account behind this request")
def me(actor: ViewerDep) -> JSON:
    return actor.to_dict()


@router.get("/lineages", summary="Every lineage with its active version, health and what each node serves")
async def lineages(console: ConsoleDep, actor: ViewerDep, refresh: bool = False) -> list[JSON]:
    report = await console.status.report(refresh=refresh, scope=actor.lineages)
    return [lineage_json(lineage) for lineage in report.lineages]


@router.get("/lineages/{name}", summary="One lineage, with its versions")
async def lineage(console: ConsoleDep, actor: ViewerDep, name: str, refresh: bool = False) -> JSON:
    console.fleet.check_lineage(actor, name)
    console.fleet.lineage(name)  # 404 when unknown
    [found] = (await console.status.report(lineage=name, refresh=refresh)).lineages
    return {**lineage_json(found), "versions": [v.to_dict() for v in console.fleet.versions(name)]}


@router.get("/certificates/{sha256}", summary="A certificate known to the store, and its chain as verified")
def certificate(console: ConsoleDep, actor: ViewerDep, sha256: str) -> JSON:
    cert, chain, lineage_name = console.certificates.find(sha256)
    if lineage_name is not None:
        console.fleet.check_lineage(actor, lineage_name)
    _, verification = console.certificates.chain_picture(cert, chain)
    return {
        "certificate": describe(cert).to_dict(),
        "lineage": lineage_name,
        "pem": pem_text(cert),
        "verification": verification.to_dict(),
    }


# -- nodes ------------------------------------------------------------------------------------------------


def _node_json(console: ConsoleDep, name: str) -> JSON:
    return {
        **console.fleet.node(name).to_dict(),
        "lineages": console.fleet.node_lineages(name),
        "version": console.fleet.node_version(name),
    }


@router.get("/nodes", summary="Every node")
def nodes(console: ConsoleDep, actor: ViewerDep) -> list[JSON]:
    specs = console.fleet.visible_nodes(actor)
    member = console.fleet.memberships(specs)
    return [{**spec.to_dict(), "lineages": member[spec.name]} for spec in specs]


@router.get("/nodes/{name}", summary="One node, with its version (send it back with a change)")
def node(console: ConsoleDep, actor: ViewerDep, name: str) -> JSON:
    console.fleet.visible_node(actor, name)
    return _node_json(console, name)


def _save_node(request: Request, console: ConsoleDep, actor: OperatorDep, body: NodeIn, original: str) -> JSON:
    def confirm() -> None:
        console.accounts.confirm_password(actor, body.password or "", address=client_address(request))

    spec, _ = console.fleet.save_node(actor, body.values(original), confirm=confirm if actor.token_id is None else None)
    return _node_json(console, spec.name)


@router.post(
    "/nodes", status_code=201, summary="Add a node (its commands and a transport other than local: admin only)"
)
def node_add(request: Request, console: ConsoleDep, body: NodeIn, actor: OperatorDep) -> JSON:
    return _save_node(request, console, actor, body, "")


@router.put(
    "/nodes/{name}",
    summary="Change a node (its name stays; its commands and transport: admin only); with version, 409 when stale",
)
def node_put(request: Request, console: ConsoleDep, name: str, body: NodeIn, actor: OperatorDep) -> JSON:
    console.fleet.visible_node(actor, name, change=True)  # 404 when unknown
    return _save_node(request, console, actor, body, name)


@router.delete("/nodes/{name}", summary="Remove a node")
def node_delete(console: ConsoleDep, name: str, actor: OperatorDep) -> JSON:
    console.fleet.remove_node(actor, name)
    return {"removed": name}


# -- history and audit --------------------------------------------------------------------------------------


@router.get("/history", summary="Deployments, newest first")
def history(console: ConsoleDep, actor: ViewerDep, lineage: str | None = None, limit: int = 50) -> list[JSON]:
    return [d.to_dict() for d in console.fleet.visible_deployments(actor, lineage, max(1, min(limit, 1000)))]


@router.get("/lineages/{name}/versions", summary="Versions of a lineage, oldest first")
def versions(console: ConsoleDep, actor: ViewerDep, name: str) -> list[JSON]:
    console.fleet.check_lineage(actor, name)
    return [v.to_dict() for v in console.fleet.versions(name)]


@router.get("/audit", summary="The audit trail, newest first")
def audit(console: ConsoleDep, actor: ViewerDep, limit: int = 100) -> list[JSON]:
    return [e.to_dict() for e in console.fleet.visible_audit(actor, limit=max(1, min(limit, 10_000)))]


# -- API tokens (accounts are in routes/accounts.py) ------------------------------------------------------


@router.get("/tokens", summary="API tokens (never their values): an admin sees all, anyone else their own")
def tokens(console: ConsoleDep, actor: ViewerDep) -> list[JSON]:
    return [t.to_dict() for t in console.tokens.visible(actor)]


@router.post(
    "/tokens",
    status_code=201,
    summary="A new API token, at most the caller's role and lineages, living at most as long as the caller's token; "
    "its value is in this response only",
)
def token_create(console: ConsoleDep, body: TokenIn, actor: ViewerDep) -> JSON:
    token, info = console.tokens.create(actor, body.name, role=body.role, days=body.days, lineages=body.lineages)
    return {**info.to_dict(), "token": token}


@router.delete("/tokens/{token_id}", summary="Revoke an API token and every token made with it")
def token_revoke(console: ConsoleDep, token_id: Id, actor: ViewerDep) -> JSON:
    console.tokens.revoke(actor, token_id)
    return {"revoked": token_id}


# -- client deployment -----------------------------------------------------------------------------------------


@router.get("/client-profiles", summary="Client profiles", dependencies=allow(Role.VIEWER))
def client_profiles(console: ConsoleDep) -> list[JSON]:
    return [p.to_dict() for p in console.clients.profiles()]


@router.put("/client-profiles", summary="Create or change a client profile")
def client_profile_put(console: ConsoleDep, body: ProfileIn, actor: OperatorDep) -> JSON:
    profile = console.clients.save_profile(
        actor,
        body.name,
        hostname=body.hostname,
        template=body.template,
        content_type=body.content_type,
        link_hours=body.link_hours,
    )
    return profile.to_dict()


@router.delete("/client-profiles/{name}", summary="Remove a client profile, its users and their links")
def client_profile_remove(console: ConsoleDep, name: str, actor: OperatorDep) -> JSON:
    console.clients.remove_profile(actor, name)
    return {"removed": name}


@router.get("/client-users", summary="Client users", dependencies=allow(Role.VIEWER))
def client_users(console: ConsoleDep) -> list[JSON]:
    return [u.to_dict() for u in console.clients.users()]


@router.post("/client-users", status_code=201, summary="Add a client user")
def client_user_add(console: ConsoleDep, body: ClientUserIn, actor: OperatorDep) -> JSON:
    user = console.clients.add_user(
        actor, body.profile, body.username, display_name=body.display_name, email=body.email
    )
    return user.to_dict()


@router.delete("/client-users/{user_id}", summary="Remove a client user and their links")
def client_user_remove(console: ConsoleDep, user_id: Id, actor: OperatorDep) -> JSON:
    console.clients.remove_user(actor, user_id)
    return {"removed": user_id}


@router.post(
    "/client-users/{user_id}/links",
    status_code=201,
    summary="A one-time deployment link (URL and QR code as SVG): in this response only",
)
def client_link(console: ConsoleDep, user_id: Id, actor: OperatorDep) -> JSON:
    link = console.clients.new_link(actor, user_id)
    return {**link.to_dict(), "qr_svg": qr_svg(link.url)}


@router.get(
    "/client-warnings",
    summary="Client hosts whose certificate a strict client would refuse",
    dependencies=allow(Role.VIEWER),
)
async def client_warnings(console: ConsoleDep, refresh: bool = False) -> list[JSON]:
    return [w.to_dict() for w in await console.status.client_warnings(refresh=refresh)]


# -- CSR, import, deploy ---------------------------------------------------------------------------------


class SubjectIn(BaseModel):
    """No organizational unit: public CAs refuse it (CA/B Forum ballot SC47)."""

    model_config = ConfigDict(extra="forbid")

    country: Annotated[str, Field(max_length=2)] = ""
    state: Annotated[str, Field(max_length=128)] = ""
    locality: Annotated[str, Field(max_length=128)] = ""
    organization: Annotated[str, Field(max_length=64)] = ""


class CsrIn(BaseModel):
    nodes: list[str] = Field(default_factory=list, max_length=100, description="nodes that join the lineage")
    names: list[OneName] = Field(default_factory=list, max_length=100, description="names beyond the nodes' names")
    key: str = Field("ec:p256", max_length=20, examples=["ec:p256", "rsa:2048"])
    subject: SubjectIn = SubjectIn()
    common_name: str = Field("", max_length=253, description="one of the names; the first name when empty")
    wildcards: bool = Field(False, description="propose a wildcard where two or more names share a parent")


class DeployIn(BaseModel):
    nodes: list[str] = Field(default_factory=list, max_length=200, description="all of the lineage's nodes when empty")
    dry_run: bool = Field(False, description="only say what each node would change; nothing changed or recorded")


class RollbackIn(BaseModel):
    nodes: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="all of the lineage's nodes when empty: then the version also becomes the active one",
    )
    to: int | None = Field(None, ge=1, description="the version to go back to; the one before the active when empty")


class ExportIn(BaseModel):
    format: str = Field("pkcs12", max_length=20, description=", ".join(f.value for f in FORMATS))
    password: str = Field(min_length=1, max_length=1024, description="encrypts the key (and the PKCS#12 file)")
    version: int | None = Field(None, ge=1, description="the active version when empty")
    legacy: bool = Field(False, description="PKCS#12 that Windows Server 2016 and old Java open (3DES, SHA-1 MAC)")


@router.get("/lineages/{name}/plan", summary="How the lineage's names would go into a CSR (SAN list or wildcards)")
def names_plan(console: ConsoleDep, actor: ViewerDep, name: str, wildcards: bool = True) -> JSON:
    console.fleet.check_lineage(actor, name)
    return console.fleet.plan(name, wildcards=wildcards).to_dict()


@router.post("/lineages/{name}/csr", status_code=201, summary="Make a key inside the store and the CSR for the lineage")
def csr(console: ConsoleDep, name: str, body: CsrIn, actor: OperatorDep) -> JSON:
    values = CsrValues(
        lineage=name,
        nodes=tuple(body.nodes),
        names="\n".join(body.names),
        key=body.key,
        subject=tuple((k, v) for k, v in body.subject.model_dump().items()),
        wildcards=body.wildcards,
        common_name=body.common_name,
    )
    return console.fleet.request_csr(actor, values).to_dict()


@router.get(
    "/lineages/{name}/versions/{number}/csr",
    summary="The CSR of a version, as PEM",
    response_class=Response,
    responses={200: {"content": {"application/pkcs10": {"schema": {"type": "string"}}}, "description": "the CSR"}},
)
def csr_pem(console: ConsoleDep, actor: ViewerDep, name: str, number: Id) -> Response:
    console.fleet.check_lineage(actor, name)
    return Response(console.fleet.csr_pem(name, number), media_type="application/pkcs10")


@router.post(
    "/lineages/{name}/import",
    summary="Read the CA's files and show the findings; saved (and made active) only with confirm=true",
)
def import_files(
    console: ConsoleDep,
    name: str,
    *,
    actor: OperatorDep,
    files: Annotated[list[UploadFile], File(description="any format certfleet reads")],
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[bool, Form()] = False,
    force: Annotated[bool, Form(description="accept a version weaker than the active one")] = False,
) -> JSON:
    console.fleet.check_lineage(actor, name)
    inputs = read_uploads(files, limit=console.settings.upload_limit)
    passwords = [password.encode()] if password else []
    result = console.imports.read(actor, name, inputs, passwords, save=confirm, force=force)
    return {**result.to_dict(), "saved": result.version is not None}


@router.post(
    "/lineages/{name}/deploy",
    status_code=202,
    summary="Deploy the active version (or plan it: dry_run); follow the job",
)
def deploy(console: ConsoleDep, name: str, body: DeployIn, actor: OperatorDep) -> JSON:
    console.fleet.check_lineage(actor, name)
    return console.jobs.start(actor, name, body.nodes, dry_run=body.dry_run).to_dict()


@router.post(
    "/lineages/{name}/rollback",
    status_code=202,
    summary="Deploy an earlier version; to every node it also becomes the active one; follow the job",
)
def rollback(console: ConsoleDep, name: str, body: RollbackIn, actor: OperatorDep) -> JSON:
    console.fleet.check_lineage(actor, name)
    return console.jobs.rollback(actor, name, body.nodes, to=body.to).to_dict()


@router.post(
    "/lineages/{name}/export",
    summary="A version's key and chain as a file: PKCS#12, or PEM files in a zip; the key encrypted (admin)",
    response_class=Response,
)
def export(console: ConsoleDep, name: str, body: ExportIn, actor: AdminDep) -> Response:
    console.fleet.check_lineage(actor, name)
    download = console.exports.download(
        actor, name, version=body.version, fmt=body.format, password=body.password, legacy=body.legacy
    )
    return Response(
        download.data,
        media_type=download.media_type,
        headers={"content-disposition": f'attachment; filename="{download.filename}"'},
    )


# -- trust anchors ------------------------------------------------------------------------------------------


@router.get("/trust-anchors", summary="The roots imports trust besides Mozilla's")
def trust_anchors(console: ConsoleDep, actor: ViewerDep) -> list[JSON]:
    return [a.to_dict() for a in console.trust.anchors()]


@router.post("/trust-anchors", status_code=201, summary="Trust the CA certificates sent (multipart files) (admin)")
def trust_add(
    console: ConsoleDep,
    *,
    actor: AdminDep,
    files: Annotated[list[UploadFile], File(description="CA certificates, any format certfleet reads")],
) -> list[JSON]:
    inputs = read_uploads(files, limit=console.settings.upload_limit, what="the CA's root certificate")
    return [{**a.to_dict(), "added": new} for a, new in console.trust.add(actor, inputs)]


@router.delete("/trust-anchors/{sha256}", summary="Stop trusting an anchor (admin)")
def trust_remove(console: ConsoleDep, sha256: str, actor: AdminDep) -> JSON:
    return {"removed": console.trust.remove(actor, sha256).fingerprint}


@router.get("/deploy/jobs/{job_id}", summary="A deploy's progress, per node")
def deploy_job(console: ConsoleDep, actor: ViewerDep, job_id: str) -> JSON:
    job = console.jobs.get(job_id)
    console.fleet.check_lineage(actor, job.lineage)
    data: JSON = job.to_dict()
    return data
