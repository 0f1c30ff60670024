"""Reading the zip "package" a CA sends, and refusing the hostile ones."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.errors import ExitCode, FormatError, LimitError, PasswordError
from certfleet.formats import MAX_MEMBERS, InputFormat, detect_format, read_bytes, read_pool
from conftest import PKI

MiB = 1024 * 1024


def make_zip(*members: tuple[str | zipfile.ZipInfo, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_godaddy_style_package(pki: PKI) -> None:
    bundle = pki.inter.cert_pem() + pki.root.cert_pem()  # gd_bundle-g2.crt: intermediate, then root
    data = make_zip(
        ("abc123def456.crt", pki.leaf.cert_pem()),
        ("gd_bundle-g2-g1.crt", bundle),
        ("README.txt", b"Install the certificate and the bundle on your server.\n"),
        ("__MACOSX/._abc123def456.crt", b"\x00\x05\x16\x07 mac resource fork"),
        (".DS_Store", b"Bud1\x00\x00"),
    )
    assert detect_format(data) is InputFormat.ZIP

    pool = read_bytes("example.test.zip", data)

    got = [(c.source, fingerprint(c.cert)) for c in pool.certificates]
    assert got == [
        ("example.test.zip!abc123def456.crt", fingerprint(pki.leaf.cert)),
        ("example.test.zip!gd_bundle-g2-g1.crt", fingerprint(pki.inter.cert)),
        ("example.test.zip!gd_bundle-g2-g1.crt", fingerprint(pki.root.cert)),
    ]
    assert {c.format for c in pool.certificates} == {InputFormat.PEM}
    assert pool.ignored == ("example.test.zip!README.txt",)


def test_sectigo_style_package_with_folders(pki: PKI, tmp_path: Path) -> None:
    (tmp_path / "chain.pem").write_bytes(pki.leaf.fullchain_pem())
    p7b = subprocess.run(
        ["openssl", "crl2pkcs7", "-nocrl", "-certfile", "chain.pem", "-outform", "DER"],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    ).stdout
    leaf_der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)
    data = make_zip(
        ("www_example_test/", b""),
        ("www_example_test/www_example_test.crt", leaf_der),
        ("www_example_test/www_example_test.ca-bundle", pki.inter.cert_pem().replace(b"\n", b"\r\n")),
        ("www_example_test/www_example_test.p7b", p7b),
    )

    pool = read_bytes("www_example_test.zip", data)

    got = [(c.source.rsplit(".", 1)[1], c.format, fingerprint(c.cert)) for c in pool.certificates]
    assert got == [
        ("crt", InputFormat.DER, fingerprint(pki.leaf.cert)),
        ("ca-bundle", InputFormat.PEM, fingerprint(pki.inter.cert)),
        ("p7b", InputFormat.PKCS7, fingerprint(pki.leaf.cert)),
        ("p7b", InputFormat.PKCS7, fingerprint(pki.inter.cert)),
    ]
    assert len(pool.unique_certificates()) == 2
    assert pool.certificates[0].source == "www_example_test.zip!www_example_test/www_example_test.crt"


def test_zip_with_key_and_pfx_uses_passwords(pki: PKI) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    pfx = pkcs12.serialize_key_and_certificates(
        b"web",
        pki.leaf.key,  # type: ignore[arg-type]
        pki.leaf.cert,
        None,
        serialization.BestAvailableEncryption(b"pw"),
    )
    data = make_zip(("web.pfx", pfx), ("key.pem", pki.leaf.key_pem(b"pw")), method=zipfile.ZIP_STORED)

    pool = read_bytes("export.zip", data, passwords=[b"pw"])
    assert [k.source for k in pool.keys] == ["export.zip!web.pfx", "export.zip!key.pem"]

    with pytest.raises(PasswordError) as caught:
        read_bytes("export.zip", data, passwords=[b"wrong"])
    assert caught.value.source == "export.zip!web.pfx"
    assert caught.value.message == "wrong password, or not a PKCS#12 file"


def test_zip_inside_a_zip(pki: PKI) -> None:
    inner = make_zip(("leaf.pem", pki.leaf.cert_pem()))
    outer = make_zip(("inner.zip", inner), ("chain.pem", pki.inter.cert_pem()))

    pool = read_bytes("outer.zip", outer)

    assert [c.source for c in pool.certificates] == ["outer.zip!inner.zip!leaf.pem", "outer.zip!chain.pem"]


def test_three_levels_of_zip_are_refused(pki: PKI) -> None:
    innermost = make_zip(("leaf.pem", pki.leaf.cert_pem()))
    middle = make_zip(("innermost.zip", innermost))
    outer = make_zip(("middle.zip", middle))

    with pytest.raises(LimitError) as caught:
        read_bytes("outer.zip", outer)

    assert caught.value.source == "outer.zip!middle.zip!innermost.zip"
    assert caught.value.message == "a zip inside a zip inside a zip; only one level of nesting is read"


def test_zip_bomb_by_ratio() -> None:
    # 9 MiB of zeros: under every size cap, but deflate squeezes it about 1000:1
    data = make_zip(("cert.pem", bytes(9 * MiB)))
    assert len(data) < 20_000

    with pytest.raises(LimitError) as caught:
        read_bytes("bomb.zip", data)

    assert caught.value.message == "compression ratio over 200:1; refused as a zip bomb"
    assert caught.value.source == "bomb.zip!cert.pem"
    assert caught.value.exit_code is ExitCode.BAD_INPUT


def test_zip_bomb_by_member_size() -> None:
    data = make_zip(("cert.pem", bytes(11 * MiB)))

    with pytest.raises(LimitError) as caught:
        read_bytes("bomb.zip", data)

    assert caught.value.message == "inflates to more than 10 MiB per member; refused as a zip bomb"
    assert caught.value.source == "bomb.zip!cert.pem"


def test_zip_bomb_by_total_size() -> None:
    data = make_zip(*((f"part{i}.pem", bytes(9 * MiB)) for i in range(6)))

    with pytest.raises(LimitError) as caught:
        read_bytes("bomb.zip", data)

    assert caught.value.message == "inflates to more than 50 MiB in all; refused as a zip bomb"
    assert caught.value.source == "bomb.zip"


def test_header_lying_about_the_size_is_not_trusted(pki: PKI) -> None:
    # a member that claims 100 bytes but inflates to 2 MiB: inflating stops at the claim, and the
    # CRC of those 100 bytes gives the lie away
    payload = pki.leaf.cert_pem() + bytes(2 * MiB)
    data = bytearray(make_zip(("cert.pem", payload)))
    real = len(payload).to_bytes(4, "little")
    assert data.count(real) == 2  # the local header and the central directory
    data = data.replace(real, (100).to_bytes(4, "little"))

    with pytest.raises(FormatError) as caught:
        read_bytes("liar.zip", bytes(data))

    assert caught.value.source == "liar.zip!cert.pem"
    assert caught.value.message == "zip member: damaged or cut short"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "certs/../../x.pem", "..\\..\\boot.ini", "C:/x"])
def test_path_traversal_refuses_the_whole_zip(name: str, pki: PKI) -> None:
    data = make_zip(("leaf.pem", pki.leaf.cert_pem()), (zipfile.ZipInfo(name), b"root:x:0:0::/root:/bin/sh\n"))
    assert name.replace("\\", "/") in [n.replace("\\", "/") for n in zipfile.ZipFile(io.BytesIO(data)).namelist()]

    with pytest.raises(FormatError) as caught:
        read_bytes("evil.zip", data)

    assert caught.value.message == "unsafe path in zip (absolute, or with '..'); the whole zip is refused"
    assert caught.value.source is not None
    assert caught.value.source.startswith("evil.zip!")
    assert caught.value.source.endswith(name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])


def test_encrypted_member_is_refused(pki: PKI) -> None:
    # zipfile cannot encrypt; setting the "encrypted" flag bit in both headers is what readers see
    raw = bytearray(make_zip(("leaf.pem", pki.leaf.cert_pem())))
    local, central = raw.index(b"PK\x03\x04") + 6, raw.index(b"PK\x01\x02") + 8
    for at in (local, central):
        raw[at] |= 0x1
    data = bytes(raw)
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].flag_bits & 0x1

    with pytest.raises(FormatError) as caught:
        read_bytes("locked.zip", data)

    assert caught.value.message == "encrypted zip member; certfleet does not open password-protected zips"
    assert caught.value.source == "locked.zip!leaf.pem"


def test_too_many_members() -> None:
    data = make_zip(*((f"f{i}.txt", b"x") for i in range(MAX_MEMBERS + 1)), method=zipfile.ZIP_STORED)

    with pytest.raises(LimitError) as caught:
        read_bytes("many.zip", data)

    assert caught.value.message == "zip has 1,001 members; at most 1,000 are read"
    assert caught.value.source == "many.zip"


def test_zip_holding_nothing_usable() -> None:
    data = make_zip(("README.txt", b"hello"), ("invoice.pdf", b"%PDF-1.4 ..."))

    with pytest.raises(FormatError) as caught:
        read_bytes("docs.zip", data)

    assert caught.value.message == "zip holds no certificate, key, CSR, PKCS#7 or PKCS#12"
    assert caught.value.source == "docs.zip"


def test_damaged_zip(pki: PKI) -> None:
    data = make_zip(("leaf.pem", pki.leaf.cert_pem()))

    with pytest.raises(FormatError) as caught:
        read_bytes("cut.zip", data[: len(data) // 2])

    assert caught.value.message == "zip: damaged or cut short"
    assert caught.value.source == "cut.zip"


def test_member_without_a_name_is_damage(pki: PKI) -> None:
    data = make_zip(("leaf.pem", pki.leaf.cert_pem()), (zipfile.ZipInfo(""), pki.inter.cert_pem()))

    with pytest.raises(FormatError) as caught:
        read_bytes("odd.zip", data)

    assert str(caught.value) == "odd.zip: zip: damaged or cut short"


def test_a_member_name_cannot_break_the_line(pki: PKI) -> None:
    data = make_zip(("certs/bad\nInjected: yes.pem", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"))

    with pytest.raises(FormatError) as caught:
        read_bytes("pkg.zip", data)

    assert str(caught.value) == "pkg.zip!certs/bad\\nInjected: yes.pem: block 1 (CERTIFICATE): broken base64"


def test_broken_member_names_the_member(pki: PKI) -> None:
    lines = pki.leaf.cert_pem().split(b"\n")
    lines[2] = b"!!" + lines[2][2:]
    data = make_zip(("good.pem", pki.inter.cert_pem()), ("certs/bad.pem", b"\n".join(lines)))

    pool = read_bytes("pkg.zip", data)  # the good member is read, the broken one named

    assert [c.source for c in pool.certificates] == ["pkg.zip!good.pem"]
    assert [str(u) for u in pool.unreadable] == ["pkg.zip!certs/bad.pem: block 1 (CERTIFICATE): broken base64"]

    with pytest.raises(FormatError) as caught:
        read_bytes("pkg.zip", make_zip(("certs/bad.pem", b"\n".join(lines))))
    assert str(caught.value) == "pkg.zip!certs/bad.pem: block 1 (CERTIFICATE): broken base64"


def test_nothing_from_a_zip_reaches_the_disk(pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = make_zip(("leaf.pem", pki.leaf.cert_pem()), ("sub/inner.zip", make_zip(("c.pem", pki.inter.cert_pem()))))
    before = set(tmp_path.iterdir())

    pool = read_pool([("pkg.zip", data)])

    assert len(pool.certificates) == 2
    assert set(tmp_path.iterdir()) == before
