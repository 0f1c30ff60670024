"""``/api/v1``: everything the pages do, as JSON. Results are the library's own ``to_dict()``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from certfleet.certinfo import describe
from certfleet.console.deps import API_PREFIX, ActorDep, ConsoleDep, checked_csrf
from certfleet.console.routes.forms import read_uploads
from certfleet.console.services.certificates import pem_text
from certfleet.console.services.clients import qr_svg
from certfleet.console.services.exports import FORMATS
from certfleet.console.services.fleet import CsrValues, NodeValues
from certfleet.console.services.status import lineage_json

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(checked_csrf)])
JSON = dict[str, Any]


# -- models of what callers send ---------------------------------------------------------------------


class NodeIn(BaseModel):
    name: str = Field(max_length=64, examples=["main"])
    names: list[str] = Field(max_length=100, examples=[["collab.example.com"]])
    targets: list[str] = Field(max_length=20, description="KIND:PATH", examples=[["nginx:/etc/nginx/certfleet"]])
    transport: str = Field("local", max_length=512)
    test_cmd: str | None = Field(None, max_length=4000)
    reload_cmd: str | None = Field(None, max_length=4000)
    probe: str | None = Field(None, max_length=300, examples=["collab.example.com:443"])
    known_hosts: str | None = Field(None, max_length=4000, description="SSH: the known_hosts file on this machine")
    identity: str | None = Field(None, max_length=4000, description="SSH: the private key file to log in with")
    lineages: list[str] = Field(default_factory=list, max_length=50)

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
            lineages=tuple(self.lineages),
            original=original,
        )


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)


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
def me(actor: ActorDep) -> JSON:
    return actor.to_dict()


@router.get("/lineages", summary="Every lineage with its active version, health and what each node serves")
async def lineages(console: ConsoleDep, refresh: bool = False) -> list[JSON]:
    report = await console.status.report(refresh=refresh)
    return [lineage_json(lineage) for lineage in report.lineages]


@router.get("/lineages/{name}", summary="One lineage, with its versions")
async def lineage(console: ConsoleDep, name: str, refresh: bool = False) -> JSON:
    [found] = (await console.status.report(lineage=name, refresh=refresh)).lineages
    return {**lineage_json(found), "versions": [v.to_dict() for v in console.fleet.versions(name)]}


@router.get("/certificates/{sha256}", summary="A certificate known to the store, and its chain as verified")
def certificate(console: ConsoleDep, sha256: str) -> JSON:
    cert, chain, lineage_name = console.certificates.find(sha256)
    _, verification = console.certificates.chain_picture(cert, chain)
    return {
        "certificate": describe(cert).to_dict(),
        "lineage": lineage_name,
        "pem": pem_text(cert),
        "verification": verification.to_dict(),
    }


# -- nodes ------------------------------------------------------------------------------------------------


@router.get("/nodes", summary="Every node")
def nodes(console: ConsoleDep) -> list[JSON]:
    specs = console.fleet.nodes()
    member = console.fleet.memberships(specs)
    return [{**spec.to_dict(), "lineages": member[spec.name]} for spec in specs]


@router.get("/nodes/{name}", summary="One node")
def node(console: ConsoleDep, name: str) -> JSON:
    return {**console.fleet.node(name).to_dict(), "lineages": console.fleet.node_lineages(name)}


@router.post("/nodes", status_code=201, summary="Add a node")
def node_add(console: ConsoleDep, body: NodeIn, actor: ActorDep) -> JSON:
    spec = console.fleet.save_node(actor, body.values(""))
    return {**spec.to_dict(), "lineages": console.fleet.node_lineages(spec.name)}


@router.put("/nodes/{name}", summary="Change a node (its name stays)")
def node_put(console: ConsoleDep, name: str, body: NodeIn, actor: ActorDep) -> JSON:
    console.fleet.node(name)  # 400 when unknown
    spec = console.fleet.save_node(actor, body.values(name))
    return {**spec.to_dict(), "lineages": console.fleet.node_lineages(spec.name)}


@router.delete("/nodes/{name}", summary="Remove a node")
def node_delete(console: ConsoleDep, name: str, actor: ActorDep) -> JSON:
    console.fleet.remove_node(actor, name)
    return {"removed": name}


# -- history and audit --------------------------------------------------------------------------------------


@router.get("/history", summary="Deployments, newest first")
def history(console: ConsoleDep, lineage: str | None = None, limit: int = 50) -> list[JSON]:
    return [d.to_dict() for d in console.fleet.deployments(lineage, max(1, min(limit, 1000)))]


@router.get("/lineages/{name}/versions", summary="Versions of a lineage, oldest first")
def versions(console: ConsoleDep, name: str) -> list[JSON]:
    return [v.to_dict() for v in console.fleet.versions(name)]


@router.get("/audit", summary="The audit trail, newest first")
def audit(console: ConsoleDep, limit: int = 100) -> list[JSON]:
    return [e.to_dict() for e in console.fleet.audit_log(limit=max(1, min(limit, 10_000)))]


# -- API tokens ----------------------------------------------------------------------------------------------


@router.get("/tokens", summary="API tokens (never their values)")
def tokens(console: ConsoleDep) -> list[JSON]:
    return [t.to_dict() for t in console.accounts.api_tokens()]


@router.post("/tokens", status_code=201, summary="A new API token: its value is in this response only")
def token_create(console: ConsoleDep, body: TokenIn, actor: ActorDep) -> JSON:
    token, info = console.accounts.new_api_token(actor, body.name)
    return {**info.to_dict(), "token": token}


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
def token_revoke(console: ConsoleDep, token_id: int, actor: ActorDep) -> JSON:
    console.accounts.revoke_api_token(actor, token_id)
    return {"revoked": token_id}


# -- client deployment -----------------------------------------------------------------------------------------


@router.get("/client-profiles", summary="Client profiles")
def client_profiles(console: ConsoleDep) -> list[JSON]:
    return [p.to_dict() for p in console.clients.profiles()]


@router.put("/client-profiles", summary="Create or change a client profile")
def client_profile_put(console: ConsoleDep, body: ProfileIn, actor: ActorDep) -> JSON:
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
def client_profile_remove(console: ConsoleDep, name: str, actor: ActorDep) -> JSON:
    console.clients.remove_profile(actor, name)
    return {"removed": name}


@router.get("/client-users", summary="Client users")
def client_users(console: ConsoleDep) -> list[JSON]:
    return [u.to_dict() for u in console.clients.users()]


@router.post("/client-users", status_code=201, summary="Add a client user")
def client_user_add(console: ConsoleDep, body: ClientUserIn, actor: ActorDep) -> JSON:
    user = console.clients.add_user(
        actor, body.profile, body.username, display_name=body.display_name, email=body.email
    )
    return user.to_dict()


@router.delete("/client-users/{user_id}", summary="Remove a client user and their links")
def client_user_remove(console: ConsoleDep, user_id: int, actor: ActorDep) -> JSON:
    console.clients.remove_user(actor, user_id)
    return {"removed": user_id}


@router.post(
    "/client-users/{user_id}/links",
    status_code=201,
    summary="A one-time deployment link (URL and QR code as SVG): in this response only",
)
def client_link(console: ConsoleDep, user_id: int, actor: ActorDep) -> JSON:
    link = console.clients.new_link(actor, user_id)
    return {**link.to_dict(), "qr_svg": qr_svg(link.url)}


@router.get("/client-warnings", summary="Client hosts whose certificate a strict client would refuse")
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
    names: list[str] = Field(default_factory=list, max_length=100, description="names beyond the nodes' names")
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
def names_plan(console: ConsoleDep, name: str, wildcards: bool = True) -> JSON:
    return console.fleet.plan(name, wildcards=wildcards).to_dict()


@router.post("/lineages/{name}/csr", status_code=201, summary="Make a key inside the store and the CSR for the lineage")
def csr(console: ConsoleDep, name: str, body: CsrIn, actor: ActorDep) -> JSON:
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


@router.get("/lineages/{name}/versions/{number}/csr", summary="The CSR of a version, as PEM")
def csr_pem(console: ConsoleDep, name: str, number: int) -> Response:
    return Response(console.fleet.csr_pem(name, number), media_type="application/pkcs10")


@router.post(
    "/lineages/{name}/import",
    summary="Read the CA's files and show the findings; saved (and made active) only with confirm=true",
)
def import_files(
    console: ConsoleDep,
    name: str,
    *,
    actor: ActorDep,
    files: Annotated[list[UploadFile], File(description="any format certfleet reads")],
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[bool, Form()] = False,
    force: Annotated[bool, Form(description="accept a version weaker than the active one")] = False,
) -> JSON:
    inputs = read_uploads(files, limit=console.settings.upload_limit)
    passwords = [password.encode()] if password else []
    result = console.imports.read(actor, name, inputs, passwords, save=confirm, force=force)
    return {**result.to_dict(), "saved": result.version is not None}


@router.post(
    "/lineages/{name}/deploy",
    status_code=202,
    summary="Deploy the active version (or plan it: dry_run); follow the job",
)
def deploy(console: ConsoleDep, name: str, body: DeployIn, actor: ActorDep) -> JSON:
    return console.jobs.start(actor, name, body.nodes, dry_run=body.dry_run).to_dict()


@router.post(
    "/lineages/{name}/rollback",
    status_code=202,
    summary="Deploy an earlier version; to every node it also becomes the active one; follow the job",
)
def rollback(console: ConsoleDep, name: str, body: RollbackIn, actor: ActorDep) -> JSON:
    return console.jobs.rollback(actor, name, body.nodes, to=body.to).to_dict()


@router.post(
    "/lineages/{name}/export",
    summary="A version's key and chain as a file: PKCS#12, or PEM files in a zip; the key encrypted with the password",
    response_class=Response,
)
def export(console: ConsoleDep, name: str, body: ExportIn, actor: ActorDep) -> Response:
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
def trust_anchors(console: ConsoleDep) -> list[JSON]:
    return [a.to_dict() for a in console.trust.anchors()]


@router.post("/trust-anchors", status_code=201, summary="Trust the CA certificates sent (multipart files)")
def trust_add(
    console: ConsoleDep,
    *,
    actor: ActorDep,
    files: Annotated[list[UploadFile], File(description="CA certificates, any format certfleet reads")],
) -> list[JSON]:
    inputs = read_uploads(files, limit=console.settings.upload_limit, what="the CA's root certificate")
    return [{**a.to_dict(), "added": new} for a, new in console.trust.add(actor, inputs)]


@router.delete("/trust-anchors/{sha256}", summary="Stop trusting an anchor")
def trust_remove(console: ConsoleDep, sha256: str, actor: ActorDep) -> JSON:
    return {"removed": console.trust.remove(actor, sha256).fingerprint}


@router.get("/deploy/jobs/{job_id}", summary="A deploy's progress, per node")
def deploy_job(console: ConsoleDep, job_id: str) -> JSON:
    data: JSON = console.jobs.get(job_id).to_dict()
    return data
