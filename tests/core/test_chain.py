"""Chain building: from whatever the CA sent to the chain a server must send, said plainly."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from test_aia import Server, body, running_server
from test_verify import undecodable_issuer

from certfleet import testing
from certfleet.aia import HttpFetcher
from certfleet.certinfo import describe, fingerprint
from certfleet.chain import ChainResult, DropReason, build_chain, pick_leaf
from certfleet.errors import CertfleetError, FormatError, InputError, NetworkError
from certfleet.formats import InputFormat, Pool, PoolCert, read_pool
from certfleet.lint import lint
from certfleet.problems import Severity
from certfleet.testing import pem
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain
from conftest import PKI

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def server() -> Iterator[Server]:
    with running_server() as state:
        yield state


def pool_of(*files: tuple[str, bytes]) -> Pool:
    return read_pool(list(files))


def codes(result: ChainResult) -> list[str]:
    return [p.code.value for p in result.problems]


def reasons(result: ChainResult) -> list[tuple[str, str | None]]:
    return [(d.reason.value, d.source) for d in result.dropped]


def test_ordered_bundle(pki: PKI) -> None:
    pool = pool_of(("fullchain.pem", pki.leaf.fullchain_pem()))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.leaf == pki.leaf.cert
    assert result.chain == (pki.leaf.cert, pki.inter.cert)
    assert result.root == pki.root.cert
    assert result.complete
    assert result.fetched == () and result.dropped == ()
    assert result.problems == ()
    assert result.key is None


def test_shuffled_duplicated_with_root_and_a_stranger(pki: PKI) -> None:
    stranger = testing.TestCA.root("Unrelated Root").intermediate("Unrelated Intermediate")
    pool = pool_of(
        ("bundle.pem", pem(pki.root.cert, pki.inter.cert, stranger.cert)),
        ("cert.crt", pki.leaf.cert.public_bytes(serialization.Encoding.DER)),
        ("ca.p7b", pkcs7.serialize_certificates([pki.inter.cert], serialization.Encoding.DER)),
    )
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.chain == (pki.leaf.cert, pki.inter.cert)
    assert result.root == pki.root.cert and result.complete
    assert reasons(result) == [
        ("the root: clients have it already", "bundle.pem"),
        ("unrelated to this leaf", "bundle.pem"),
        ("duplicate", "ca.p7b"),
    ]
    assert codes(result) == ["root-included", "unrelated-certificate", "duplicate-certificate"]
    assert all(p.severity is Severity.INFO for p in result.problems)


@pytest.mark.parametrize("seed", range(5))
def test_any_order_gives_the_same_chain(seed: int) -> None:
    root = testing.TestCA.root("Deep Root")
    one = root.intermediate("One", path_length=None)
    two = one.intermediate("Two", path_length=None)
    three = two.intermediate("Three")
    leaf = three.leaf("www.example.test")
    certs = [leaf.cert, three.cert, two.cert, one.cert, root.cert]
    random.Random(seed).shuffle(certs)
    result = build_chain(pool_of(("all.pem", pem(*certs))), TrustStore((root.cert,)), now=NOW)
    assert result.chain == (leaf.cert, three.cert, two.cert, one.cert)
    assert result.complete and [d.reason for d in result.dropped] == [DropReason.ROOT]


def test_to_dict_is_the_json_contract(pki: PKI) -> None:
    pool = pool_of(("fullchain.pem", pki.leaf.fullchain_pem() + pki.root.cert_pem()), ("key.pem", pki.leaf.key_pem()))
    data = json.loads(json.dumps(build_chain(pool, TrustStore((pki.root.cert,)), now=NOW).to_dict()))
    assert set(data) == {"leaf", "chain", "root", "complete", "fetched", "dropped", "problems", "key"}
    assert data["leaf"]["sha256"] == fingerprint(pki.leaf.cert)
    assert [c["sha256"] for c in data["chain"]] == [fingerprint(pki.leaf.cert), fingerprint(pki.inter.cert)]
    assert data["root"]["sha256"] == fingerprint(pki.root.cert)
    assert data["complete"] is True and data["fetched"] == []
    assert data["dropped"][0]["reason"] == "the root: clients have it already"
    assert data["dropped"][0]["sha256"] == fingerprint(pki.root.cert)
    assert data["key"] == {"type": "ec:p256", "matches_leaf": True, "source": "key.pem"}
    assert {"code", "severity", "message", "hint"} <= set(data["problems"][0])


def test_no_key_no_key_object(pki: PKI) -> None:
    data = build_chain(pool_of(("c.pem", pki.leaf.fullchain_pem())), TrustStore((pki.root.cert,)), now=NOW).to_dict()
    assert "key" not in data
    assert data["root"] is not None


def test_the_key_picks_the_leaf(pki: PKI) -> None:
    other = pki.inter.leaf("mail.example.test")
    pool = pool_of(("certs.pem", pem(other.cert, pki.leaf.cert, pki.inter.cert)), ("pending.key", pki.leaf.key_pem()))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.leaf == pki.leaf.cert
    assert result.key is not None and result.key.matches_leaf and result.key.source == "pending.key"
    assert reasons(result) == [("unrelated to this leaf", "certs.pem")]


def test_a_key_object_picks_the_leaf(pki: PKI) -> None:
    other = pki.inter.leaf("mail.example.test")
    pool = pool_of(("certs.pem", pem(pki.leaf.cert, other.cert, pki.inter.cert)))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW, key=other.key, key_source="mail.key")
    assert result.leaf == other.cert
    assert result.key is not None and result.key.matches_leaf


def test_several_leaves_and_no_key(pki: PKI) -> None:
    other = pki.inter.leaf("mail.example.test")
    pool = pool_of(("a.pem", pki.leaf.cert_pem()), ("b.pem", other.cert_pem()), ("ca.pem", pki.inter.cert_pem()))
    with pytest.raises(InputError, match=r"2 certificates could each be the leaf: 'www.example.test' \(a.pem\), "):
        build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)


def test_several_keys_pick_their_leaf(pki: PKI) -> None:
    other = pki.inter.leaf("mail.example.test")
    stray_key = testing.make_key("ec:p256")
    pool = pool_of(
        ("leaf.pem", pki.leaf.cert_pem()),
        ("ca.pem", pki.inter.cert_pem()),
        ("k1.pem", pki.leaf.key_pem()),
        ("k2.pem", testing.TestLeaf(cert=other.cert, key=stray_key, chain=[]).key_pem()),
    )
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.leaf == pki.leaf.cert
    assert result.key is not None and result.key.matches_leaf and result.key.source == "k1.pem"


def test_pick_leaf_the_one_rule_for_every_caller(pki: PKI) -> None:
    # build_chain, verify, names --cert and import all ask this one function
    def item(cert: x509.Certificate, source: str) -> PoolCert:
        return PoolCert(cert, source, InputFormat.PEM)

    later = pki.leaf.cert.not_valid_before_utc + dt.timedelta(days=30)
    renewed = pki.inter.leaf("www.example.test", private_key=pki.leaf.key, not_before=later)
    other = pki.inter.leaf("mail.example.test", not_before=later + dt.timedelta(days=1))
    first, again = item(pki.leaf.cert, "first.pem"), item(renewed.cert, "renewed.pem")
    mail, ca, root = item(other.cert, "mail.pem"), item(pki.inter.cert, "ca.pem"), item(pki.root.cert, "root.pem")

    # the newest certificate of the keys given (a renewal kept its key), across every key given
    assert pick_leaf([first, again, ca], [pki.leaf.key]) == (again, True)
    assert pick_leaf([first, mail, ca], [pki.leaf.key, other.key.public_key()]) == (mail, True)
    # a key that fits none: the only end-entity certificate, said not to be the key's
    assert pick_leaf([first, ca], [other.key]) == (first, False)
    # no key: the only end-entity one; the pool's only key; of several, the one a pool key fits
    assert pick_leaf([ca, first, root]) == (first, False)
    stray = testing.TestCA.root("Stray").leaf("stray.test")
    keys = read_pool([("mail.key", other.key_pem()), ("stray.key", stray.key_pem())]).keys
    assert pick_leaf([first, mail], pool_keys=keys[:1]) == (mail, True)
    assert pick_leaf([first, mail], pool_keys=keys) == (mail, True)
    # only CA certificates: the one that issued none of the others
    assert pick_leaf([root, ca]) == (ca, False)
    with pytest.raises(InputError, match=r"2 certificates could each be the leaf: 'www.example.test' \(first.pem\)"):
        pick_leaf([first, mail, ca])
    with pytest.raises(InputError, match="no certificate among the inputs"):
        pick_leaf([])


def test_key_that_belongs_to_no_certificate(pki: PKI) -> None:
    other = pki.inter.leaf("mail.example.test")
    pool = pool_of(("cert.pem", pki.leaf.fullchain_pem()), ("old.key", other.key_pem()))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.leaf == pki.leaf.cert
    assert result.key is not None and not result.key.matches_leaf
    assert codes(result) == ["key-mismatch"]
    message = result.problems[0].message
    assert "old.key" in message and "cert.pem" in message
    assert result.problems[0].severity is Severity.ERROR


def test_no_certificate(pki: PKI) -> None:
    with pytest.raises(InputError) as caught:
        build_chain(pool_of(("key.pem", pki.leaf.key_pem())), TrustStore((pki.root.cert,)), now=NOW)
    assert str(caught.value) == "key.pem: holds no certificate, only a private key"
    two = pool_of(("key.pem", pki.leaf.key_pem()), ("copy.key", pki.leaf.key_pem()))
    with pytest.raises(InputError, match=r"^no certificate among the inputs$"):
        build_chain(two, TrustStore((pki.root.cert,)), now=NOW)


def test_self_signed_leaf_alone(pki: PKI) -> None:
    root = testing.TestCA.root("self.example.test")
    result = build_chain(pool_of(("self.pem", root.cert_pem())), TrustStore((pki.root.cert,)), now=NOW)
    assert result.chain == (root.cert,) and result.root is None and not result.complete
    assert "self-signed" in codes(result)


def test_untrusted_root_in_the_input_is_dropped(pki: PKI) -> None:
    pool = pool_of(("all.pem", pki.leaf.fullchain_pem() + pki.root.cert_pem()))
    result = build_chain(pool, TrustStore.mozilla(), now=NOW)
    assert result.chain == (pki.leaf.cert, pki.inter.cert)
    assert result.root is None and not result.complete
    assert [d.reason for d in result.dropped] == [DropReason.UNTRUSTED_ROOT]
    assert "untrusted" in codes(result)


def test_missing_intermediate_without_fetching(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", aia_url="http://127.0.0.1:9/inter.crt")
    result = build_chain(pool_of(("cert.pem", leaf.cert_pem())), TrustStore((pki.root.cert,)), now=NOW)
    assert result.chain == (leaf.cert,) and not result.complete and result.root is None
    assert codes(result) == ["incomplete-chain"]
    assert "leave out --no-fetch" in result.problems[0].hint


def test_missing_intermediate_and_no_aia(pki: PKI) -> None:
    result = build_chain(pool_of(("c.pem", pki.leaf.cert_pem())), TrustStore((pki.root.cert,)), now=NOW, fetcher=_never)
    assert codes(result) == ["incomplete-chain"]
    assert "does not say where its issuer is published" in result.problems[0].hint


def _never(url: str) -> bytes:
    raise AssertionError(f"fetched {url}")


@pytest.mark.parametrize("encoding", ["der", "pkcs7"])
def test_missing_intermediate_is_fetched(server: Server, pki: PKI, encoding: str) -> None:
    if encoding == "der":
        server.routes["/inter.crt"] = body(pki.inter.cert.public_bytes(serialization.Encoding.DER))
    else:
        server.routes["/inter.crt"] = body(pkcs7.serialize_certificates([pki.inter.cert], serialization.Encoding.DER))
    leaf = pki.inter.leaf("www.example.test", aia_url=server.url("/inter.crt"))
    pool = pool_of(("cert.pem", leaf.cert_pem()), ("key.pem", leaf.key_pem()))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW, fetcher=HttpFetcher(timeout=5))
    assert result.chain == (leaf.cert, pki.inter.cert)
    assert result.fetched == (pki.inter.cert,)
    assert result.complete and result.root == pki.root.cert
    assert codes(result) == ["fetched-intermediate"]
    assert result.problems[0].message == (
        f"fetched 'certfleet Test Intermediate' from {server.url('/inter.crt')}: it was missing from the input"
    )
    assert result.to_dict()["fetched"][0]["sha256"] == fingerprint(pki.inter.cert)


def test_two_missing_intermediates_are_fetched_in_turn(server: Server) -> None:
    root = testing.TestCA.root("Two Step Root")
    upper = root.intermediate("Upper", path_length=None)
    lower = upper.intermediate("Lower", aia_url=server.url("/upper.crt"))
    leaf = lower.leaf("www.example.test", aia_url=server.url("/lower.crt"))
    server.routes["/upper.crt"] = body(upper.cert.public_bytes(serialization.Encoding.DER))
    server.routes["/lower.crt"] = body(lower.cert.public_bytes(serialization.Encoding.DER))
    result = build_chain(
        pool_of(("cert.pem", leaf.cert_pem())), TrustStore((root.cert,)), now=NOW, fetcher=HttpFetcher(timeout=5)
    )
    assert result.chain == (leaf.cert, lower.cert, upper.cert)
    assert result.fetched == (lower.cert, upper.cert)
    assert result.complete


def test_failed_fetch_is_reported_not_raised(server: Server, pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", aia_url=server.url("/gone.crt"))
    result = build_chain(
        pool_of(("cert.pem", leaf.cert_pem())), TrustStore((pki.root.cert,)), now=NOW, fetcher=HttpFetcher(timeout=5)
    )
    assert not result.complete and result.fetched == ()
    assert codes(result) == ["incomplete-chain"]
    assert "fetching it failed" in result.problems[0].hint and "HTTP 404" in result.problems[0].hint


def test_fetcher_errors_do_not_escape(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", aia_url="http://ca.example.test/inter.crt")

    def offline(url: str) -> bytes:
        raise NetworkError("could not fetch: no route", source=url)

    result = build_chain(pool_of(("c.pem", leaf.cert_pem())), TrustStore((pki.root.cert,)), now=NOW, fetcher=offline)
    assert codes(result) == ["incomplete-chain"]


def _cross_signed() -> tuple[testing.TestCA, testing.TestCA, x509.Certificate, testing.TestCA, testing.TestLeaf]:
    old_root = testing.TestCA.root("Old Root")
    new_root = testing.TestCA.root("New Root")
    cross = old_root.cross_sign(new_root)  # New Root's name and key, issued by Old Root
    inter = new_root.intermediate("Issuing CA")
    return old_root, new_root, cross, inter, inter.leaf("www.example.test")


def test_cross_sign_reaches_the_trusted_old_root() -> None:
    old_root, new_root, cross, inter, leaf = _cross_signed()
    pool = pool_of(("bundle.pem", pem(leaf.cert, inter.cert, new_root.cert, cross)))
    result = build_chain(pool, TrustStore((old_root.cert,)), now=NOW)
    assert result.chain == (leaf.cert, inter.cert, cross)
    assert result.root == old_root.cert and result.complete
    assert [d.reason for d in result.dropped] == [DropReason.OTHER_PATH]
    assert not [p for p in result.problems if p.severity is not Severity.INFO]


def test_cross_sign_prefers_the_shorter_path_when_both_are_trusted() -> None:
    old_root, new_root, cross, inter, leaf = _cross_signed()
    pool = pool_of(("bundle.pem", pem(leaf.cert, cross, inter.cert)))
    result = build_chain(pool, TrustStore((old_root.cert, new_root.cert)), now=NOW)
    assert result.chain == (leaf.cert, inter.cert)
    assert result.root == new_root.cert
    # the cross-sign carries New Root's name and key: for these clients it is that root
    assert [d.reason for d in result.dropped] == [DropReason.ROOT]


@pytest.mark.parametrize("seed", range(3))
def test_sha1_intermediate_is_ordered_and_reported_as_weak(seed: int) -> None:
    root = testing.TestCA.root("RSA Root", key="rsa:2048")
    inter = root.intermediate("SHA-1 Intermediate", key="rsa:2048", hash_alg=hashes.SHA1())  # noqa: S303 (weak on purpose)
    leaf = inter.leaf("www.example.test")
    certs = [root.cert, inter.cert, leaf.cert]
    random.Random(seed).shuffle(certs)
    result = build_chain(pool_of(("bundle.pem", pem(*certs))), TrustStore((root.cert,)), now=NOW)
    assert result.chain == (leaf.cert, inter.cert)
    assert result.complete and result.root == root.cert
    assert codes(result) == ["root-included", "weak-signature"]
    assert result.problems[1].subject == fingerprint(inter.cert)
    assert "a phone will refuse this chain" in result.problems[1].message


def test_a_certificate_whose_names_do_not_decode_is_refused_by_file(pki: PKI) -> None:
    damaged = undecodable_issuer(pki.inter.cert)
    with pytest.raises(FormatError, match="subject or issuer name does not decode") as caught:
        pool_of(("leaf.pem", pki.leaf.cert_pem()), ("ca.crt", damaged.public_bytes(serialization.Encoding.DER)))
    assert caught.value.source == "ca.crt"
    # a pool made by hand meets the same check, with the source named
    handmade = Pool(certificates=(PoolCert(pki.leaf.cert, "leaf.pem", InputFormat.PEM),))
    assert build_chain(handmade, TrustStore((pki.root.cert,)), now=NOW).leaf == pki.leaf.cert


def _mutations(der: bytes, rng: random.Random, count: int) -> Iterator[x509.Certificate]:
    """Certificates that still load after random damage to ``der``: flipped, set, cut or added bytes."""
    made = 0
    while made < count:
        data = bytearray(der)
        for _ in range(rng.choice((1, 2, 4))):
            at = rng.randrange(len(data))
            action = rng.randrange(4)
            if action == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif action == 1:
                data[at] = rng.choice((0x00, 0x05, 0x30, 0x80, 0xFF, rng.randrange(256)))
            elif action == 2:
                del data[at : at + rng.randrange(1, 4)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        try:
            cert = x509.load_der_x509_certificate(bytes(data))
        except ValueError:
            continue
        made += 1
        yield cert


def _describe(chain: list[x509.Certificate], trust: TrustStore, damaged: x509.Certificate) -> object:
    return describe(damaged).to_dict()


def _lint(chain: list[x509.Certificate], trust: TrustStore, damaged: x509.Certificate) -> object:
    return lint(chain, now=NOW, trust=trust)


def _verify(chain: list[x509.Certificate], trust: TrustStore, damaged: x509.Certificate) -> object:
    return verify_chain(chain[0], chain[1:], trust, at=NOW, name="www.example.test").to_dict()


def _build(chain: list[x509.Certificate], trust: TrustStore, damaged: x509.Certificate) -> object:
    return build_chain(pool_of(("bundle.pem", pem(*chain))), trust, now=NOW).to_dict()


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")  # damaged serials
@pytest.mark.parametrize("call", [_describe, _lint, _verify, _build])
@pytest.mark.parametrize("target", [0, 1, 2])
def test_damaged_certificates_give_answers_or_certfleet_errors(call: Callable[..., object], target: int) -> None:
    # whatever the damage, the core answers or raises its own one-line error, never a traceback
    root = testing.TestCA.root("Fuzz Root", key="rsa:2048")
    inter = root.intermediate("Fuzz Intermediate", aia_url="http://127.0.0.1:9/inter.crt")
    leaf = inter.leaf("www.example.test", "192.0.2.7", "*.example.test")
    certs = [leaf.cert, inter.cert, root.cert]
    trust = TrustStore((root.cert,))
    answered = refused = 0
    for damaged in _mutations(certs[target].public_bytes(serialization.Encoding.DER), random.Random(target), 150):
        chain = [damaged if index == target else cert for index, cert in enumerate(certs)]
        try:
            call(chain, trust, damaged)
            answered += 1
        except CertfleetError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert answered + refused == 150


def test_lint_of_the_built_chain_is_included(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", days=5)
    result = build_chain(pool_of(("c.pem", leaf.fullchain_pem())), TrustStore((pki.root.cert,)), now=NOW)
    assert codes(result) == ["expiring-soon"]


def test_expired_leaf_is_reported_once(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", not_before=NOW - dt.timedelta(days=100), days=30)
    result = build_chain(pool_of(("c.pem", leaf.fullchain_pem())), TrustStore((pki.root.cert,)), now=NOW)
    assert codes(result) == ["expired"]


def _same_name_mesh(count: int) -> Sequence[x509.Certificate]:
    """``count`` CAs with one name and different keys, each cross-signing every other: a maze."""
    cas = [testing.TestCA.root("Maze CA") for _ in range(count)]
    return [a.cross_sign(b) for a in cas for b in cas if a is not b] + [cas[0].leaf("www.example.test").cert]


@pytest.mark.parametrize("size", [10, 25])
def test_hostile_maze_is_bounded(pki: PKI, size: int) -> None:
    certs = _same_name_mesh(size)  # 25 CAs: 600 cross-signs, 360,000 pairs to prove
    pool = pool_of(("maze.pem", pem(*certs)))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert not result.complete
    assert len(result.chain) <= 8
    assert result.leaf == certs[-1]


def test_naive_now_is_a_programmer_error(pki: PKI) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_chain(pool_of(("c.pem", pki.leaf.cert_pem())), TrustStore(()), now=dt.datetime.now())


def test_only_ca_certificates_pick_the_lowest(pki: PKI) -> None:
    pool = pool_of(("cas.pem", pem(pki.root.cert, pki.inter.cert)))
    result = build_chain(pool, TrustStore((pki.root.cert,)), now=NOW)
    assert result.leaf == pki.inter.cert
    assert result.chain == (pki.inter.cert,) and result.root == pki.root.cert
