"""The library's hints in the console's words.

The library words its hints for the command line ("give it with --password ...", "`certfleet trust
add ROOT.pem`"). Someone in the console has no command line: each hint that names a command or an
option the console has an action for is said here as that action, in the pages' words or the
API's. Any other hint is shown as the library gives it.

A rule replaces the command-line part of a hint and keeps the rest, so a hint that only starts with
a command ("renew: `certfleet request web`, then import and deploy") keeps its own words around it.
``tests/console/test_console_hints.py`` reads every hint the library can give and holds each one
that can reach the console to this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Face", "console_hint"]


class Face(StrEnum):
    """Where a hint is shown: a page, or the JSON API."""

    PAGE = "page"
    API = "api"


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    page: str
    api: str | None = None  # the API's words, when they differ from the page's

    def apply(self, text: str, face: Face) -> str:
        words = self.api if face is Face.API and self.api is not None else self.page
        return self.pattern.sub(words, text)


def _rule(pattern: str, page: str, api: str | None = None) -> _Rule:
    return _Rule(re.compile(pattern), page, api)


_LINEAGE = r"(?P<lineage>[A-Za-z0-9._-]+)"

# in order: the longer forms of one command before the shorter ones
_RULES = (
    # passwords
    _rule(
        r"give it with --password, --password-file or CERTFLEET_PASSWORD",
        "type it in the Password field and read the files again",
        "send it in the password field",
    ),
    _rule(
        r"give --password to protect it, or --no-key-password if the file must hold it in the clear",
        "type a password to protect the key",
        "send a password to protect the key",
    ),
    # jobs queued for the workers
    _rule(
        r"`certfleet jobs` shows its jobs",
        "its nodes' progress is on the deployment's page (History)",
        "GET /api/v1/deploy/jobs/ID shows its nodes' progress",
    ),
    # trust anchors
    _rule(
        r"trust its root: `certfleet trust add [^`]*`",
        "add its root on the Trust anchors page",
        "add its root with POST /api/v1/trust-anchors",
    ),
    _rule(
        r"give its root with --trust",
        "add its root on the Trust anchors page",
        "add its root with POST /api/v1/trust-anchors",
    ),
    _rule(r"\(and to certfleet with --trust\)", "(and to certfleet on the Trust anchors page)"),
    _rule(r"`certfleet trust list` shows them|`certfleet trust list`", "the Trust anchors page lists them"),
    # requests and imports
    _rule(
        rf"`certfleet request {_LINEAGE}`, then `certfleet import [^`]*` what the CA sends",
        r"generate a CSR for \g<lineage>, then import what the CA sends",
    ),
    _rule(
        rf"renew: `certfleet request {_LINEAGE}`",
        r"renew: generate a CSR for \g<lineage>",
    ),
    _rule(
        rf"`certfleet request {_LINEAGE}` makes the CSR",
        r"generate a CSR for \g<lineage>",
    ),
    _rule(
        rf"nothing is waiting: `certfleet request {_LINEAGE}`",
        r"nothing is waiting: generate a CSR for \g<lineage>",
    ),
    _rule(
        rf"the CSR of `certfleet request {_LINEAGE}`",
        r"the CSR generated for \g<lineage>",
    ),
    _rule(
        rf"`certfleet import {_LINEAGE} FILES\.\.\.` with what the CA sent",
        r"import what the CA sent for \g<lineage>",
    ),
    _rule(
        rf"import it into {_LINEAGE}: `certfleet import [^`]*`",
        r"import it into \g<lineage> (choose \g<lineage> on the Import page)",
        r"import it into \g<lineage> (POST /api/v1/lineages/\g<lineage>/import)",
    ),
    _rule(
        r"give the nodes with --node, or the names with --name",
        "choose its nodes, or list more names",
        "send its nodes, or more names",
    ),
    _rule(
        r"add the CA's intermediate bundle, or let certfleet fetch it \(leave out --no-fetch\)",
        "add the CA's intermediate bundle to the import",
    ),
    _rule(r"or use --no-fetch", "or add the CA's intermediate bundle to the import"),
    _rule(r"let `certfleet chain` fetch it", "let the import fetch it"),
    _rule(r"check the chain with `certfleet chain`", "check the chain on the certificate's page"),
    _rule(r"\(`certfleet chain` puts them in order\)", "(a deploy from certfleet puts them in order)"),
    _rule(r"deploy the active version: `certfleet deploy [^`]*`", "deploy the active version on the Deploy page"),
    _rule(
        r"make a new key \(certfleet key --type [^)]*\)",
        "generate a new CSR with an ec:p256 or rsa:2048 key",
    ),
    _rule(
        r"if this is what you want, import it again with --force",
        "if this is what you want, upload it again with \"Accept a version that expires sooner\" ticked",
        "if this is what you want, send it again with force",
    ),
    # deploys that never finished
    _rule(
        rf"finish it with `certfleet deploy {_LINEAGE}`, or go back with `certfleet rollback [^`]*`",
        r"finish it on the Deploy page of \g<lineage>, or go back on its Rollback page",
    ),
    _rule(
        rf"`certfleet deploy {_LINEAGE}` tests, reloads and probes the active version there",
        r"a deploy of \g<lineage> (the Deploy page) tests, reloads and probes the active version there",
    ),
    _rule(
        r"add each node first: `certfleet node add NAME --name DNS --target KIND:PATH`",
        "add each node on the Nodes page first",
        "add each node with POST /api/v1/nodes first",
    ),
    _rule(r"choose another path, or give --force", "choose another path"),
    _rule(
        r"look at the store \(`certfleet history`, `certfleet status`\) before running it again",
        "look at the History page and the Dashboard before trying again",
    ),
    _rule(
        rf"`certfleet issue {_LINEAGE}` for a new certificate",
        r"issue a new certificate for \g<lineage> (Issue now, on its Issuing page), or import one",
    ),
    # accounts
    _rule(r"`certfleet account list` lists them", "the Accounts page lists them", "GET /api/v1/accounts lists them"),
    _rule(
        r"`certfleet account reset-password` changes its password",
        "Reset password on the Accounts page changes it",
        "POST /api/v1/accounts/NAME/password changes it",
    ),
    _rule(r"add it with --role admin", "choose the admin role", "send the role admin"),
    # what the store holds
    _rule(r"`certfleet node list` shows the nodes", "the Nodes page lists them"),
    _rule(r"`certfleet status` lists the lineages", "the Dashboard lists them"),
    _rule(rf"`certfleet history {_LINEAGE}` lists its versions", "the History page lists its versions"),
    _rule(rf"`certfleet history {_LINEAGE}`", r"the History page lists the versions of \g<lineage>"),
    _rule(
        r"`certfleet node remove` it first, or change it with `certfleet apply`",
        "edit it on the Nodes page, or remove it there first",
    ),
    _rule(r"run again with --debug and report it", "see the console's log and report it"),
    # issuers and issuing (ACME)
    _rule(
        r"`certfleet issuer list` shows the issuers", "the Issuers page lists them", "GET /api/v1/issuers lists them"
    ),
    _rule(
        r"`certfleet issuer remove (?P<name>[^`]+)`, then add a new one",
        r"remove issuer \g<name> on its page, then add a new one on the Issuers page",
    ),
    _rule(
        r"`certfleet issuer rollover (?P<name>[^`]+)` again asks it which one it holds",
        r"rolling the key of \g<name> over again (its page on the Issuers page) asks it which one it holds",
    ),
    _rule(r"then add --agree-tos", 'then tick "I agree to the CA\'s terms of service"', "then send agree_tos"),
    _rule(r" \(a node's --webroot\)", " (the node's webroot)"),
    _rule(
        r"`certfleet node add \.\.\. --webroot /var/www/html` \(or `webroot` in the node's options of the fleet file\)",
        "fill in the node's Webroot on the Nodes page, e.g. /var/www/html",
        "send the node's webroot, e.g. /var/www/html",
    ),
    _rule(
        r"add a solver for it: --solver '(?P<name>[^']+)=dns-01:rfc2136:FILE' \(or lexicon, hook\)",
        r"choose a dns-01 solver for \g<name> on the lineage's Issuing page",
    ),
    _rule(
        r"name the node: --solver '(?P<name>[^']+)=http-01:NODE', or prove it by dns-01",
        r"choose the node for \g<name> on the lineage's Issuing page, or prove it by dns-01",
    ),
    _rule(
        r"give --eab-kid and --eab-hmac-file with the key id and HMAC key",
        "fill in the EAB key id and HMAC key",
        "send eab_kid and eab_hmac, the key id and HMAC key",
    ),
    _rule(
        r"\(`certfleet issue LINEAGE --dry-run` probes it\)", "(the preflight on the lineage's Issuing page probes it)"
    ),
    _rule(r"\(`certfleet issue LINEAGE --dry-run`\)", "(the preflight on the lineage's Issuing page)"),
    _rule(
        r"\(`certfleet lineage set LINEAGE --issuer A --issuer B`\)",
        "(on the lineage's Issuing page)",
    ),
    _rule(
        r"`certfleet issuer show NAME`; a deactivated or unknown account needs a new `certfleet issuer add`",
        "see the issuer's page; a deactivated or unknown account needs a new issuer (the Issuers page)",
    ),
    _rule(
        r"give the root of its HTTPS certificate with --ca-bundle",
        "choose the root of its HTTPS certificate as the CA bundle",
        "send the root of its HTTPS certificate as ca_bundle",
    ),
    _rule(
        rf"`certfleet issuer add NAME --acme URL`, then `certfleet lineage set {_LINEAGE} --issuer NAME`",
        r"add one on the Issuers page, then choose it on the Issuing page of \g<lineage>",
    ),
    _rule(
        rf"add nodes: `certfleet node add \.\.\. --lineage {_LINEAGE}`",
        r"add nodes to \g<lineage> on the Nodes page",
        r"add nodes to \g<lineage> with POST /api/v1/nodes",
    ),
    _rule(
        rf"`certfleet lineage set {_LINEAGE} --solver '(?P<name>[^']+)=dns-01:rfc2136:FILE'` "
        r"\(or dns-01:lexicon:PROVIDER, dns-01:hook:COMMAND\)",
        r"choose a dns-01 solver for \g<name> on the Issuing page of \g<lineage>",
    ),
    _rule(r"choose another solver for the name \(--solver\)", "choose another solver for the name on its Issuing page"),
    _rule(
        r"\(give it with `issuer add --caa-identity`\)",
        "(give it as the CA's CAA domain names when adding the issuer)",
    ),
    _rule(r"give the version: --version N", "choose the version to revoke"),
    _rule(
        rf"`certfleet lineage set {_LINEAGE} --issuer OTHER` first",
        r"choose another issuer on the Issuing page of \g<lineage> first",
    ),
    _rule(r"give each --issuer once, in the order to try", "choose each issuer once, in the order to try"),
    # nodes
    _rule(
        rf"add one: certfleet node add NAME --name DNS --target KIND:PATH --lineage {_LINEAGE}",
        r"add one on the Nodes page, in lineage \g<lineage>",
        r"add one with POST /api/v1/nodes, in lineage \g<lineage>",
    ),
    _rule(
        r"give at least one --name|give each DNS name the node serves with --name",
        "fill in the DNS names the node serves",
        "list the DNS names the node serves in names",
    ),
    _rule(
        r"give at least one --target KIND:PATH|give --target KIND:PATH, e\.g\. \S+|add one with --target KIND:PATH",
        "add a target line KIND:PATH, e.g. nginx:/etc/nginx/tls",
        "list its targets as KIND:PATH, e.g. nginx:/etc/nginx/tls",
    ),
    # what a probe of a node found (the console probes each node's probe endpoint)
    _rule(
        r"SMTP and IMAP need --starttls smtp\|imap",
        "give the node a probe endpoint that speaks TLS",
    ),
    _rule(r"give the name the server expects with --name", "give the node the name the server expects"),
    _rule(r" \(--name\)", ""),
    _rule(r" \(or use --starttls\)", ""),
    _rule(r", or raise --timeout", ""),
)


def console_hint(hint: str | None, face: Face = Face.PAGE) -> str:
    """``hint`` as the console says it (``""`` for none)."""
    if not hint:
        return ""
    for rule in _RULES:
        hint = rule.apply(hint, face)
    return hint
