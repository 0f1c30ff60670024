"""``/api/v1``: everything the pages do, as JSON. Results are the library's own ``to_dict()``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from certfleet.certinfo import describe
from certfleet.console import flows
from certfleet.console.accounts import Actor
from certfleet.console.app import API_PREFIX, authenticate, console_of
from certfleet.console.clients import qr_svg
from certfleet.console.service import lineage_json

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authenticate)])
ActorDep = Annotated[Actor, Depends(authenticate)]
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

    def values(self, original: str) -> flows.NodeFormValues:
        return flows.NodeFormValues(
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
async def me(actor: ActorDep) -> JSON:
    return actor.to_dict()


@router.get("/lineages", summary="Every lineage with its active version, health and what each node serves")
async def lineages(request: Request, refresh: bool = False) -> list[JSON]:
    report = await console_of(request).status(refresh=refresh)
    return [lineage_json(lineage) for lineage in report.lineages]


@router.get("/lineages/{name}", summary="One lineage, with its versions")
async def lineage(request: Request, name: str, refresh: bool = False) -> JSON:
    console = console_of(request)
    [view] = (await console.status(lineage=name, refresh=refresh)).lineages
    versions = await asyncio.to_thread(console.store.versions, name)
    return {**lineage_json(view), "versions": [v.to_dict() for v in versions]}


@router.get("/certificates/{sha256}", summary="A certificate known to the store, and its chain as verified")
async def certificate(request: Request, sha256: str) -> JSON:
    console = console_of(request)
    cert, chain, lineage_name = await asyncio.to_thread(console.find_certificate, sha256)
    _, verification = await asyncio.to_thread(console.chain_picture, cert, chain)
    return {
        "certificate": describe(cert).to_dict(),
        "lineage": lineage_name,
        "pem": flows.pem_text(cert),
        "verification": verification.to_dict(),
    }


# -- nodes ------------------------------------------------------------------------------------------------


@router.get("/nodes", summary="Every node")
async def nodes(request: Request) -> list[JSON]:
    console = console_of(request)
    specs = await asyncio.to_thread(console.store.nodes)
    out = []
    for spec in specs:
        member = await asyncio.to_thread(console.store.node_lineages, spec.name)
        out.append({**spec.to_dict(), "lineages": member})
    return out


@router.get("/nodes/{name}", summary="One node")
async def node(request: Request, name: str) -> JSON:
    console = console_of(request)
    spec = await asyncio.to_thread(console.store.node, name)
    return {**spec.to_dict(), "lineages": await asyncio.to_thread(console.store.node_lineages, name)}


@router.post("/nodes", status_code=201, summary="Add a node")
async def node_add(request: Request, body: NodeIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    spec = await asyncio.to_thread(flows.save_node, console, actor, body.values(""))
    return {**spec.to_dict(), "lineages": await asyncio.to_thread(console.store.node_lineages, spec.name)}


@router.put("/nodes/{name}", summary="Change a node (its name stays)")
async def node_put(request: Request, name: str, body: NodeIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    await asyncio.to_thread(console.store.node, name)  # 400 when unknown
    spec = await asyncio.to_thread(flows.save_node, console, actor, body.values(name))
    return {**spec.to_dict(), "lineages": await asyncio.to_thread(console.store.node_lineages, spec.name)}


@router.delete("/nodes/{name}", summary="Remove a node")
async def node_delete(request: Request, name: str, actor: ActorDep) -> JSON:
    console = console_of(request)
    await asyncio.to_thread(console.as_actor(actor).remove_node, name)
    return {"removed": name}


# -- history and audit --------------------------------------------------------------------------------------


@router.get("/history", summary="Deployments, newest first")
async def history(request: Request, lineage: str | None = None, limit: int = 50) -> list[JSON]:
    console = console_of(request)
    return [d.to_dict() for d in await asyncio.to_thread(console.history, lineage, max(1, min(limit, 1000)))]


@router.get("/lineages/{name}/versions", summary="Versions of a lineage, oldest first")
async def versions(request: Request, name: str) -> list[JSON]:
    console = console_of(request)
    return [v.to_dict() for v in await asyncio.to_thread(console.store.versions, name)]


@router.get("/audit", summary="The audit trail, newest first")
async def audit(request: Request, limit: int = 100) -> list[JSON]:
    console = console_of(request)
    entries = await asyncio.to_thread(lambda: console.store.audit_log(limit=max(1, min(limit, 10_000))))
    return [e.to_dict() for e in entries]


# -- API tokens ----------------------------------------------------------------------------------------------


@router.get("/tokens", summary="API tokens (never their values)")
async def tokens(request: Request) -> list[JSON]:
    return [t.to_dict() for t in await asyncio.to_thread(console_of(request).accounts.api_tokens)]


@router.post("/tokens", status_code=201, summary="A new API token: its value is in this response only")
async def token_create(request: Request, body: TokenIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    token, info = await asyncio.to_thread(console.create_token, actor, body.name)
    return {**info.to_dict(), "token": token}


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
async def token_revoke(request: Request, token_id: int, actor: ActorDep) -> JSON:
    console = console_of(request)
    await asyncio.to_thread(console.revoke_token, actor, token_id)
    return {"revoked": token_id}


# -- client deployment -----------------------------------------------------------------------------------------


@router.get("/client-profiles", summary="Client profiles")
async def client_profiles(request: Request) -> list[JSON]:
    return [p.to_dict() for p in await asyncio.to_thread(console_of(request).clients.profiles)]


@router.put("/client-profiles", summary="Create or change a client profile")
async def client_profile_put(request: Request, body: ProfileIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    prof = await asyncio.to_thread(
        lambda: console.save_profile(
            actor,
            body.name,
            hostname=body.hostname,
            template=body.template,
            content_type=body.content_type,
            link_hours=body.link_hours,
        )
    )
    return prof.to_dict()


@router.delete("/client-profiles/{name}", summary="Remove a client profile, its users and their links")
async def client_profile_remove(request: Request, name: str, actor: ActorDep) -> JSON:
    console = console_of(request)
    await asyncio.to_thread(console.remove_profile, actor, name)
    return {"removed": name}


@router.get("/client-users", summary="Client users")
async def client_users(request: Request) -> list[JSON]:
    return [u.to_dict() for u in await asyncio.to_thread(console_of(request).clients.users)]


@router.post("/client-users", status_code=201, summary="Add a client user")
async def client_user_add(request: Request, body: ClientUserIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    user = await asyncio.to_thread(
        lambda: console.add_client_user(
            actor, body.profile, body.username, display_name=body.display_name, email=body.email
        )
    )
    return user.to_dict()


@router.delete("/client-users/{user_id}", summary="Remove a client user and their links")
async def client_user_remove(request: Request, user_id: int, actor: ActorDep) -> JSON:
    console = console_of(request)
    await asyncio.to_thread(console.remove_client_user, actor, user_id)
    return {"removed": user_id}


@router.post(
    "/client-users/{user_id}/links",
    status_code=201,
    summary="A one-time deployment link (URL and QR code as SVG): in this response only",
)
async def client_link(request: Request, user_id: int, actor: ActorDep) -> JSON:
    console = console_of(request)
    link = await asyncio.to_thread(console.new_client_link, actor, user_id)
    return {**link.to_dict(), "qr_svg": qr_svg(link.url)}


@router.get("/client-warnings", summary="Client hosts whose certificate a strict client would refuse")
async def client_warnings(request: Request, refresh: bool = False) -> list[JSON]:
    return [w.to_dict() for w in await console_of(request).client_warnings(refresh=refresh)]


# -- CSR, import, deploy ---------------------------------------------------------------------------------


class SubjectIn(BaseModel):
    country: Annotated[str, Field(max_length=2)] = ""
    state: Annotated[str, Field(max_length=128)] = ""
    locality: Annotated[str, Field(max_length=128)] = ""
    organization: Annotated[str, Field(max_length=64)] = ""
    organizational_unit: Annotated[str, Field(max_length=64)] = ""


class CsrIn(BaseModel):
    nodes: list[str] = Field(default_factory=list, max_length=100, description="nodes that join the lineage")
    names: list[str] = Field(default_factory=list, max_length=100, description="names beyond the nodes' names")
    key: str = Field("ec:p256", max_length=20, examples=["ec:p256", "rsa:2048"])
    subject: SubjectIn = SubjectIn()
    wildcards: bool = Field(False, description="propose a wildcard where two or more names share a parent")


class DeployIn(BaseModel):
    nodes: list[str] = Field(default_factory=list, max_length=200, description="all of the lineage's nodes when empty")


@router.get("/lineages/{name}/plan", summary="How the lineage's names would go into a CSR (SAN list or wildcards)")
async def names_plan(request: Request, name: str, wildcards: bool = True) -> JSON:
    from certfleet.names import plan

    console = console_of(request)
    record = await asyncio.to_thread(console.store.lineage, name)
    required = console.required_names(record)
    return plan(required, wildcards=wildcards).to_dict()


@router.post("/lineages/{name}/csr", status_code=201, summary="Make a key inside the store and the CSR for the lineage")
async def csr(request: Request, name: str, body: CsrIn, actor: ActorDep) -> JSON:
    console = console_of(request)
    values = flows.CsrFormValues(
        lineage=name,
        nodes=tuple(body.nodes),
        names="\n".join(body.names),
        key=body.key,
        subject=tuple((k, v) for k, v in body.subject.model_dump().items()),
        wildcards=body.wildcards,
    )
    result = await asyncio.to_thread(flows.generate_csr, console, actor, values)
    return result.to_dict()


@router.get("/lineages/{name}/versions/{number}/csr", summary="The CSR of a version, as PEM")
async def csr_pem(request: Request, name: str, number: int) -> Response:
    pem = await asyncio.to_thread(flows.csr_pem, console_of(request), name, number)
    return Response(pem, media_type="application/pkcs10")


@router.post(
    "/lineages/{name}/import",
    summary="Read the CA's files and show the findings; saved (and made active) only with confirm=true",
)
async def import_files(
    request: Request,
    name: str,
    *,
    actor: ActorDep,
    files: Annotated[list[UploadFile], File(description="any format certfleet reads")],
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[bool, Form()] = False,
) -> JSON:
    console = console_of(request)
    form = await request.form()
    inputs = await flows.read_uploads(form, limit=console.settings.upload_limit)
    passwords = [password.encode()] if password else []
    result = await asyncio.to_thread(flows.import_findings, console, name, inputs, passwords, save=confirm, actor=actor)
    return {**result.to_dict(), "saved": result.version is not None}


@router.post("/lineages/{name}/deploy", status_code=202, summary="Deploy the active version; follow the job")
async def deploy(request: Request, name: str, body: DeployIn, actor: ActorDep) -> JSON:
    from certfleet.console.jobs import start_deploy

    console = console_of(request)
    job = await asyncio.to_thread(
        start_deploy,
        console.as_actor(actor),
        name,
        body.nodes,
        job_id=console.new_id(),
        account_id=actor.account_id,
        clock=console.now,
    )
    console.add_job(job)
    return job.to_dict()


@router.get("/deploy/jobs/{job_id}", summary="A deploy's progress, per node")
async def deploy_job(request: Request, job_id: str) -> JSON:
    console = console_of(request)
    job = console.jobs.get(job_id)
    if job is None:
        from certfleet.errors import InputError

        raise InputError("no such deploy job")
    data: JSON = job.to_dict()
    return data
